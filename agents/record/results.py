"""Results of a run: one `ExperimentRecord` per experiment, in results.tsv and results.parquet.

results.tsv starts with upstream autoresearch's columns (commit, val_bpb, memory_gb, status, description) so its
tooling keeps working, then num_steps and training_seconds (empty for what never trained); a refusal's rule is
appended to its description ("... [veto: only-train-py]").
results.parquet holds every field. The Parquet file is the history everything else (memory, reports,
comparisons) can be rebuilt from. Rows are kept in the order experiments were decided, the baselines first, so an
idea refused while a baseline trained still comes after the baselines.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

UPSTREAM_TSV_COLUMNS = ("commit", "val_bpb", "memory_gb", "status", "description")
# upstream's columns first, so its tooling keeps working; then what says whether a number can be trusted
TSV_COLUMNS = (*UPSTREAM_TSV_COLUMNS, "num_steps", "training_seconds")


class Status(StrEnum):
    """What became of an experiment (a str: records, tables and memory hold the plain value)."""

    BASELINE = "baseline"  # a run of the starting code, repeated to estimate noise
    KEEP = "keep"
    DISCARD = "discard"
    CRASH = "crash"  # trained and crashed (or gave no result)
    VETO = "veto"  # refused before any GPU time by the guard or the reviewer
    REPEAT = "repeat"  # refused by the novelty gate
    SKIPPED = "skipped"  # the coder gave no edit that applies and compiles
    ERROR = "error"  # preparing it failed in the harness itself (not the crew's refusal); the run went on


STATUSES = tuple(Status)
TRAINED = (Status.KEEP, Status.DISCARD, Status.CRASH)
REFUSED = (Status.VETO, Status.REPEAT, Status.SKIPPED, Status.ERROR)  # never trained: no val_bpb


@dataclass
class ExperimentRecord:
    exp_id: str
    tag: str
    status: str
    description: str
    config: str = "default"
    commit: str = ""
    parent_commit: str = ""
    val_bpb: float | None = None
    best_bpb_before: float | None = None
    delta: float | None = None  # val_bpb - best_bpb_before (negative is better)
    memory_gb: float = 0.0
    category: str = ""
    rationale: str = ""
    expected_effect: str = ""
    diff: str = ""
    diff_hash: str = ""
    fingerprint: str = ""  # the change canonically (memory.fingerprint): constants old -> new, code units changed
    repeat_of: str = ""  # for a refused repeat: the experiment it repeats (<tag>/<exp_id>)
    changes: str = ""  # the idea's declared changes, JSON: [{"constant", "value"} | {"part", "technique"}, ...]
    lines_added: int = 0
    lines_removed: int = 0
    review_verdict: str = ""
    review_reasons: str = ""
    guard_violations: str = ""
    decision_reason: str = ""
    kept_as: str = ""  # for a keep: "gain" (better beyond the noise) or "simpler" (shorter, equal within noise)
    explanation: str = ""
    lesson: str = ""
    seed: int = 42
    training_seconds: float | None = None
    wall_seconds: float | None = None
    num_steps: int | None = None
    num_params_M: float | None = None
    mfu_percent: float | None = None
    total_tokens_M: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    usd: float = 0.0
    started_at: str = ""
    finished_at: str = ""
    log_path: str = ""
    error: str = ""
    degraded_roles: str = ""  # "; "-joined: which roles run on less than their model, since when, why
    sandbox: str = ""  # the sandbox train.py ran in (bwrap | landlock | none); empty when it never ran
    eval_seconds: float | None = None  # the evaluator's own duration, from its record
    rule: str = ""  # what refused it before training: guard rules, "reviewer", "novelty-exact" ...
    faults: str = ""  # JSON {role: {kind: n}}: provider faults survived while preparing this experiment
    node: str = ""  # where it trained: the machine's name
    gpu: str = ""  # and the device there ("cpu", or the GPU id)
    extra: dict = field(default_factory=dict)  # not persisted; scratch space for the loop

    def tsv_row(self) -> list[str]:
        bpb = f"{self.val_bpb:.6f}" if self.val_bpb is not None else "0.000000"
        # one line per experiment: tabs/newlines in free text would break the TSV
        desc = " ".join(self.description.split())
        if self.rule:
            desc += f" [{self.status}: {self.rule}]"
        steps = "" if self.num_steps is None else str(self.num_steps)
        seconds = "" if self.training_seconds is None else f"{self.training_seconds:.1f}"
        return [self.commit[:7], bpb, f"{self.memory_gb:.1f}", self.status, desc, steps, seconds]


PERSISTED_FIELDS = tuple(f.name for f in dataclasses.fields(ExperimentRecord) if f.name != "extra")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class ResultsStore:
    """results.tsv + results.parquet for one run directory (`runs/<tag>/`)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.tsv_path = self.run_dir / "results.tsv"
        self.parquet_path = self.run_dir / "results.parquet"

    def load(self) -> list[ExperimentRecord]:
        if not self.parquet_path.exists():
            return []
        table = pq.read_table(self.parquet_path)
        known = set(PERSISTED_FIELDS)
        rows = table.to_pylist()
        return [ExperimentRecord(**{k: v for k, v in row.items() if k in known}) for row in rows]

    def append(self, record: ExperimentRecord) -> None:
        """Add a record, or replace the one with its exp_id in place; both files are rewritten atomically.

        Rows stand in the order experiments were decided, the baselines first: an idea refused while a baseline
        still trained is decided only against a known start, so it comes after the baselines.
        """
        records = self.load()
        at = next((i for i, r in enumerate(records) if r.exp_id == record.exp_id), None)
        if at is None:
            records.append(record)
        else:
            records[at] = record
        self.write_all(sorted(records, key=lambda r: not _is_baseline(r)))  # stable: decision order otherwise

    def write_all(self, records: list[ExperimentRecord]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        table = records_to_table(records)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        _atomic_write_bytes(self.parquet_path, sink.getvalue().to_pybytes())
        lines = ["\t".join(TSV_COLUMNS)] + ["\t".join(r.tsv_row()) for r in records]
        _atomic_write_bytes(self.tsv_path, ("\n".join(lines) + "\n").encode())


def _is_baseline(record: ExperimentRecord) -> bool:
    return record.status == "baseline" or record.category == "baseline"


def records_to_table(records: list[ExperimentRecord]) -> pa.Table:
    columns = {name: [getattr(r, name) for r in records] for name in PERSISTED_FIELDS}
    schema = pa.schema([(f.name, _arrow_type(f)) for f in dataclasses.fields(ExperimentRecord) if f.name != "extra"])
    return pa.table(columns, schema=schema)


def _arrow_type(f: dataclasses.Field) -> pa.DataType:
    t = str(f.type)
    if t.startswith("float"):
        return pa.float64()
    if t.startswith("int"):
        return pa.int64()
    return pa.string()
