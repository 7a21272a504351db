"""`autoresearch compare` on the toy experiment repository: equal budgets, isolated memories, resume, reports."""

from __future__ import annotations

import json
from pathlib import Path

import git
import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml
from matplotlib.image import imread
from typer.testing import CliRunner

from agents.compare import Budget, CompareError, plan_compare, run_compare
from agents.config import PRESETS_DIR
from agents.record.results import ResultsStore
from memory.store import ExperimentMemory
from tests.llm_server import ScriptedLLMServer
from tests.test_loop_llm import ScriptedCrew
from tests.toyrepo import make_toy_repo

TRAINED = ("keep", "discard", "crash")
LLM_TITLES = ["MATRIX_LR 0.01 -> 0.04", "DEPTH 2 -> 4", "EMBEDDING_LR 0.6 -> 3.0"]


def toy_with_variants(tmp_path: Path, **variants: dict) -> tuple[Path, dict[str, Path]]:
    """A toy repository plus crew.yaml variants next to it: name -> changes to the offline toy crew.yaml."""
    repo = tmp_path / "repo"
    base = yaml.safe_load(make_toy_repo(repo).read_text())
    paths = {}
    for name, change in variants.items():
        data = json.loads(json.dumps(base))
        for key, value in change.items():
            if isinstance(value, dict):
                data.setdefault(key, {}).update(value)
            else:
                data[key] = value
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(data, sort_keys=False))
    return repo, paths


def llm_variant() -> dict:
    """The full crew, every role on an Anthropic model (served by the scripted local server)."""
    role = {"model": "anthropic/claude-sonnet-4-5", "max_retries": 2, "timeout_s": 10}
    return {"extends": str(PRESETS_DIR / "full.yaml"), "name": "llm", "single_agent": {"model": "auto"},
            "roles": {r: dict(role) for r in ("hypothesis", "coder", "reviewer", "analyst")}}


def records_of(run_dir: Path) -> list:
    return ResultsStore(run_dir).load()


def assert_png_drawn(path: Path) -> None:
    image = imread(path)  # raises if the file does not decode
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300, path
    assert float(np.var(image[..., :3])) > 1e-3, f"{path} is blank"


def assert_worktrees_removed(repo: Path) -> None:
    worktrees = git.Repo(repo).git.worktree("list", "--porcelain").count("worktree ")
    assert worktrees == 1, git.Repo(repo).git.worktree("list")
    leftovers = repo / ".autoresearch" / "worktrees"
    assert not leftovers.exists() or not any(p.is_dir() for p in leftovers.rglob("*") if (p / ".git").exists())


