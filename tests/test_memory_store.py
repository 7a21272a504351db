"""The experiment memory as a store: persistence across processes, idempotence, locking, rebuilds."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from agents.crew.schemas import Idea
from agents.record.results import ExperimentRecord, ResultsStore
from memory import DEFAULT_THRESHOLD, ExperimentMemory, MemoryLockedError, MemoryNotFoundError
from memory.embeddings import load_minilm

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def minilm():
    """The embedding model, loaded once per test session (the store reuses the process-wide instance)."""
    return load_minilm()


def make_records(tag: str = "night1") -> list[ExperimentRecord]:
    rows = [
        ("0001", "baseline", "baseline", "", 1.0100, None, ""),
        ("0002", "discard", "MATRIX_LR 0.04 -> 0.02", "Muon learning rate looks too high; early loss spikes.",
         1.0130, 0.0030, "Lower matrix LR slowed learning; keep 0.04."),
        ("0003", "keep", "Increase depth from 8 to 10 layers", "More capacity; MFU has headroom.", 1.0020, -0.0080,
         "Depth helps within the budget."),
        ("0004", "crash", "Replace ReLU squared with GELU in the MLP", "A smoother activation may train better.",
         None, None, ""),
        ("0005", "veto", "Evaluate on the training split", "Faster evaluation.", None, None, ""),
        ("0006", "keep", "Add QK normalisation in attention", "Bounded attention logits allow a higher LR.", 0.9950,
         -0.0070, "QK-norm stabilised training."),
    ]
    records = []
    for i, (exp_id, status, title, rationale, bpb, delta, lesson) in enumerate(rows):
        records.append(ExperimentRecord(
            exp_id=exp_id, tag=tag, status=status, description=title, rationale=rationale, val_bpb=bpb, delta=delta,
            lesson=lesson, category="other", diff_hash=f"hash-{tag}-{exp_id}" if status != "baseline" else "",
            error="NameError: name 'gelu' is not defined" if status == "crash" else "",
            started_at=f"2026-11-20T0{i}:00:00", commit=f"c{exp_id}",
        ))
    return records


def write_parquet(root: Path, records: list[ExperimentRecord]) -> Path:
    run_dir = root / "runs" / records[0].tag
    ResultsStore(run_dir).write_all(records)
    return run_dir / "results.parquet"


def idea(title: str, rationale: str = "", retry_of: str | None = None) -> Idea:
    return Idea(title=title, rationale=rationale, expected_effect="", category="other", retry_of=retry_of)


PARAPHRASE = idea("Set the matrix learning rate to 0.02", "Smaller matrix LR to calm the loss spikes.")


@pytest.mark.slow
def test_record_survives_a_new_process(tmp_path, minilm):
    path = tmp_path / "mem"
    with ExperimentMemory.open(path) as memory:
        for record in make_records():
            memory.add(record)
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from agents.crew.schemas import Idea
        from memory import ExperimentMemory
        with ExperimentMemory.open(Path({str(path)!r})) as memory:
            verdict = memory.check_idea(Idea(title={PARAPHRASE.title!r}, rationale={PARAPHRASE.rationale!r},
                                             expected_effect="", category="other"), threshold={DEFAULT_THRESHOLD})
            top = memory.search("query key normalisation", k=1)[0]
            print(json.dumps({{"count": memory.count(), "novel": verdict.novel, "kind": verdict.kind,
                               "match": verdict.match.id, "top": top.id}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, cwd=REPO)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer == {"count": 6, "novel": False, "kind": "semantic", "match": "night1/0002", "top": "night1/0006"}


def test_adding_the_same_experiment_again_replaces_it(tmp_path, minilm):
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        records = make_records()
        for record in records:
            memory.add(record)
        seq_before = memory.find("night1/0004").seq
        records[3].status, records[3].lesson = "discard", "GELU ran but did not help."
        memory.add(records[3])
        again = memory.find("0004")
        assert memory.count() == len(records)
        assert (again.status, again.lesson, again.seq) == ("discard", "GELU ran but did not help.", seq_before)
        assert memory.next_seq == len(records)


def test_records_from_two_runs_with_the_same_ids_are_kept_apart(tmp_path, minilm):
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        for record in make_records("night1") + make_records("night2"):
            memory.add(record)
        assert memory.count() == 12
        assert memory.find("night2/0003").tag == "night2"


def test_bad_records_are_refused_with_a_clear_error(tmp_path):
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        with pytest.raises(ValueError, match="unknown status 'kept'"):
            memory.add(ExperimentRecord(exp_id="0001", tag="t", status="kept", description="x"))
        with pytest.raises(ValueError, match="needs exp_id and tag"):
            memory.add(ExperimentRecord(exp_id="", tag="t", status="keep", description="x"))


def test_a_second_writer_is_refused(tmp_path):
    path = tmp_path / "mem"
    with ExperimentMemory.open(path):
        script = textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(REPO)!r})
            from pathlib import Path
            from memory import ExperimentMemory, MemoryLockedError
            try:
                ExperimentMemory.open(Path({str(path)!r}))
            except MemoryLockedError as exc:
                print("refused:", exc)
        """)
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert "refused:" in out.stdout, out.stderr
        assert "already open for writing by pid" in out.stdout and "read_only=True" in out.stdout
        with pytest.raises(MemoryLockedError):  # the same process opening it twice is refused too
            ExperimentMemory.open(path)
    ExperimentMemory.open(path).close()  # released on close


