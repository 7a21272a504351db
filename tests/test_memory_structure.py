"""Structured changes (memory.changes), the English reader (memory.reader), the index kept beside the store,
records read against their own base commit, and the memory shared by many preparing threads at once."""

from __future__ import annotations

import gc
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

from agents import trainpy
from agents.crew.policy import OfflinePolicy
from agents.crew.schemas import Idea
from agents.record.results import ExperimentRecord, ResultsStore
from memory import ExperimentMemory
from memory.changes import Changes, declared, mismatch, parts_of, profile_of, same
from memory.embeddings import load_minilm
from memory.fingerprint import fingerprint, fingerprint_or_none
from memory.reader import read

REPO = Path(__file__).resolve().parents[1]
TRAIN = (REPO / "train.py").read_text()


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


# ------------------------------------------------------------------------------------------ declared changes


def test_declared_values_are_evaluated_per_profile():
    cpu = trainpy.read(TRAIN).values(trainpy.read(TRAIN).profile("cpu").name)  # the CPU profile's values as they are
    lr, batch = cpu["MATRIX_LR"], cpu["TOTAL_BATCH_SIZE"]
    change = declared([{"constant": "MATRIX_LR", "value": f"0.6 * 0.05 if CUDA else {lr!r}"},
                       {"constant": "TOTAL_BATCH_SIZE", "value": f"2**18 if CUDA else {batch // 2} * 2"}], TRAIN)
    # only where the value moves: the CPU profile keeps its MATRIX_LR and its batch
    assert change.constants == {"MATRIX_LR": {"CUDA": "0.03"}, "TOTAL_BATCH_SIZE": {"CUDA": "262144"}}
    assert same(change, declared([{"constant": "TOTAL_BATCH_SIZE", "value": f"262144 if CUDA else {batch}"},
                                  {"constant": "MATRIX_LR", "value": f"0.03 if CUDA else {lr!r}"}], TRAIN), "CUDA")[0]
    assert not same(change, declared([{"constant": "MATRIX_LR", "value": "0.03"}], TRAIN), "CUDA")[0]
    with pytest.raises(SyntaxError):
        declared([{"constant": "DEPTH", "value": "ten layers"}], TRAIN)


def test_mismatch_names_what_the_edit_did_instead():
    wanted = declared([{"constant": "MLP_RATIO", "value": "3"}], TRAIN)
    depth = fingerprint(TRAIN, TRAIN.replace("DEPTH = 8 if CUDA", "DEPTH = 10 if CUDA"))
    assert mismatch(wanted, depth, "CUDA") == ["the idea sets MLP_RATIO = 3; the edit leaves MLP_RATIO unchanged",
                                               "the idea does not change DEPTH; the edit sets it to 10"]
    right = fingerprint(TRAIN, TRAIN.replace("MLP_RATIO = 4", "MLP_RATIO = 6 // 2"))
    assert mismatch(wanted, right, "CUDA") == []
    gelu = fingerprint(TRAIN, TRAIN.replace("F.relu(self.c_fc(x)).square()", "F.gelu(self.c_fc(x))"))
    assert mismatch(wanted, gelu, "CUDA")[-1] == "the idea only sets constants; the edit also changes the code of " \
                                                 "MLP.forward"
    part = declared([{"part": "MLP", "technique": "GELU"}], TRAIN)
    assert mismatch(part, gelu, "CUDA") == []  # MLP.forward is a part of MLP
    assert "the idea rewrites MLP; the edit leaves it unchanged" in mismatch(part, right, "CUDA")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_every_offline_move_declares_exactly_what_its_edit_does(device):
    """The policy fills `changes` from its move (no title round trip); its own edit never departs from them."""
    policy = OfflinePolicy()
    moves = policy.options(TRAIN, [], device)
    assert len(moves) > 20 and {m.kind for m in moves} == {"knob", "feature", "removal"}
    profile = profile_of(TRAIN, device)
    for move in moves:
        idea = move.idea()
        assert idea.changes, move.title
        edit = move.edit(TRAIN)
        new = TRAIN
        for block in edit.blocks:
            new = new.replace(block.search, block.replace, 1)
        assert mismatch(declared(idea.changes, TRAIN), fingerprint(TRAIN, new), profile) == [], move.title


# ------------------------------------------------------------------------------------------------ reader