@pytest.mark.slow
def test_offline_against_an_llm_crew_on_equal_budgets(tmp_path, monkeypatch):
    repo, paths = toy_with_variants(tmp_path, offline={}, llm=llm_variant())
    crew = ScriptedCrew(LLM_TITLES)
    with ScriptedLLMServer(crew) as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key-never-logged")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url_anthropic)
        plan = plan_compare(repo, [str(paths["offline"]), str(paths["llm"])], Budget(experiments=2))
        outcome = run_compare(plan)
        assert {r.schema_name for r in server.requests} >= {"Idea", "CodeEdit", "Review", "Analysis"}

    compare_dir = repo / "runs" / "offline-vs-llm"
    assert outcome.report.markdown == compare_dir / "report.md"
    assert {tag: s["state"] for tag, s in outcome.states.items()} == {
        "offline-vs-llm-offline-r1": "done", "offline-vs-llm-llm-r1": "done"}
    start = json.loads((compare_dir / "manifest.json").read_text())["start_commit"]
    assert start == git.Repo(repo).commit("main").hexsha

    # the table: equal budgets were spent, and only the LLM crew paid for tokens
    table = {row["config"]: row for row in pacsv.read_csv(compare_dir / "table.csv").to_pylist()}
    assert set(table) == {"offline", "llm"}
    assert table["offline"]["experiments"] == table["llm"]["experiments"] == 2
    assert table["offline"]["tokens"] == 0 and table["offline"]["usd"] == 0
    assert table["llm"]["tokens"] > 0 and table["llm"]["usd"] > 0
    assert table["llm"]["kept"] >= 1  # MATRIX_LR 0.01 -> 0.04 moves the toy towards its optimum
    assert all(row["gain"] <= 0 for row in table.values())  # the best is never worse than the run's baseline

    # one dataset with every experiment of both runs, labelled by config and repeat
    data = pq.read_table(compare_dir / "experiments.parquet").to_pylist()
    for config in ("offline", "llm"):
        own = records_of(compare_dir / f"{config}-r1")
        mine = [row for row in data if row["config"] == config]
        assert sorted(row["exp_id"] for row in mine) == sorted(r.exp_id for r in own)
        assert {row["repeat"] for row in mine} == {1}
        assert sum(row["status"] in TRAINED for row in mine) == 2
    assert {row["description"] for row in data if row["config"] == "llm" and row["status"] in TRAINED} <= set(LLM_TITLES)

    for png in [*outcome.report.plots, compare_dir / "offline-r1" / "progress.png", compare_dir / "llm-r1" / "progress.png"]:
        assert_png_drawn(png)
    markdown = (compare_dir / "report.md").read_text()
    assert "| offline |" in markdown and "| llm |" in markdown
    assert "(best_by_experiment.png)" in markdown and "(best_by_time.png)" in markdown
    run_report = (compare_dir / "llm-r1" / "report.md").read_text()
    for part in ("(progress.png)", "## What worked", "## What was tried, by category", "## Lessons"):
        assert part in run_report

    # worktrees gone, branches kept, each at its run's best commit
    assert_worktrees_removed(repo)
    heads = git.Repo(repo).heads
    for tag, state in outcome.states.items():
        assert heads[f"autoresearch/{tag}"].commit.hexsha == state["best_commit"]

    # no configuration learned from the other's results: each memory holds only its own run
    assert not (repo / ".autoresearch" / "memory").exists()
    for config in ("offline", "llm"):
        tag, run_dir = f"offline-vs-llm-{config}-r1", compare_dir / f"{config}-r1"
        memory = ExperimentMemory.open(run_dir / "memory", read_only=True)
        try:
            assert memory.stats()["by_tag"] == {tag: len(records_of(run_dir))}
            assert memory.where({"config": {"$ne": config}}) == []
        finally:
            memory.close()


@pytest.mark.slow
def test_an_interrupted_compare_continues_without_repeating_finished_work(tmp_path):
    repo, paths = toy_with_variants(tmp_path, a={}, b={"loop": {"seed": 7}})
    plan = plan_compare(repo, [str(paths["a"]), str(paths["b"])], Budget(experiments=2))

    def interrupt_b(event) -> None:  # Ctrl-C right after b's first trained experiment is recorded
        loop = event.loop_event
        if event.run == "a-vs-b-b-r1" and loop is not None and loop.kind == "record" and loop.record.status in TRAINED:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_compare(plan, on_event=interrupt_b)
    compare_dir = repo / "runs" / "a-vs-b"
    states = json.loads((compare_dir / "manifest.json").read_text())["runs"]
    assert states["a-vs-b-a-r1"]["state"] == "done" and states["a-vs-b-b-r1"]["state"] == "interrupted"
    assert_worktrees_removed(repo)
    a_before = [(r.exp_id, r.status, r.finished_at) for r in records_of(compare_dir / "a-r1")]
    a_bytes = (compare_dir / "a-r1" / "results.parquet").read_bytes()
    b_before = {r.exp_id: r.finished_at for r in records_of(compare_dir / "b-r1")}
    assert sum(r.status in TRAINED for r in records_of(compare_dir / "b-r1")) == 1

    said = []
    outcome = run_compare(plan_compare(repo, [str(paths["a"]), str(paths["b"])], Budget(experiments=2)),
                          on_event=lambda e: said.append((e.run, e.text)))
    assert ("a-vs-b-a-r1", "already finished; kept as it is") in said
    assert (compare_dir / "a-r1" / "results.parquet").read_bytes() == a_bytes
    assert [(r.exp_id, r.status, r.finished_at) for r in records_of(compare_dir / "a-r1")] == a_before
    b_after = records_of(compare_dir / "b-r1")
    assert len({r.exp_id for r in b_after}) == len(b_after)
    assert all(any(r.exp_id == i and r.finished_at == t for r in b_after) for i, t in b_before.items())
    assert sum(r.status in TRAINED for r in b_after) == 2 and sum(r.status == "baseline" for r in b_after) == 2
    assert all(s["state"] == "done" for s in outcome.states.values())
    assert_worktrees_removed(repo)

    # continuing needs the same arguments; otherwise it says what differs
    with pytest.raises(CompareError, match="experiments: was 2, now 3"):
        run_compare(plan_compare(repo, [str(paths["a"]), str(paths["b"])], Budget(experiments=3)))


