"""The sampler presets in the loop on the toy repository: a resumed `tpe` run continues its study with no trial lost
or doubled, the hybrid takes turns as configured, and a compare of three presets writes one table and its plots."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import optuna
import pyarrow.csv as pacsv
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from agents.compare import Budget, plan_compare, run_compare
from agents.config import PRESETS_DIR
from agents.crew.hpo import STUDY_FILE, told_value, trial_ref
from agents.record.compare_report import run_row
from agents.record.journal import Journal
from agents.record.results import ResultsStore
from tests.test_compare import assert_png_drawn, assert_worktrees_removed
from tests.toyrepo import ROOT, check_consistency, make_toy_repo, run_toy

pytestmark = pytest.mark.slow  # subprocess loops and many toy runs

def studies(run_dir: Path) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = JournalStorage(JournalFileBackend(str(run_dir / STUDY_FILE)))
    return {name: optuna.load_study(study_name=name, storage=storage).get_trials()
            for name in optuna.get_all_study_names(storage)}


def check_study(repo: Path, tag: str = "t1") -> tuple[list, list]:
    """Every trial is one experiment's, told its outcome once, or still pending in the journal, or failed unrun.

    Returns (the run's records, its sampler trials that became ideas)."""
    run_dir = repo / "runs" / tag
    records = check_consistency(repo, tag)
    sampled = [r for r in records if trial_ref(r.description) is not None]
    assert len({r.description for r in sampled}) == len(sampled), "a trial became two experiments"
    trials = [t for trials in studies(run_dir).values() for t in trials if "title" in t.user_attrs]
    by_title = {t.user_attrs["title"]: t for t in trials}
    assert len(by_title) == len(trials), "two trials share a title"
    for r in sampled:
        trial = by_title[r.description]
        expected = told_value(r)
        if expected is None:
            assert trial.state == TrialState.FAIL, (r.exp_id, r.status, trial.state)
        else:
            assert (trial.state, trial.value) == (TrialState.COMPLETE, pytest.approx(expected)), (r.exp_id, r.status)
    pending = {(e.idea or {}).get("title") for e in Journal(run_dir).unfinished()}
    recorded = {r.description for r in sampled}
    for title, trial in by_title.items():
        if title not in recorded:  # never trained nor refused: still waiting in the journal, or failed unrun
            assert (trial.state == TrialState.RUNNING and title in pending) or trial.state == TrialState.FAIL, title
        else:
            assert trial.state != TrialState.RUNNING, f"{title}: decided, but its trial was never told"
    return records, trials


def _loop_process(repo: Path, config: Path, kill_at: str | None) -> subprocess.CompletedProcess:
    """The loop in a subprocess, SIGKILLed at `kill_at` (tests/kill_points.py), or run to its end."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "tests.kill_points", str(repo), str(config), kill_at or ""], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(("phase", "nth"), [
    ("propose", 3),  # trials asked by the preparing threads, not all written ahead yet
    ("memory", 4),  # a trial's result is in results.parquet, its study not told yet
])
def test_a_tpe_run_killed_and_resumed_continues_its_study(tmp_path, phase, nth):
    repo = tmp_path / "repo"
    config = make_toy_repo(repo, preset="tpe", loop={"max_experiments": 3, "time_budget": 0.1})
    killed = _loop_process(repo, config, f"{phase}@{nth}")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr

    resumed = _loop_process(repo, config, None)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "STOP: reached max_experiments" in resumed.stdout
    records, trials = check_study(repo)
    assert list(studies(repo / "runs" / "t1")) == ["phase-0"]  # one study, continued, not started again
    assert sum(r.status in ("keep", "discard", "crash") for r in records) == 3
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))


def test_a_tpe_run_stopped_and_run_again_continues_its_study(tmp_path):
    repo = tmp_path / "repo"
    config = make_toy_repo(repo, preset="tpe", loop={"max_experiments": 2, "pipelining": False})
    run_toy(repo, config)
    first, asked = check_study(repo)
    data = yaml.safe_load(config.read_text())
    data["loop"]["max_experiments"] = 5
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    outcome = run_toy(repo, config)
    assert outcome.stop_reason == "reached max_experiments (5)"
    records, trials = check_study(repo)
    assert [r.exp_id for r in records[:len(first)]] == [r.exp_id for r in first]  # nothing rewritten
    sampled = [r for r in records if r.status in ("keep", "discard", "crash")]
    assert len(sampled) == 5 and all(trial_ref(r.description) for r in sampled)
    assert list(studies(repo / "runs" / "t1")) == ["phase-0"]
    assert [t.number for t in trials[:len(asked)]] == [t.number for t in asked]  # the same study, grown
    assert len(trials) > len(asked)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= sum(told_value(r) is not None for r in sampled) == len(complete)


def test_the_hybrid_takes_turns_as_configured(tmp_path):
    repo = tmp_path / "repo"
    config = make_toy_repo(repo, preset="centaur", loop={"max_experiments": 7, "pipelining": False},
                           roles={r: {"model": "offline"} for r in ("hypothesis", "coder", "reviewer", "analyst")},
                           crew_extra={"sampler": {"method": "cmaes", "turns": {"crew": 1, "sampler": 2}}})
    outcome = run_toy(repo, config)
    assert outcome.stop_reason == "reached max_experiments (7)"
    records, _ = check_study(repo)
    proposals = sorted((r for r in records if r.status != "baseline"), key=lambda r: r.exp_id)
    sides = ["sampler" if trial_ref(r.description) else "crew" for r in proposals]
    assert sides == (["crew", "sampler", "sampler"] * 4)[:len(sides)], [(r.exp_id, r.description) for r in proposals]
    assert all(r.lesson for r in proposals if r.status in ("keep", "discard"))  # the analyst explains both sides
    # a keep of the crew's moved the best: the sampler's next trials search around it, in a study of their own
    crew_keeps = [r for r in proposals if r.status == "keep" and trial_ref(r.description) is None]
    phases = studies(repo / "runs" / "t1")
    assert len(phases) == 1 + len(crew_keeps), list(phases)
    for k, keep in enumerate(crew_keeps, start=1):
        anchor = phases[f"phase-{k}"][0]
        assert (anchor.user_attrs["anchor"], anchor.value) == (keep.exp_id, pytest.approx(keep.val_bpb))


def test_compare_of_three_presets_writes_one_table_and_plots(tmp_path):
    repo = tmp_path / "repo"
    base = yaml.safe_load(make_toy_repo(repo).read_text())
    paths = {}
    for name in ("centaur", "tpe", "offline"):  # the shipped presets, on the toy's budget
        variant = {"extends": str(PRESETS_DIR / f"{name}.yaml"), "loop": base["loop"], "tracking": False}
        if name == "centaur":  # the roles' `auto` is the offline policy without API keys; say so explicitly
            variant["roles"] = {r: {"model": "offline"} for r in ("hypothesis", "coder", "reviewer", "analyst")}
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(variant, sort_keys=False))
    plan = plan_compare(repo, [str(p) for p in paths.values()], Budget(experiments=3), repeats=2)
    outcome = run_compare(plan)

    compare_dir = repo / "runs" / "centaur-vs-tpe-vs-offline"
    assert {s["state"] for s in outcome.states.values()} == {"done"}
    rows = {row["config"]: row for row in pacsv.read_csv(compare_dir / "table.csv").to_pylist()}
    assert set(rows) == {"centaur", "tpe", "offline"}
    per_run = [run_row(run) for run in outcome.report.runs]
    for config, row in rows.items():
        mine = [r for r in per_run if r["config"] == config]
        assert row["runs"] == len(mine) == 2 and row["experiments"] == 3
        for r in mine:
            assert r["gain_per_experiment"] == pytest.approx(r["gain"] / 3)
            assert r["gain_per_hour"] == pytest.approx(r["gain"] / (r["wall_seconds"] / 3600))
            assert r["gain_per_usd"] is None  # nobody paid for a model
        for key in ("gain_per_experiment", "gain_per_hour"):  # the mean over repeats, and their spread
            assert row[key] == pytest.approx(statistics.fmean(r[key] for r in mine))
            assert row[f"{key}_sd"] == pytest.approx(statistics.stdev(r[key] for r in mine), abs=1e-12)
    for png in outcome.report.plots:
        assert_png_drawn(png)
    markdown = (compare_dir / "report.md").read_text()
    assert all(f"| {name} |" in markdown for name in rows) and "gain per hour" in markdown
    assert_worktrees_removed(repo)
    for tag, state in outcome.states.items():  # each preset's runs are its own: samplers in tpe and centaur only
        run_dir = compare_dir / state["dir"]
        records = [r for r in ResultsStore(run_dir).load() if r.status in ("keep", "discard", "crash")]
        sides = {trial_ref(r.description) is not None for r in records}
        expected = {"tpe": {True}, "offline": {False}, "centaur": {True, False}}[state["config"]]
        assert sides <= expected and (state["config"] != "tpe" or sides == {True}), (tag, sides)
        assert (run_dir / STUDY_FILE).exists() == (state["config"] != "offline")
