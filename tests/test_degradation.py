"""A role that loses its model is loud: a banner as it happens, the summary, `status` and report.md say which
role ran offline from which experiment and why, the faults survived are counted, and `--strict` stops instead.
Driven through the CLI against a scripted OpenAI-compatible server whose coder endpoint keeps failing."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from agents.cli import app
from agents.record.results import ResultsStore
from tests.llm_server import ParsedRequest, Reply, ScriptedLLMServer
from tests.toyrepo import check_consistency, make_toy_repo

runner = CliRunner()
IDEA = {"title": "DEPTH 2 -> 4", "rationale": "more layers", "expected_effect": "lower val_bpb",
        "category": "architecture"}


class CoderDown:
    """Every role answers, except the coder: HTTP 500 whose body quotes the upstream's address."""

    def __init__(self) -> None:
        self.port = 0

    def __call__(self, request: ParsedRequest) -> Reply:
        if request.schema_name == "CodeEdit":
            return Reply.error(500, f"upstream at 127.0.0.1:{self.port} crashed (secret-ish detail)")
        if request.schema_name == "Idea":
            return Reply.json(IDEA)
        if request.schema_name == "Review":
            return Reply.json({"verdict": "approve", "reasons": ["fine"]})
        return Reply.json({"explanation": "as expected", "lesson": "noted", "rerun": False})


@pytest.fixture
def lab(tmp_path, monkeypatch):
    responder = CoderDown()
    with ScriptedLLMServer(responder) as server:
        responder.port = server.port
        role = {"model": "openai/local", "base_url": server.base_url_openai, "max_retries": 0, "timeout_s": 10}
        repo = tmp_path / "repo"
        make_toy_repo(repo, preset="full", roles={r: dict(role) for r in ("hypothesis", "coder", "reviewer", "analyst")},
                      loop={"max_experiments": 2, "noise": {"baseline_repeats": 1}}, crew_extra={"degrade_after": 2})
        monkeypatch.chdir(repo)
        yield repo, server


def _run(args):
    return runner.invoke(app, args, catch_exceptions=False)


@pytest.mark.slow
def test_a_lost_model_is_announced_everywhere_and_counted(lab):
    repo, server = lab
    result = _run(["run", "--tag", "d", "--no-live"])
    out = result.output
    assert result.exit_code == 0, out
    assert "no model is left, the offline policy plays it" in out and "--strict stops instead" in out
    # the banner, the moment it happens, for the coder and for the hypothesis it takes along
    assert re.search(r"MODEL GIVEN UP coder: local -> offline policy after 2 failures in a row of local, "
                     r"from experiment \d{4}", out), out
    assert "MODEL GIVEN UP hypothesis: local -> offline policy" in out and "implements only the offline" in out
    assert "DEGRADED coder: local -> offline policy" in out  # the final summary

    records = check_consistency(repo, "d")
    # rows in the order experiments were decided: the baselines first, then each experiment once
    statuses = [r.status for r in records]
    baselines = statuses.count("baseline")
    assert baselines >= 1 and statuses[:baselines] == ["baseline"] * baselines, statuses
    assert len({r.exp_id for r in records}) == len(records)
    trained = [r for r in records if r.status in ("keep", "discard", "crash")]
    assert len(trained) == 2 and all("coder: local -> offline policy" in r.degraded_roles for r in trained)
    faults = {}
    for r in records:
        for role, counts in json.loads(r.faults or "{}").items():
            faults.setdefault(role, 0)
            faults[role] += counts.get("server_error", 0)
    assert faults.get("coder", 0) >= 2, faults

    report = (repo / "runs" / "d" / "report.md").read_text()
    warning = report.index("## Warning: roles that ran without their model")
    assert warning < report.index("## What worked") and "coder: local -> offline policy" in report[warning:]
    assert "## Provider faults survived" in report

    status = _run(["status", "--tag", "d"])
    assert status.exit_code == 0 and "DEGRADED coder: local -> offline policy" in status.output

    # the provider's words (host, port, detail) never went back into a prompt
    assert not any(f":{server.port}" in r.text or "secret-ish" in r.text for r in server.requests)
    # CrewAI kept its SQLite copy of the tasks' outputs inside the run
    assert (repo / "runs" / "d" / "crewai" / "latest_kickoff_task_outputs.db").exists()


@pytest.mark.slow
def test_strict_stops_the_run_instead_of_going_offline(lab):
    repo, _ = lab
    result = _run(["run", "--tag", "s", "--no-live", "--strict"])
    assert result.exit_code == 1, result.output
    assert "the run stops (on_model_failure: stop)" in result.output
    assert "stopped: the coder role has no working model left (on_model_failure: stop)" in result.output
    records = ResultsStore(repo / "runs" / "s").load()
    assert [r.status for r in records] == ["baseline"] or not any(r.status in ("keep", "discard") for r in records)
