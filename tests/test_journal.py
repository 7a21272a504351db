"""The journal's typed entries; an old journal (re-runs in files of their own) still resumes."""

from __future__ import annotations

import json

import pytest

from agents.record.journal import FollowUp, Journal, JournalEntry, Phase, RunKind


def test_entries_round_trip_with_their_follow_ups(tmp_path):
    journal = Journal(tmp_path)
    entry = JournalEntry(exp_id="0004", phase=Phase.TRAINED, commit="abc", seed=42)
    rerun = entry.add_follow_up(RunKind.RERUN)
    assert (rerun.run_id, rerun.seed, rerun.commit) == ("0004.r1", 1042, "abc")
    assert entry.add_follow_up(RunKind.RERUN).seed == 2042
    assert entry.add_follow_up(RunKind.CONFIRM).run_id == "0004.c1"
    journal.write(entry)
    data = json.loads(journal.path("0004").read_text())
    assert data["phase"] == "trained" and data["follow_ups"][0]["kind"] == "rerun"  # plain strings on disk
    again = journal.read("0004")
    assert again == entry and isinstance(again.follow_ups[0], FollowUp) and again.pending == rerun
    assert [e.exp_id for e in journal.unfinished()] == ["0004"]


def test_an_unknown_phase_is_refused():
    with pytest.raises(ValueError, match="unknown journal phase"):
        JournalEntry(exp_id="0001", phase="coding")


def test_an_old_journals_rerun_files_are_folded_into_their_experiment(tmp_path):
    journal = Journal(tmp_path)
    journal.dir.mkdir(parents=True)
    parent = {"exp_id": "0007", "phase": "trained", "kind": "experiment", "commit": "c7", "seed": 42,
              "runs": [0.99], "result": {"val_bpb": 0.99}}
    child = {"exp_id": "0007.r1", "phase": "committed", "kind": "rerun", "commit": "c7", "seed": 1042,
             "parent": "0007", "pid": 0}
    done = {"exp_id": "0003", "phase": "done", "kind": "experiment"}
    for data in (parent, child, done):
        (journal.dir / f"{data['exp_id']}.json").write_text(json.dumps(data))
    (entry,) = journal.unfinished()
    assert entry.exp_id == "0007" and entry.pending is None
    assert [(f.run_id, f.kind, f.done) for f in entry.follow_ups] == [("0007.r1", RunKind.RERUN, True)]
    assert entry.add_follow_up(RunKind.RERUN).run_id == "0007.r2"  # numbered after the old one
    assert journal.read("0007.r1").phase == Phase.DONE
    assert [e.exp_id for e in journal.unfinished()] == ["0007"]  # folded once
    assert len(journal.read("0007").follow_ups) == 1
