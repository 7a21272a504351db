"""The loop driven by LLM roles through the real anthropic / openai SDKs and the scripted local server."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from tests.llm_server import ParsedRequest, Reply, ScriptedLLMServer
from tests.toyrepo import check_consistency, make_toy_repo, run_toy

CUDA_LINE = {"MATRIX_LR": ("MATRIX_LR = 0.04 if CUDA else 0.01", "MATRIX_LR = 0.04 if CUDA else {}"),
             "DEPTH": ("DEPTH = 4 if CUDA else 2", "DEPTH = 4 if CUDA else {}"),
             "EMBEDDING_LR": ("EMBEDDING_LR = 0.6", "EMBEDDING_LR = {}"),
             "WARMDOWN_RATIO": ("WARMDOWN_RATIO = 0.5", "WARMDOWN_RATIO = {}")}


class ScriptedCrew:
    """Answers each role of the crew over the wire: ideas from a list, their edits, approvals, lessons.

    An idea title 'NAME old -> new' is coded as a one-line edit of that constant; `bad_edits` maps a
    title to a broken CodeEdit the coder keeps returning instead (to test retries and skipping).
    """

    def __init__(self, titles: list[str], bad_edits: dict[str, object] | None = None,
                 faults: list[Reply] | None = None):
        self.titles, self.bad_edits = list(titles), bad_edits or {}
        self.faults = list(faults or [])
        self.lock = threading.Lock()
        self.proposed = 0

    def __call__(self, request: ParsedRequest) -> Reply:
        with self.lock:
            if self.faults:
                return self.faults.pop(0)
            if request.schema_name == "Idea":
                title = self.titles[min(self.proposed, len(self.titles) - 1)]
                self.proposed += 1
                return Reply.json({"title": title, "rationale": f"because {title}", "expected_effect": "lower val_bpb",
                                   "category": "learning_rate"})
        if request.schema_name == "CodeEdit":
            title = next(t for t in self.titles if f"'{t}'" in request.text or t in request.text)
            bad = self.bad_edits.get(title)
            if bad is not None:
                return bad if isinstance(bad, Reply) else Reply.json(bad)
            name, old, new = re.match(r"(\w+) (\S+) -> (\S+)", title).groups()
            search, template = CUDA_LINE[name]
            return Reply.json({"path": "train.py", "blocks": [{"search": search, "replace": template.format(new)}],
                               "summary": title})
        if request.schema_name == "Review":
            return Reply.json({"verdict": "approve", "reasons": ["small and clear"]})
        if request.schema_name == "Analysis":
            return Reply.json({"explanation": "the number moved as expected", "lesson": "noted", "rerun": False})
        if request.schema_name == "JudgeAnswer":  # the memory's repeat judge: a past idea with the same title
            proposed = re.search(r"# Proposed experiment\ntitle: (.*)", request.text).group(1).strip()
            past = re.findall(r"id: (\S+)\nidea: (.*)", request.text)
            same = next((pid for pid, title in past if title.strip() == proposed), None)
            return Reply.json({"same_as": same, "reason": "the same change" if same else "another knob or value"})
        return Reply.error(400, f"unexpected request for {request.schema_name}")


def _llm_repo(tmp_path: Path, model: str, base_url: str | None = None, loop: dict | None = None,
              role_extra: dict | None = None, crew_extra: dict | None = None,
              per_role: dict | None = None) -> tuple[Path, Path]:
    repo = tmp_path / "repo"
    role = {"model": model, "max_retries": 2, "timeout_s": 10, **(role_extra or {})}
    if base_url:
        role["base_url"] = base_url
    roles = {r: {**role, **(per_role or {}).get(r, {})} for r in ("hypothesis", "coder", "reviewer", "analyst")}
    config = make_toy_repo(repo, preset="full", loop=loop, roles=roles, crew_extra=crew_extra)
    return repo, config


def _run(repo: Path, config: Path):
    return run_toy(repo, config, tag="llm")


@pytest.mark.slow
def test_anthropic_crew_keeps_and_discards(tmp_path, anthropic_env):
    crew = ScriptedCrew(["MATRIX_LR 0.01 -> 0.04", "EMBEDDING_LR 0.6 -> 3.0", "DEPTH 2 -> 4"])
    with ScriptedLLMServer(crew) as server:
        anthropic_env(server)
        repo, config = _llm_repo(tmp_path, "anthropic/claude-sonnet-4-5", loop={"max_experiments": 3})
        outcome = _run(repo, config)
        assert {r.protocol for r in server.requests} == {"anthropic"}
        roles = {"Idea", "CodeEdit", "Review", "Analysis"}
        assert roles <= {r.schema_name for r in server.requests} <= roles | {"JudgeAnswer"}
        # program.md starts with the heading the templates already give: it appears once per prompt
        assert all(r.text.count("# Research program") <= 1 for r in server.requests)
        assert all(r.text.count("# Research program") == 1 for r in server.requests if r.schema_name != "JudgeAnswer")
    records = check_consistency(repo, "llm")
    by_title = {r.description: r for r in records}
    assert by_title["MATRIX_LR 0.01 -> 0.04"].status == "keep"
    assert by_title["EMBEDDING_LR 0.6 -> 3.0"].status == "discard"
    assert by_title["DEPTH 2 -> 4"].status == "keep"
    assert "MATRIX_LR = 0.04 if CUDA else 0.04" in (repo / "train.py").read_text()
    trained = [r for r in records if r.status in ("keep", "discard")]
    assert all(r.tokens_in > 0 and r.tokens_out > 0 and r.usd > 0 for r in trained), "usage not attributed"
    assert outcome.best_bpb is not None
    assert_no_secret_written(repo, "sk-ant-test-key-never-logged")


def assert_no_secret_written(repo: Path, secret: str) -> None:
    """Nothing under runs/ or the memory store (logs, results, patches, Chroma files) holds the key."""
    scanned = 0
    for folder in (repo / "runs", repo / ".autoresearch"):
        for path in folder.rglob("*"):
            if path.is_file():
                scanned += 1
                assert secret.encode() not in path.read_bytes(), f"the API key leaked into {path}"
    assert scanned > 5


@pytest.mark.slow
def test_openai_compatible_base_url(tmp_path):
    # the third idea repeats the first, which memory knows by then
    crew = ScriptedCrew(["DEPTH 2 -> 4", "MATRIX_LR 0.01 -> 0.04", "DEPTH 2 -> 4", "EMBEDDING_LR 0.6 -> 0.5"])
    with ScriptedLLMServer(crew) as server:
        repo, config = _llm_repo(tmp_path, "openai/local-model", base_url=server.base_url_openai,
                                 loop={"max_experiments": 3})
        _run(repo, config)
        assert {r.protocol for r in server.requests} == {"openai"}
    records = check_consistency(repo, "llm")
    assert sum(r.status in ("keep", "discard") for r in records) == 3
    (repeat,) = [r for r in records if r.status == "repeat"]
    assert repeat.rule.startswith("novelty-")  # the gate that refused it is named


@pytest.mark.slow
def test_malformed_edits_are_retried_then_skipped_and_the_loop_goes_on(tmp_path, anthropic_env):
    bad = {
        "DEPTH 2 -> 9": {"path": "train.py", "blocks": [{"search": "NO SUCH LINE", "replace": "x"}], "summary": ""},
        "DEPTH 2 -> 8": {"path": "prepare.py", "blocks": [{"search": "SEED", "replace": "SEED2"}], "summary": ""},
        "DEPTH 2 -> 7": {"path": "train.py", "blocks": [{"search": "DEPTH = 4 if CUDA else 2",
                                                          "replace": "DEPTH = = 4"}], "summary": ""},
        "DEPTH 2 -> 6": Reply.message("Sure! I would change the depth."),
    }
    crew = ScriptedCrew([*bad, "DEPTH 2 -> 4"], bad_edits=bad)
    with ScriptedLLMServer(crew) as server:
        anthropic_env(server)
        repo, config = _llm_repo(tmp_path, "anthropic/claude-sonnet-4-5", loop={"max_experiments": 1},
                                 crew_extra={"degrade_after": 50})
        _run(repo, config)
        coder_calls = [r for r in server.requests if r.schema_name == "CodeEdit"]
    records = check_consistency(repo, "llm")
    # ideas refused while the last baseline trained come after it; then rows follow the order of decisions
    assert [r.status for r in records[:2]] == ["baseline", "baseline"]
    assert records[-1].description == "DEPTH 2 -> 4" and records[-1].status == "keep"  # decided last
    skipped = {r.description: r.decision_reason for r in records if r.status == "skipped"}
    assert set(skipped) == set(bad) - {"DEPTH 2 -> 8"}, skipped
    assert "not found" in skipped["DEPTH 2 -> 9"]
    assert "line" in skipped["DEPTH 2 -> 7"].lower()
    assert [r.status for r in records if r.description == "DEPTH 2 -> 4"] == ["keep"]
    for title in set(bad) - {"DEPTH 2 -> 8"}:  # each bad edit had the allowed retries
        assert sum(f"Title: {title}" in r.text for r in coder_calls) >= 3, title
    # an edit of another file is the guard's veto, by its rule, at once: not retried, not coached into train.py
    (scope,) = [r for r in records if r.description == "DEPTH 2 -> 8"]
    assert scope.status == "veto" and scope.rule == "only-train-py" and "prepare.py" in scope.decision_reason
    assert sum("Title: DEPTH 2 -> 8" in r.text for r in coder_calls) == 1
    assert not any("only train.py" in r.text.lower() for r in coder_calls)
    tsv = (repo / "runs" / "llm" / "results.tsv").read_text()
    assert "DEPTH 2 -> 8 [veto: only-train-py]" in tsv and len(tsv.splitlines()[1].split("\t")) == 7


@pytest.mark.slow
def test_rate_limits_server_errors_drops_and_garbage_are_survived(tmp_path, anthropic_env):
    faults = [Reply.error(429, retry_after=0.1), Reply.error(500), Reply.error(529, retry_after=0.1),
              Reply.dropped(), Reply.garbage()]
    crew = ScriptedCrew(["DEPTH 2 -> 4"], faults=faults)
    with ScriptedLLMServer(crew) as server:
        anthropic_env(server)
        repo, config = _llm_repo(tmp_path, "anthropic/claude-sonnet-4-5", loop={"max_experiments": 1},
                                 role_extra={"max_retries": 3})
        _run(repo, config)
        assert len(server.requests) > len(faults)
    records = check_consistency(repo, "llm")
    assert [r.status for r in records if r.description == "DEPTH 2 -> 4"] == ["keep"]
    assert not any(r.degraded_roles for r in records)
    # survived, and counted: each fault once, under the role whose call met it
    faults: dict[str, int] = {}
    for r in records:
        for counts in json.loads(r.faults or "{}").values():
            for kind, n in counts.items():
                faults[kind] = faults.get(kind, 0) + n
    assert faults["rate_limited"] == 1 and faults["server_error"] == 2 and faults["connection"] == 1
    assert faults["malformed"] == 1 and faults["retries"] >= 4
    from agents.record.report import summary_markdown

    assert "## Provider faults survived" in summary_markdown(records)


@pytest.mark.slow
def test_a_slow_reply_past_the_timeout_does_not_hang_the_loop(tmp_path, anthropic_env):
    crew = ScriptedCrew(["DEPTH 2 -> 4"], faults=[Reply.slow(30.0), Reply.slow(30.0)])
    with ScriptedLLMServer(crew) as server:
        anthropic_env(server)
        repo, config = _llm_repo(tmp_path, "anthropic/claude-sonnet-4-5", loop={"max_experiments": 1},
                                 role_extra={"timeout_s": 1.0, "max_retries": 2})
        started = time.monotonic()
        _run(repo, config)
        elapsed = time.monotonic() - started
    assert elapsed < 25, f"the loop waited {elapsed:.0f}s on a slow provider"
    records = check_consistency(repo, "llm")
    assert [r.status for r in records if r.description == "DEPTH 2 -> 4"] == ["keep"]


def test_a_failing_provider_degrades_the_role_and_the_run_goes_on(tmp_path, anthropic_env):
    class HypothesisDown(ScriptedCrew):
        def __call__(self, request: ParsedRequest) -> Reply:
            if request.schema_name == "Idea":
                return Reply.error(500, "provider down")
            return super().__call__(request)

    with ScriptedLLMServer(HypothesisDown(["unused"])) as server:
        anthropic_env(server)
        repo, config = _llm_repo(tmp_path, "anthropic/claude-sonnet-4-5", loop={"max_experiments": 1},
                                 role_extra={"max_retries": 0}, crew_extra={"degrade_after": 2},
                                 # the offline coder implements the offline hypotheses that take over
                                 per_role={"coder": {"model": "offline"}})
        outcome = _run(repo, config)
    records = check_consistency(repo, "llm")
    trained = [r for r in records if r.status in ("keep", "discard", "crash")]
    assert len(trained) == 1 and "max_experiments" in outcome.stop_reason
    assert "hypothesis" in trained[0].degraded_roles


def test_the_usd_budget_is_checked_before_any_call(tmp_path, anthropic_env):
    crew = ScriptedCrew(["DEPTH 2 -> 4"])
    with ScriptedLLMServer(crew) as server:
        anthropic_env(server)
        repo, config = _llm_repo(tmp_path, "anthropic/claude-sonnet-4-5",
                                 loop={"max_experiments": 3, "max_usd": 0.000001})
        outcome = _run(repo, config)
        assert server.requests == [], "a call was sent although the budget could not cover it"
    assert "budget" in outcome.stop_reason
    records = check_consistency(repo, "llm")
    assert [r.status for r in records] == ["baseline", "baseline"]


@pytest.mark.slow
def test_an_edit_that_does_nothing_on_this_device_is_refused_before_training(tmp_path, anthropic_env):
    gpu_only = "DEPTH 4 -> 6 on a GPU"
    edits = {gpu_only: {"path": "train.py", "summary": gpu_only,
                        "blocks": [{"search": "DEPTH = 4 if CUDA else 2", "replace": "DEPTH = 6 if CUDA else 2"}]}}
    crew = ScriptedCrew([gpu_only, "DEPTH 2 -> 4"], bad_edits=edits)
    with ScriptedLLMServer(crew) as server:
        anthropic_env(server)
        repo, config = _llm_repo(tmp_path, "anthropic/claude-sonnet-4-5", loop={"max_experiments": 1})
        # a device flag train.py reads at run time (as torch.cuda.is_available()), false on this machine
        train_py = repo / "train.py"
        train_py.write_text(train_py.read_text().replace("CUDA = False", "CUDA = time.time() < 0"))
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@localhost"]
        import subprocess

        subprocess.run(git + ["commit", "-qam", "a run-time device flag"], cwd=repo, check=True)
        _run(repo, config)
    records = check_consistency(repo, "llm")
    (noop,) = [r for r in records if r.description == gpu_only]
    assert noop.status == "skipped" and noop.rule == "no-op-here"
    assert "does nothing on this device" in noop.decision_reason and "DEPTH" in noop.decision_reason
    assert noop.val_bpb is None and not noop.log_path and noop.num_steps is None  # never trained
    assert [r.status for r in records if r.description == "DEPTH 2 -> 4"] == ["keep"]
    assert "[skipped: no-op-here]" in (repo / "runs" / "llm" / "results.tsv").read_text()
