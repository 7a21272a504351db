"""The research loop end to end on the toy experiment repository, with the offline crew."""

from __future__ import annotations

from pathlib import Path

import git
import pytest

from agents.record.journal import Journal, RunKind
from tests.toyrepo import check_consistency, make_toy_repo, run_toy


@pytest.mark.slow
def test_offline_crew_end_to_end_keeps_an_improvement(tmp_path):
    repo = tmp_path / "repo"
    config = make_toy_repo(repo, loop={"max_experiments": 4})
    outcome = run_toy(repo, config)

    records = check_consistency(repo, "t1")
    statuses = [r.status for r in records]
    assert statuses.count("baseline") == 2
    assert "keep" in statuses, statuses
    trained = [r for r in records if r.status in ("keep", "discard", "crash")]
    assert len(trained) == 4
    baseline = min(r.val_bpb for r in records if r.status == "baseline")
    assert outcome.best_bpb < baseline
    for r in records:
        if r.status in ("keep", "discard"):
            assert r.val_bpb is not None and r.lesson, r
            assert (repo / "runs" / "t1" / f"{r.exp_id}.patch").read_text() == r.diff
            assert Path(r.log_path).exists()
            assert r.started_at and r.started_at <= r.finished_at
    # the working tree holds the best train.py
    assert (repo / "train.py").read_text() == git.Repo(repo).commit(outcome.best_commit).tree["train.py"].data_stream.read().decode()


@pytest.mark.slow
def test_an_existing_tag_resumes_without_repeating(tmp_path):
    repo = tmp_path / "repo"
    config = make_toy_repo(repo, loop={"max_experiments": 2})
    run_toy(repo, config)
    first = check_consistency(repo, "t1")
    again = run_toy(repo, config)
    assert "max_experiments" in again.stop_reason
    assert [r.exp_id for r in check_consistency(repo, "t1")] == [r.exp_id for r in first]


def test_uncommitted_train_py_is_refused_and_left_alone(tmp_path):
    from agents.record.gitops import GitError

    repo = tmp_path / "repo"
    config = make_toy_repo(repo)
    (repo / "train.py").write_text((repo / "train.py").read_text() + "\n# my own edit\n")
    with pytest.raises(GitError, match="train.py"):
        run_toy(repo, config)
    assert (repo / "train.py").read_text().endswith("# my own edit\n")


@pytest.mark.slow
def test_a_new_run_remembers_what_earlier_runs_tried(tmp_path):
    repo = tmp_path / "repo"
    config = make_toy_repo(repo, loop={"max_experiments": 3})
    run_toy(repo, config, tag="night1")
    first = {r.description for r in check_consistency(repo, "night1") if r.status in ("keep", "discard")}
    run_toy(repo, config, tag="night2")
    second = check_consistency(repo, "night2")
    assert not [r for r in second if r.status == "repeat"], "the crew proposed what memory already held"
    assert not first & {r.description for r in second}


def test_a_memory_write_that_failed_is_made_good_at_the_end_and_said(tmp_path, monkeypatch):
    from agents.assemble import build_settings
    from agents.loop import run_loop
    from memory.store import ExperimentMemory

    repo = tmp_path / "repo"
    config = make_toy_repo(repo, loop={"max_experiments": 1})
    real_add, failed = ExperimentMemory.add, []

    def add_failing_once(self, record):
        if record.status == "baseline" and not failed:
            failed.append(record.exp_id)
            raise OSError("disk hiccup")
        return real_add(self, record)

    monkeypatch.setattr(ExperimentMemory, "add", add_failing_once)
    settings = build_settings(repo, config, "t1")
    notes: list[str] = []
    settings.on_event = lambda e: notes.append(e.message) if e.kind == "note" else None
    try:
        run_loop(settings)
        stored = sorted(h.exp_id for h in settings.memory.where({"tag": "t1"}))
    finally:
        settings.memory.close()
    records = check_consistency(repo, "t1")
    assert failed and stored == sorted(r.exp_id for r in records)
    assert any("memory write failed" in n for n in notes), notes
    assert any("1 experiment(s) of this run were missing" in n for n in notes), notes


@pytest.mark.slow
def test_a_winner_whose_step_count_left_the_baselines_range_is_rerun_before_it_is_kept(tmp_path, monkeypatch):
    from agents.record.runbook import RunBook

    real = RunBook.steps_outside
    asked = []

    def every_run_outside(self, steps):  # as on a machine busier than when the baselines ran
        asked.append(steps)
        return real(self, steps) or f"its {steps} optimizer steps lie outside the baselines' range"

    monkeypatch.setattr(RunBook, "steps_outside", every_run_outside)
    repo = tmp_path / "repo"
    config = make_toy_repo(repo, loop={"max_experiments": 3})
    run_toy(repo, config)
    records = check_consistency(repo, "t1")
    kept = [r for r in records if r.status == "keep"]
    assert kept and asked, [r.status for r in records]
    for r in kept:  # none kept on its first run: each was confirmed by a re-run, the mean decided
        assert "mean of 2 runs" in r.decision_reason and r.kept_as == "gain", r.decision_reason
    journal = Journal(repo / "runs" / "t1")
    for r in kept:  # the re-run is a follow-up in the kept experiment's own journal entry
        assert [f.run_id for f in journal.read(r.exp_id).follow_ups_of(RunKind.RERUN)] == [f"{r.exp_id}.r1"]


def test_the_run_book_names_a_step_count_outside_the_baselines_range_and_the_typical_effect(tmp_path):
    from agents.record.results import ExperimentRecord
    from agents.record.runbook import RunBook

    book = RunBook(tmp_path, "t", "default", None, None, None, lambda *a, **k: None, lambda phase: None)
    assert book.steps_outside(300) is None and book.effect_scale() is None  # nothing to compare with yet
    book.records = [ExperimentRecord(exp_id=f"000{i}", tag="t", status="baseline", description="b", num_steps=n)
                    for i, n in enumerate((301, 309, 305))]
    assert book.steps_outside(301) is None and book.steps_outside(309) is None
    assert book.steps_outside(412) == "its 412 optimizer steps lie outside the baselines' range (301-309)"
    assert "300 optimizer steps" in book.steps_outside(300)
    book.records += [ExperimentRecord(exp_id="0003", tag="t", status="discard", description="x", delta=0.03),
                     ExperimentRecord(exp_id="0004", tag="t", status="keep", description="y", delta=-0.01),
                     ExperimentRecord(exp_id="0005", tag="t", status="crash", description="z", delta=None)]
    assert book.effect_scale() == pytest.approx(0.02)
