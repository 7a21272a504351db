"""A crew that makes no progress says which role and why, and degrades or stops; every run is bounded.

The coder here always answers an edit whose search text is empty (what a too-weak local model did), through
the real openai SDK against the scripted server.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.llm_server import ParsedRequest, Reply, ScriptedLLMServer
from tests.test_loop_llm import ScriptedCrew, _llm_repo
from tests.toyrepo import ROOT, check_consistency

pytestmark = pytest.mark.slow  # the loop trains the toy train.py

TITLES = [f"DEPTH 2 -> {n}" for n in (3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21)]
EMPTY_SEARCH = {"path": "train.py", "blocks": [{"search": "", "replace": "DEPTH = 3"}], "summary": "depth"}


class EmptySearchCoder(ScriptedCrew):
    def __call__(self, request: ParsedRequest) -> Reply:
        if request.schema_name == "CodeEdit":
            return Reply.json(EMPTY_SEARCH)
        return super().__call__(request)


def _run(repo, config):
    from agents.assemble import build_settings
    from agents.loop import run_loop

    settings = build_settings(repo, config, "llm")
    events = []
    settings.on_event = events.append
    try:
        return run_loop(settings), events
    finally:
        settings.memory.close()


def test_a_coder_whose_edits_never_apply_is_given_up_after_max_stalled_candidates(tmp_path):
    with ScriptedLLMServer(EmptySearchCoder(TITLES), lifetime_s=600) as server:
        repo, config = _llm_repo(tmp_path, "openai/local", base_url=server.base_url_openai,
                                 loop={"max_experiments": 1, "max_stalled": 3}, crew_extra={"degrade_after": 50})
        outcome, events = _run(repo, config)
    assert "reached max_experiments" in outcome.stop_reason and outcome.exit_code == 0
    lines = [e for e in events if e.kind in ("note", "record", "degraded")]
    (stalled,) = [i for i, e in enumerate(lines) if e.kind == "note" and e.message.startswith("stalled:")]
    note = lines[stalled].message
    assert note.startswith("stalled: coder: 3 candidates in a row never reached training: its edits do not apply "
                           "or compile (last: no edit that applies and compiles: "), note
    assert "search text is empty" in note and "the offline policy plays the coder from now on" in note
    # counted in candidates, whatever number were prepared at once: the third skipped record set it off
    assert sum(e.kind == "record" and e.message == "skipped" for e in lines[:stalled]) == 3
    banners = [e.message for e in lines if e.kind == "degraded"]
    assert any(b.startswith("coder: local -> offline policy after 3 candidates in a row that never reached training "
                            "(its edits do not apply or compile; last: ") for b in banners), banners
    assert any(b.startswith("hypothesis: local -> offline policy (the coder runs the offline policy") for b in banners)
    records = check_consistency(repo, "llm")
    (trained,) = [r for r in records if r.status in ("keep", "discard", "crash")]
    assert "coder" in trained.degraded_roles
    assert 3 <= sum(r.status == "skipped" for r in records) <= 3 + 8  # some were in preparation at the stall


def test_the_cap_on_candidates_per_trained_experiment_stops_the_run_and_names_itself(tmp_path):
    with ScriptedLLMServer(EmptySearchCoder(TITLES), lifetime_s=600) as server:
        repo, config = _llm_repo(tmp_path, "openai/local", base_url=server.base_url_openai,
                                 loop={"max_experiments": 2, "max_stalled": 100, "max_candidates_per_experiment": 4},
                                 crew_extra={"degrade_after": 50})
        outcome, _ = _run(repo, config)
        ideas = sum(r.schema_name == "Idea" for r in server.requests)
    assert outcome.exit_code == 1
    assert outcome.stop_reason.startswith("4 candidates in a row did not train (loop.max_candidates_per_experiment)")
    assert "4 coder: its edits do not apply or compile" in outcome.stop_reason
    records = check_consistency(repo, "llm")
    assert [r.status for r in records] == ["baseline", "baseline"] + ["skipped"] * 4  # bounded, not overshot
    assert ideas == 4


def test_under_on_model_failure_stop_a_stall_ends_the_run_with_its_line_and_a_non_zero_exit(tmp_path):
    with ScriptedLLMServer(EmptySearchCoder(TITLES), lifetime_s=600) as server:
        repo, _ = _llm_repo(tmp_path, "openai/local", base_url=server.base_url_openai,
                            loop={"max_stalled": 2}, crew_extra={"degrade_after": 50})
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "sk-test"}
        done = subprocess.run([sys.executable, "-m", "agents.cli", "run", "--no-live", "--strict", "--experiments",
                               "3", "--tag", "llm"], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert ("stopped: stalled: coder: 2 candidates in a row never reached training: its edits do not apply or "
            "compile") in " ".join(output.split()), output
    assert "loop.max_stalled 2; on_model_failure: stop" in " ".join(output.split())
    assert "Traceback" not in output