def test_read_only_snapshot_while_the_writer_is_open(tmp_path, minilm):
    path = tmp_path / "mem"
    with ExperimentMemory.open(path) as writer:
        for record in make_records():
            writer.add(record)
        with ExperimentMemory.open(path, read_only=True) as reader:
            assert reader.count() == 6
            assert reader.search("deeper network", k=1)[0].id == "night1/0003"
            with pytest.raises(Exception, match="read-only"):
                reader.add(make_records()[0])
        writer.add(ExperimentRecord(exp_id="0007", tag="night1", status="discard", description="Tie embeddings"))
        assert writer.count() == 7


def test_read_only_on_a_missing_store_says_so(tmp_path):
    with pytest.raises(MemoryNotFoundError, match="no experiment memory"):
        ExperimentMemory.open(tmp_path / "nothing", read_only=True)
    assert not (tmp_path / "nothing").exists()


def test_missing_store_is_rebuilt_from_parquet(tmp_path, minilm, caplog):
    parquet = write_parquet(tmp_path, make_records())
    with caplog.at_level(logging.WARNING, logger="memory"):
        memory = ExperimentMemory.open(tmp_path / "mem", rebuild_from=[parquet])
    with memory:
        assert memory.count() == 6
        assert any("no store" in n for n in memory.notices)
        assert "added 6 experiment(s)" in caplog.text


def test_experiments_the_store_lacks_are_added_on_open(tmp_path, minilm):
    records = make_records()
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        for record in records[:2]:
            memory.add(record)
    parquet = write_parquet(tmp_path, records)
    with ExperimentMemory.open(tmp_path / "mem", rebuild_from=[parquet]) as memory:
        assert memory.count() == 6
        assert memory.notices == ["memory: added 4 experiment(s) from results.parquet that the store lacked"]
        assert [memory.find(r.exp_id).seq for r in records] == list(range(6))


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["sqlite", "index"])
def test_corrupted_store_is_moved_aside_and_rebuilt(tmp_path, minilm, caplog, damage):
    records = make_records()
    parquet = write_parquet(tmp_path, records)
    path = tmp_path / "mem"
    with ExperimentMemory.open(path, rebuild_from=[parquet]) as memory:
        assert memory.count() == 6
        if damage == "index":  # Chroma writes its index files once enough records arrived (sync_threshold)
            filler = [ExperimentRecord(exp_id=f"f{i}", tag="filler", status="discard", description=f"filler {i}")
                      for i in range(1100)]
            vectors = np.random.default_rng(1).normal(size=(len(filler), 384)).astype(np.float32)
            memory.add_many(filler, vectors=vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    chroma = path / "chroma"
    targets = [chroma / "chroma.sqlite3"] if damage == "sqlite" else list(chroma.glob("*/*.bin"))
    assert targets
    for target in targets:
        target.write_bytes(np.random.default_rng(0).bytes(4096))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="memory"):
        memory = ExperimentMemory.open(path, rebuild_from=[parquet])
    with memory:
        assert memory.count() == 6  # the filler was never in results.parquet: gone with the damaged store
        assert memory.check_idea(PARAPHRASE, threshold=DEFAULT_THRESHOLD).match.id == "night1/0002"
    assert "could not be used" in caplog.text and "the damaged store is kept at" in caplog.text
    assert len(list(path.glob("chroma.corrupt-*"))) == 1


def test_rebuild_from_parquet_gives_the_same_answers(tmp_path, minilm):
    records = make_records("night1") + make_records("night2")[:3]
    queries = [PARAPHRASE, idea("Swap squared ReLU for GELU", "smoother activation"),
               idea("Make the network deeper: 8 to 10 layers", "more capacity"), idea("Use label smoothing 0.1")]

    def answers(memory: ExperimentMemory) -> list:
        verdicts = [memory.check_idea(q, threshold=DEFAULT_THRESHOLD) for q in queries]
        return ([(v.novel, v.kind, v.match.id if v.match else None) for v in verdicts]
                # experiments of the two runs share texts: order ties by id, and cut below the tie at rank 4
                + [sorted((-round(h.similarity, 4), h.id) for h in memory.search(q.title, k=5))[:3] for q in queries]
                + [memory.check_diff("hash-night1-0002").match.id, memory.recall("learning rate", tag="night1")])

    with ExperimentMemory.open(tmp_path / "direct") as memory:
        for record in records:
            memory.add(record)
        direct = answers(memory)
    parquets = [write_parquet(tmp_path, records[:6]), write_parquet(tmp_path, records[6:])]
    with ExperimentMemory.open(tmp_path / "rebuilt") as memory:
        memory.add(make_records("stale")[0])  # rebuild drops what the Parquet files do not hold
        assert memory.rebuild(parquets) == len(records)
        rebuilt = answers(memory)
    assert rebuilt == direct
    assert direct[0][:2] == (False, "semantic")


def test_unreadable_parquet_is_skipped_with_a_notice(tmp_path, minilm):
    good = write_parquet(tmp_path, make_records())
    bad = tmp_path / "broken.parquet"
    bad.write_text("not parquet")
    with ExperimentMemory.open(tmp_path / "mem", rebuild_from=[bad, good]) as memory:
        assert memory.count() == 6
        assert any("skipped" in n and "broken.parquet" in n for n in memory.notices)


def test_importing_memory_registers_the_embedding_function():
    out = subprocess.run(
        [sys.executable, "-c", "import memory; from chromadb.utils.embedding_functions import "
         "known_embedding_functions as k; print('autoresearch-minilm' in k)"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert out.stdout.strip() == "True", out.stderr