@pytest.mark.parametrize("title, expected", [
    ("MLP_RATIO 4 -> 3", {"MLP_RATIO": "3"}),
    ("mlp ratio from 4 to 3", {"MLP_RATIO": "3"}),
    ("Set the warmdown to 70%", {"WARMDOWN_RATIO": "0.7"}),
    ("Halve EMBEDDING_LR", {"EMBEDDING_LR": "0.3"}),
    ("DEPTH = twelve", {"DEPTH": "12"}),
    ("ROPE_BASE five hundred thousand", {"ROPE_BASE": "500000"}),
    ("TOTAL_BATCH_SIZE 2**19 -> 2**18", {"TOTAL_BATCH_SIZE": "262144"}),
    ("ADAM_BETAS = (0.9, 0.95)", {"ADAM_BETAS": "(0.9, 0.95)"}),
    ("matrix learning rate 0.03 and warmdown ratio 0.6", {"MATRIX_LR": "0.03", "WARMDOWN_RATIO": "0.6"}),
    ("HEAD_DIM 64 instead of 128", {"HEAD_DIM": "64"}),
    ("Raise the embedding LR by 50%", {"EMBEDDING_LR": "0.9"}),
    ("Lower MATRIX_LR by a factor of 2", {"MATRIX_LR": "0.02"}),
    ("Increase the softcap by 10", {"LOGIT_SOFTCAP": "25"}),  # its head word alone: no other constant has it
    ("Weight decay 0.1 on the Muon matrices", {"WEIGHT_DECAY": "0.1"}),  # train.py's comment says where it acts
])
def test_the_reader_takes_constants_and_values_it_is_sure_of(title, expected):
    change = read(title, "", TRAIN)
    assert change.complete and change.on("CUDA") == expected, change


@pytest.mark.parametrize("title", [
    "Lower the learning rate to 0.03",  # which of the four learning rates?
    "MATRIX_LR 0.03 and add dropout",  # a second change it does not understand
    "DEPTH 10 or 12",  # two values
    "Increase DEPTH",  # no value
    "ADAM_BETAS 0.99",  # a number for a pair
    "Weight decay 0.1 on the embeddings",  # not where train.py's weight decay acts
    "Change the embedding LR by 50%",  # which way?
])
def test_the_reader_says_when_it_is_not_sure(title):
    assert not read(title, "", TRAIN).complete


def test_readings_that_leave_the_same_words_unexplained_still_compare():
    attention = read("Softcap the attention scores at 50", "", TRAIN)
    assert same(read("softcap attention scores 50", "", TRAIN), attention, "CUDA")[0]
    assert not same(read("Softcap the output logits at 50", "", TRAIN), attention, "CUDA")[0]


def test_the_reader_keeps_a_technique_in_words_and_its_switch():
    assert read("turn QK-norm off", "", TRAIN).words == {"qk", "norm", "off"}
    assert read("QK-norm: on -> off", "", TRAIN).words == {"qk", "norm", "off"}  # the old state is not the change
    assert read("Use GELU instead of squared ReLU", "", TRAIN).words == {"gelu"}
    # the rationale gives the value the title leaves out, for a constant the title names
    assert read("Lower MATRIX_LR", "we go to 0.03 because MATRIX_LR = 0.03 is calmer", TRAIN).on("CUDA") == \
        {"MATRIX_LR": "0.03"}


# ------------------------------------------------------------------------------------- the index on disk


def _fill(memory: ExperimentMemory, n: int = 5) -> None:
    for i in range(n):
        new = TRAIN.replace("MLP_RATIO = 4", f"MLP_RATIO = {i + 5}")
        memory.add(ExperimentRecord(exp_id=f"{i:04d}", tag="n", status="discard", description=f"MLP_RATIO {i + 5}",
                                    val_bpb=1.0, fingerprint=fingerprint(TRAIN, new).to_json(),
                                    changes=json.dumps([{"constant": "MLP_RATIO", "value": str(i + 5)}])))


def test_the_index_is_kept_beside_the_store_and_opening_scans_nothing(tmp_path, minilm, monkeypatch):
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        _fill(memory)
        memory.index()
        _fill(memory, 7)  # written after the index exists: appended to the file
    assert (tmp_path / "mem" / "index.jsonl").exists()

    def no_scan(self):
        raise AssertionError("the index was rebuilt by a scan")

    with ExperimentMemory.open(tmp_path / "mem") as memory:  # written to before its index is first used
        memory.add(ExperimentRecord(exp_id="0100", tag="n", status="baseline", description="baseline", val_bpb=1.0))
    with monkeypatch.context() as patch:
        patch.setattr(ExperimentMemory, "_scan", no_scan)
        with ExperimentMemory.open(tmp_path / "mem") as memory:
            assert len(memory.index()) == 8
            assert not memory.check_idea(Idea(title="x", rationale="", expected_effect="", category="other",
                                              changes=[{"constant": "MLP_RATIO", "value": "11"}])).novel
        with ExperimentMemory.open(tmp_path / "mem", read_only=True) as snapshot:
            assert len(snapshot.index()) == 8
    (tmp_path / "mem" / "index.jsonl").write_text('{"index": 1}\nnot json\n')  # damaged: rebuilt with one scan
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        assert len(memory.index()) == 8