def test_plans_refuse_unequal_or_endless_budgets(tmp_path):
    repo, paths = toy_with_variants(tmp_path, a={}, slow={"loop": {"time_budget": 0.5}}, b={"loop": {"seed": 7}},
                                    endless={"loop": {"max_experiments": None}})
    with pytest.raises(CompareError, match=r"differ in loop.time_budget \(a: 0.05, slow: 0.5\); pass --budget"):
        plan_compare(repo, [str(paths["a"]), str(paths["slow"])], Budget(experiments=1))
    assert plan_compare(repo, [str(paths["a"]), str(paths["slow"])], Budget(experiments=1, time_budget=0.05)).runs
    with pytest.raises(CompareError, match="never stops configuration 'endless'"):
        plan_compare(repo, [str(paths["endless"])], Budget(usd=1.0))
    with pytest.raises(CompareError, match="no budget: give --experiments N"):
        plan_compare(repo, [str(paths["endless"])], Budget())
    with pytest.raises(CompareError, match="given twice"):
        plan_compare(repo, [str(paths["a"]), str(paths["a"])], Budget(experiments=1))
    plan = plan_compare(repo, [str(paths["a"]), str(paths["b"])], Budget(experiments=1), repeats=3)
    assert [(r.tag, r.seed) for r in plan.runs if r.config == "a"] == [
        ("a-vs-b-a-r1", 42), ("a-vs-b-a-r2", 10042), ("a-vs-b-a-r3", 20042)]


@pytest.mark.parametrize(("args", "message"), [
    ([], "no configurations given"),
    (["fulll", "--experiments", "2"], "unknown configuration 'fulll': not a preset (full, no-reviewer"),
    (["offline", "full", "--experiments", "0"], "--experiments must be >= 1"),
    (["offline", "--repeats", "0", "--experiments", "1"], "--repeats must be >= 1"),
])
def test_cli_bad_arguments_give_one_clear_error_and_exit_2(tmp_path, monkeypatch, args, message):
    from agents.cli import app

    make_toy_repo(tmp_path / "repo")  # inside a project: outside one, that is the one error
    monkeypatch.chdir(tmp_path / "repo")
    result = CliRunner().invoke(app, ["compare", *args])
    assert result.exit_code == 2, result.output
    flat = " ".join(result.output.split())
    assert flat.count("error:") == 1 and message in flat, result.output
    assert "Traceback" not in result.output


def test_wall_clock_leaves_out_the_time_a_compare_sat_interrupted(tmp_path):
    from datetime import UTC, datetime, timedelta

    from agents.record.compare_report import RunData, index_curve, time_curve, total_active_seconds
    from agents.record.results import ExperimentRecord

    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def rec(exp_id: str, status: str, bpb: float | None, at: float) -> ExperimentRecord:
        return ExperimentRecord(exp_id=exp_id, tag="t", status=status, description=exp_id, val_bpb=bpb,
                                finished_at=(t0 + timedelta(seconds=at)).isoformat())

    records = [rec("0000", "baseline", 1.00, 10), rec("0001", "baseline", 1.02, 20), rec("0002", "keep", 0.95, 30),
               # killed at 35 s with no end written; continued an hour later
               rec("0003", "veto", None, 3635), rec("0004", "discard", 0.99, 3650), rec("0005", "keep", 0.90, 3660)]
    sessions = [(t0, None), (t0 + timedelta(seconds=3600), t0 + timedelta(seconds=3670))]
    run = RunData("t", "c", 1, tmp_path, records=records, sessions=sessions)
    assert index_curve(records) == [pytest.approx(1.01), 0.95, 0.95, 0.90]
    assert time_curve(run) == [(20.0, pytest.approx(1.01)), (30.0, 0.95), (80.0, 0.95), (90.0, 0.90)]
    assert total_active_seconds(run) == 30.0 + 70.0
