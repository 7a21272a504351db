"""Recall for the hypothesis role (token budget, bounded queries) and the `autoresearch memory` commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from agents import memory_cli
from agents.memory_cli import app
from agents.record.results import ExperimentRecord, ResultsStore
from memory import ExperimentMemory
from memory.embeddings import load_minilm
from memory.recall import CHARS_PER_TOKEN

STATUS_CYCLE = ["discard", "discard", "keep", "crash", "veto", "discard", "skipped"]


@pytest.fixture(scope="session")
def minilm():
    return load_minilm()


def night(tag: str, n: int, start: int = 0) -> list[ExperimentRecord]:
    records = []
    for i in range(n):
        status = STATUS_CYCLE[i % len(STATUS_CYCLE)]
        records.append(ExperimentRecord(
            exp_id=f"{i:04d}", tag=tag, status=status, description=f"MATRIX_LR 0.04 -> 0.0{i % 9 + 1}",
            rationale="Tune the matrix learning rate.", val_bpb=1.0 - 0.001 * i if status != "crash" else None,
            delta=-0.001 if status == "keep" else 0.002, lesson=f"lesson of {tag} {i}" if status != "crash" else "",
            error="CUDA out of memory" if status == "crash" else "", started_at=f"2026-11-{20 + start}T{i % 24:02d}:00:00",
        ))
    return records


@pytest.fixture(scope="module")
def big_memory(tmp_path_factory, minilm):
    """3,000 experiments over 30 nights, stored with random vectors (the bulk path), plus a few real ones.
    Built once for the module: the tests only recall from it."""
    rng = np.random.default_rng(0)
    with ExperimentMemory.open(tmp_path_factory.mktemp("big") / "mem") as memory:
        for k in range(30):
            records = night(f"n{k:02d}", 100, start=k % 8)
            vectors = rng.normal(size=(len(records), 384)).astype(np.float32)
            memory.add_many(records, vectors=vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
        memory.add(ExperimentRecord(exp_id="9001", tag="n29", status="discard",
                                    description="Replace ReLU squared with GELU in the MLP",
                                    rationale="Smoother activation.", val_bpb=1.02, lesson="GELU was slower per step."))
        yield memory


@pytest.mark.slow
@pytest.mark.parametrize("budget", [200, 600, 1500])
def test_recall_fits_the_budget_at_scale(big_memory, budget):
    text = big_memory.recall("try a different activation function", token_budget=budget)
    assert len(text) / CHARS_PER_TOKEN <= budget
    assert "Memory: 3001 earlier experiments" in text
    assert "Replace ReLU squared with GELU" in text  # the nearest past idea is found among 3,000
    if budget >= 600:
        assert "Kept changes in run n29" in text and "Recent failures" in text


@pytest.mark.slow
def test_recall_sections_are_ordered_and_scoped_to_the_run(big_memory):
    text = big_memory.recall("learning rate", token_budget=4000, tag="n05")
    chain = text.split("Kept changes in run n05 (oldest first):\n")[1].split("\n\n")[0].splitlines()
    kept_ids = [line.split()[2] for line in chain if line.startswith("- [keep]")]
    assert kept_ids and all(i.startswith("n05/") for i in kept_ids)
    assert kept_ids == sorted(kept_ids)  # oldest first
    failures = text.split("Recent failures and their lessons (newest first):\n")[1].splitlines()
    failure_ids = [line.split()[2] for line in failures if line.startswith("- [")]
    assert failure_ids == sorted(failure_ids, reverse=True) and all(i.startswith("n05/") for i in failure_ids)
    assert "[crash] n05/0003" in text and "CUDA out of memory" in text  # a crash shows why it failed
    best = min(r.val_bpb for r in night("n05", 100) if r.status == "keep")
    assert f"Best so far in run n05: val_bpb {best:.6f}" in text  # lowest kept val_bpb of that run


def test_recall_on_an_empty_memory(tmp_path):
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        assert "Memory is empty" in memory.recall("anything")


# ------------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def repo(tmp_path, minilm, monkeypatch):
    """A repository with two runs' results and a crew.yaml pointing memory at a custom path."""
    ResultsStore(tmp_path / "runs" / "n1").write_all(night("n1", 7))
    gelu = ExperimentRecord(exp_id="0007", tag="n2", status="discard", description="Replace ReLU squared with GELU",
                            rationale="A smoother activation.", val_bpb=1.01, lesson="GELU is slower per step.")
    ResultsStore(tmp_path / "runs" / "n2").write_all(night("n2", 7) + [gelu])
    (tmp_path / "crew.yaml").write_text("name: test\nmemory:\n  path: state/memory\n")
    monkeypatch.chdir(tmp_path)
    # rich tables: one row per experiment. A console fixes its width when it is made (from COLUMNS, which a
    # parallel test worker sets to its parent's terminal width), so the command gets a wide one of its own.
    monkeypatch.setattr(memory_cli, "console", Console(width=250))
    return tmp_path