def test_readings_are_redone_when_the_reader_changes(tmp_path, minilm, monkeypatch):
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        memory.add(ExperimentRecord(exp_id="0001", tag="n", status="discard", description="DEPTH 8 -> 10",
                                    val_bpb=1.0))
        assert memory.hits(["n/0001"])[0].changes
    monkeypatch.setattr("memory.store.READER_VERSION", "test-next")
    monkeypatch.setattr("memory.bases.READER_VERSION", "test-next")
    monkeypatch.setattr("memory.store.read", lambda title, rationale, text: Changes({"DEPTH": {"CUDA": "99"}}))
    monkeypatch.setattr("memory.bases.read", lambda title, rationale, text: Changes({"DEPTH": {"CUDA": "99"}}))
    with ExperimentMemory.open(tmp_path / "mem", device="cuda") as memory:
        assert memory.index().change("n/0001").on("CUDA") == {"DEPTH": "99"}  # read again by the new reader
    header = json.loads((tmp_path / "mem" / "index.jsonl").read_text().splitlines()[0])
    assert header["reader"] == "test-next"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_records_from_parquet_are_read_against_their_own_base_commit(tmp_path, minilm, caplog):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@t")
    _git(repo, "config", "user.name", "t")
    (repo / "train.py").write_text("EMBEDDING_LR = 0.6\nDEPTH = 8\n")
    _git(repo, "add", "train.py")
    _git(repo, "commit", "-qm", "start")
    first = _git(repo, "rev-parse", "HEAD")
    (repo / "train.py").write_text("EMBEDDING_LR = 0.2\nDEPTH = 8\n")  # the file moved on since
    _git(repo, "commit", "-qam", "later")
    records = [ExperimentRecord(exp_id="0001", tag="n", status="discard", description="Halve EMBEDDING_LR",
                                val_bpb=1.0, parent_commit=first, started_at="2026-01-01T00:00:00"),
               ExperimentRecord(exp_id="0002", tag="n", status="discard", description="Halve DEPTH", val_bpb=1.0,
                                parent_commit="f" * 40, started_at="2026-01-01T00:01:00")]
    ResultsStore(repo / "runs" / "n").write_all(records)
    with ExperimentMemory.open(repo / ".autoresearch" / "memory", rebuild_from=[repo / "runs/n/results.parquet"],
                               repo=repo) as memory:
        assert memory.index().change("n/0001").on("default") == {"EMBEDDING_LR": "0.3"}  # half of 0.6, not of 0.2
        assert memory.index().change("n/0002").on("default") == {"DEPTH": "4"}  # its commit is gone: today's file
        assert any("read against the current train.py" in n and "1 base commit" in n for n in memory.notices)


# ------------------------------------------------------------------------------------------- many threads


class _Garbage:
    """A reference cycle whose finalizer lets other threads run: collected in the middle of an `ast.parse`, it hands
    the interpreter to another thread inside the parser (CPython gh-106905), as CrewAI's objects do in a real run."""

    def __init__(self) -> None:
        self.cycle = self

    def __del__(self) -> None:
        time.sleep(0)


@pytest.fixture
def collecting_often():
    threshold = gc.get_threshold()
    gc.set_threshold(100)
    yield
    gc.set_threshold(*threshold)


def test_many_preparing_threads_share_the_memory_safely(tmp_path, minilm, collecting_often):
    """Sixteen threads gate ideas (declared and in words), fingerprint edits of distinct train.py versions and
    claim changes while the writer adds records and garbage is collected mid-parse: no error, and every answer
    equals the one-thread answer."""
    versions = [TRAIN.replace("ASPECT_RATIO = 64", f"ASPECT_RATIO = {64 + k}") for k in range(12)]
    ideas = [Idea(title=f"MLP ratio {k}", rationale="", expected_effect="", category="other",
                  changes=[{"constant": "MLP_RATIO", "value": str(k)}] if k % 2 else []) for k in range(5, 12)]
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        _fill(memory, 4)
        expected = [memory.check_idea(i, train_py=TRAIN).novel for i in ideas]
        errors: list[BaseException] = []
        answers: list[list[bool]] = []
        start = threading.Barrier(17)

        def prepare(k: int) -> None:
            try:
                start.wait()
                for round_ in range(3):
                    _ = [_Garbage() for _ in range(50)]
                    base = versions[(k + round_) % len(versions)]
                    assert "MLP.forward" in parts_of(base) and profile_of(base, "cuda") == "CUDA"
                    assert declared([{"constant": "DEPTH", "value": f"{k} + 1"}], base).constants
                    assert fingerprint_or_none(base, base.replace("DEPTH = 8", f"DEPTH = {k + 20}")) is not None
                    memory.claim(f"t/{k}-{round_}", base, base.replace("NS_STEPS = 5", f"NS_STEPS = {k + 6}"), "x")
                    answers.append([memory.check_idea(i, train_py=TRAIN).novel for i in ideas])
            except BaseException as exc:  # noqa: BLE001 (collected and reported below)
                errors.append(exc)

        threads = [threading.Thread(target=prepare, args=(k,)) for k in range(16)]
        for thread in threads:
            thread.start()
        start.wait()
        for i in range(20):  # the writer keeps adding what other runs tried
            memory.add(ExperimentRecord(exp_id=f"w{i}", tag="w", status="discard", description=f"NS_STEPS {i}",
                                        val_bpb=1.0, changes=json.dumps([{"constant": "NS_STEPS", "value": str(i)}])))
        for thread in threads:
            thread.join()
    assert errors == []
    assert answers and all(a == expected for a in answers)