def flat(result) -> str:
    return " ".join(result.output.split())


def test_cli_rebuild_stats_search(repo):
    runner = CliRunner()
    built = runner.invoke(app, ["rebuild"])
    assert built.exit_code == 0, built.output
    assert "rebuilt" in flat(built) and "15 experiments from 2 results file(s)" in flat(built)
    assert (repo / "state" / "memory" / "chroma").is_dir()

    stats = runner.invoke(app, ["stats"])
    assert stats.exit_code == 0, stats.output
    best_n1 = min(r.val_bpb for r in night("n1", 7) if r.status == "keep")
    assert "15 experiments" in flat(stats) and f"│ n1 │ 7 │ {best_n1:.6f} │" in flat(stats)

    found = runner.invoke(app, ["search", "try a GELU activation", "-k", "3"])
    assert found.exit_code == 0, found.output
    rows = [line for line in found.output.splitlines() if line.startswith("│")]
    assert len(rows) == 3 and "n2/0007" in rows[0] and "GELU is slower per step." in rows[0]


def test_cli_reads_while_the_loop_writes_but_cannot_rebuild(repo):
    runner = CliRunner()
    with ExperimentMemory.open(repo / "state" / "memory", rebuild_from=[repo / "runs/n1/results.parquet"]):
        stats = runner.invoke(app, ["stats"])
        assert stats.exit_code == 0 and "7 experiments" in flat(stats)
        refused = runner.invoke(app, ["rebuild"])
        assert refused.exit_code == 1
        assert "already open for writing" in flat(refused)


def test_cli_explains_a_missing_memory_and_missing_files(repo):
    runner = CliRunner()
    missing = runner.invoke(app, ["stats", "--path", str(repo / "nowhere")])
    assert missing.exit_code == 1 and "no experiment memory" in flat(missing)
    bad = runner.invoke(app, ["rebuild", str(repo / "runs/n9/results.parquet")])
    assert bad.exit_code == 1 and "no such results file" in flat(bad)


# ------------------------------------------------------------------------------------- map of what was tried


def test_every_constant_ever_tried_appears_within_the_budget_at_10k():
    """10,000 experiments over 21 constants, 60 techniques and hundreds of values: one line per constant."""
    from memory.changes import Changes
    from memory.index import Entry, MemoryIndex
    from memory.triedmap import render

    constants = [f"KNOB_{k:02d}" for k in range(21)]
    index = MemoryIndex()
    tried = 0
    for i in range(10_000):
        status = ["discard", "discard", "keep", "crash"][i % 4]
        if i % 3:
            name, tried = constants[tried % len(constants)], tried + 1
            change = Changes({name: {"CUDA": str(1 + (i % 400) / 100)}}, source="fingerprint")
        else:
            change = Changes(parts={f"Part{i % 60}.forward": f"idea {i % 50}"})
        index.add(Entry(f"t/{i}", status, i, "t", change.to_json(), delta=0.001 * ((i % 7) - 3), lesson=f"lesson {i}"))
    for budget_tokens in (300, 1500):
        text = render(index.tried_targets("CUDA"), int(budget_tokens * 0.4 * CHARS_PER_TOKEN))
        assert all(name in text for name in constants)
        assert len(text) <= budget_tokens * CHARS_PER_TOKEN * 0.4 * 1.05
    assert "- Part12.forward: 5 values" in render(index.tried_targets("CUDA"), 6000)


def test_recall_shows_the_map_and_a_real_query(tmp_path, minilm):
    base = (Path(__file__).resolve().parents[1] / "train.py").read_text()
    from memory.fingerprint import fingerprint

    with ExperimentMemory.open(tmp_path / "mem", device="cuda") as memory:
        memory.add(ExperimentRecord(exp_id="0000", tag="r", status="baseline", description="baseline", val_bpb=1.0))
        for i, value in enumerate(("0.03", "0.05", "0.06")):
            new = base.replace("MATRIX_LR = 0.04 if CUDA", f"MATRIX_LR = {value} if CUDA")
            memory.add(ExperimentRecord(exp_id=f"{i + 1:04d}", tag="r", status="keep" if value == "0.05" else "discard",
                                        description=f"Muon LR {value}", val_bpb=1.0, delta=-0.002 if value == "0.05"
                                        else 0.001, fingerprint=fingerprint(base, new).to_json()))
        text = memory.recall("", token_budget=600, tag="r")
    assert "- MATRIX_LR (now 0.04): 0.03 discard +0.0010 | 0.05 keep -0.0020 | 0.06 discard +0.0010" in text
    assert "nearest to ''" not in text and "nearest to the current best's changes ('Muon LR 0.05')" in text


def test_stats_show_the_best_kept_result_else_the_baseline_mean(tmp_path, minilm):
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        for i, bpb in enumerate((1.00, 0.97, 1.03)):
            memory.add(ExperimentRecord(exp_id=f"b{i}", tag="a", status="baseline", description="baseline", val_bpb=bpb))
            memory.add(ExperimentRecord(exp_id=f"b{i}", tag="b", status="baseline", description="baseline", val_bpb=bpb))
        memory.add(ExperimentRecord(exp_id="0001", tag="a", status="keep", description="x", val_bpb=0.99))
        memory.add(ExperimentRecord(exp_id="0002", tag="a", status="discard", description="y", val_bpb=0.95))
        best = memory.stats()["best_val_bpb_by_tag"]
    assert best["a"] == pytest.approx(0.99) and best["b"] == pytest.approx(1.0)  # not the lucky 0.97 seed


def test_cli_check_explains_the_verdict(repo):
    runner = CliRunner()
    assert runner.invoke(app, ["rebuild"]).exit_code == 0
    # 0.02: a value neither device profile of train.py has, so the idea changes MATRIX_LR on both
    out = runner.invoke(app, ["check", "Lower the matrix LR to 0.02"])
    assert out.exit_code == 0, out.output
    assert "changes (read from its words): MATRIX_LR = 0.02" in flat(out) and "refused" in flat(out)
    assert "n1/0001" in flat(out) or "n2/0001" in flat(out)
    declared = runner.invoke(app, ["check", "A calmer optimiser", "--change", "MATRIX_LR=0.04 / 2"])
    assert declared.exit_code == 0 and "changes (declared): MATRIX_LR = 0.02" in flat(declared)
    assert "refused" in flat(declared)
    fresh = runner.invoke(app, ["check", "Use a cosine learning-rate schedule"])
    assert fresh.exit_code == 0 and "admitted" in flat(fresh)
    unsure = runner.invoke(app, ["check", "GELU instead of the squared ReLU in the MLP"])
    assert unsure.exit_code == 0 and "admitted" in flat(unsure) and "n2/0007" in flat(unsure)
    assert "--change" in flat(unsure) and "--llm" in flat(unsure)  # says what would decide it
    bad = runner.invoke(app, ["check", "x", "--change", "no separator"])
    assert bad.exit_code == 2 and "NAME=VALUE" in flat(bad)
    empty = runner.invoke(app, ["check", "  "])
    assert empty.exit_code == 2 and "IDEA is empty" in flat(empty)
    missing = runner.invoke(app, ["check", "x", "--train-py", str(repo / "nope.py")])
    assert missing.exit_code == 2 and "cannot read --train-py" in flat(missing)
