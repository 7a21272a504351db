"""The run's book: its records, the one place they are written (results, then memory), and what follows from them.

The coordinator and the threads that prepare candidates share one `RunBook`; a lock keeps every write (and the
experiment ids handed out) in order, so the loop process stays the single writer of results and memory.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agents import stop
from agents.bench.decide import effect_scale, estimate_sigma
from agents.bench.runner import RunResult
from agents.crew.candidates import Candidate
from agents.crew.edits import diff_stats, unified_diff
from agents.ports import Ledger, Memory
from agents.record.gitops import ExperimentRepo
from agents.record.journal import Journal, JournalEntry, RunKind
from agents.record.results import TRAINED, ExperimentRecord, ResultsStore, Status
from memory.fingerprint import fingerprint_or_none
from memory.novelty import normalised_diff_hash


@dataclass(frozen=True)
class Best:
    """The best so far; replaced, never changed (the preparing threads read it while the coordinator moves on)."""

    commit: str
    text: str
    bpb: float | None = None
    sigma: float = 0.0


class RunBook:
    def __init__(self, run_dir: Path, tag: str, config_name: str, crew, ledger: Ledger, memory: Memory,
                 event: Callable[..., None], tracker=None,
                 observers: list[Callable[[ExperimentRecord], None]] | None = None):
        self.run_dir, self.tag, self.config_name = Path(run_dir), tag, config_name
        self.tracker = tracker  # MLflow (agents/record/tracking.py): fed after the record of truth is written
        # told every record once it is written (a sampler's study learns its trials' outcomes); may see one twice
        self.observers = list(observers or ())
        self.crew, self.ledger, self.memory = crew, ledger, memory
        self._event = event
        self.results = ResultsStore(self.run_dir)
        self.records: list[ExperimentRecord] = self.results.load()
        self._lock = threading.RLock()
        self._reserved: set[int] = set()

    # ---------------------------------------------------------------- writing
    def append(self, record: ExperimentRecord) -> None:
        """Results first (the history everything is rebuilt from), then memory. The one place results are written.

        Only the results are written whole before a second Ctrl-C takes effect; the memory write may be cut
        short (memory is made good from the results at the end of the next run)."""
        with self._lock:
            with stop.SWITCH.critical():
                self._usage_into(record)
                if record.diff:
                    self.run_dir.mkdir(parents=True, exist_ok=True)
                    (self.run_dir / f"{record.exp_id}.patch").write_text(record.diff)
                self.results.append(record)
                self.records = [r for r in self.records if r.exp_id != record.exp_id] + [record]
            if self.tracker is not None:
                self.tracker.log(record)  # never blocks: a background thread logs it
            for observe in self.observers:
                try:
                    observe(record)
                except Exception as exc:  # results are written: an observer's failure is reported, never fatal
                    self._event("note", record.exp_id, f"could not pass the result on ({type(exc).__name__}: {exc})")
            try:
                self.memory.add(record)
            except Exception as exc:  # memory is rebuildable from results: never stop the loop for it
                self._event("note", record.exp_id, f"memory write failed ({type(exc).__name__}: {exc}); "
                            "run `autoresearch memory rebuild` later")

    def refuse(self, record: ExperimentRecord) -> None:
        """A candidate refused before any GPU time (repeat, veto, skipped), or whose preparation failed (error)."""
        record.finished_at = now()
        record.started_at = record.started_at or record.finished_at
        self.append(record)
        self._event("record", record.exp_id, record.status, record=record)

    def reserve_id(self, journal: Journal) -> str:
        """One past every id in the results, the journal and those handed out (re-runs are '<id>.r1', ...)."""
        with self._lock:
            taken = {r.exp_id for r in self.records} | journal.ids()
            numbers = [int(head) for head in (t.split(".")[0] for t in taken) if head.isdigit()]
            number = max([*numbers, *self._reserved], default=-1) + 1
            self._reserved.add(number)
            return f"{number:04d}"

    # ---------------------------------------------------------------- reading
    def snapshot(self) -> list[ExperimentRecord]:
        with self._lock:
            return list(self.records)

    def find(self, exp_id: str) -> ExperimentRecord | None:
        return next((r for r in self.snapshot() if r.exp_id == exp_id), None)

    def baselines(self) -> list[ExperimentRecord]:
        return [r for r in self.snapshot() if r.status == Status.BASELINE]

    def trained(self) -> list[ExperimentRecord]:
        return [r for r in self.snapshot() if r.status in TRAINED]

    def best(self, repo: ExperimentRepo) -> Best:
        """The last kept experiment, else the starting commit at the baselines' mean; σ from the baselines."""
        baselines = self.baselines()
        bpbs = [r.val_bpb for r in baselines if r.val_bpb is not None]
        sigma = estimate_sigma(bpbs) if bpbs else 0.0
        kept = [r for r in self.snapshot() if r.status == Status.KEEP]
        if kept:
            last = kept[-1]
            return Best(last.commit, repo.read_file_at(last.commit, "train.py"), last.val_bpb, sigma)
        start = baselines[0].commit if baselines else repo.head()
        return Best(start, repo.read_file_at(start, "train.py"), statistics.fmean(bpbs) if bpbs else None, sigma)

    @staticmethod
    def new_best(commit: str, text: str, bpb: float | None, sigma: float) -> Best:
        return Best(commit, text, bpb, sigma)

    def bpb_of(self, commit: str, default: float | None) -> float | None:
        """The val_bpb of a commit that was the best at some point: a kept experiment, or the start (baselines)."""
        records = self.snapshot()
        kept = [r.val_bpb for r in records if r.status == Status.KEEP and r.commit == commit]
        if kept:
            return kept[-1]
        baselines = [r.val_bpb for r in records if r.status == Status.BASELINE and r.commit == commit and r.val_bpb]
        return statistics.fmean(baselines) if baselines else default

    def effect_scale(self) -> float | None:
        """The typical size of the effects this run has measured: the median |delta| of its trained experiments
        (None before two): what "equal within noise" is judged against."""
        return effect_scale([r.delta for r in self.snapshot() if r.status in (Status.KEEP, Status.DISCARD)])

    def steps_outside(self, steps: int | float | None) -> str | None:
        """How a run's optimizer step count lies outside the range of the baselines' own, or None (inside, or
        nothing to compare): such a result may follow the step count (a busy machine), not the change."""
        counts = [r.num_steps for r in self.baselines() if r.num_steps is not None]
        if steps is None or not counts:
            return None
        low, high = min(counts), max(counts)
        if low <= int(steps) <= high:
            return None
        return f"its {int(steps)} optimizer steps lie outside the baselines' range ({low}-{high})"

    def best_summary(self, best: Best) -> str:
        if best.bpb is None:
            return "no result yet"
        kept = [r for r in self.snapshot() if r.status == Status.KEEP]
        chain = "; ".join(f"{r.description} ({r.delta:+.4f})" for r in kept[-10:] if r.delta is not None)
        return (f"best val_bpb {best.bpb:.6f} at commit {best.commit[:7]}, noise sigma {best.sigma:.5f}"
                + (f"; kept so far: {chain}" if chain else ""))

    def earlier_runs(self, limit: int = 2000) -> list[ExperimentRecord]:
        """What earlier runs sharing this memory tried, so the crew does not walk the same path again."""
        try:
            hits = self.memory.where({"tag": {"$ne": self.tag}}, limit=limit)
        except Exception as exc:  # memory is an aid: a run goes on without it
            self._event("note", message=f"earlier runs unavailable from memory ({type(exc).__name__})")
            return []
        return [ExperimentRecord(exp_id=f"{h.tag}/{h.exp_id}", tag=h.tag, status=h.status, description=h.title,
                                 category=h.category, val_bpb=h.val_bpb, delta=h.delta, lesson=h.lesson,
                                 config=h.config) for h in hits]

    # ---------------------------------------------------------------- one record
    def record_for(self, entry: JournalEntry, result: RunResult, c: Candidate | None, base_bpb: float | None,
                   base_text: str) -> ExperimentRecord:
        existing = self.find(entry.exp_id)
        summary = result.summary or {}
        record = existing or ExperimentRecord(exp_id=entry.exp_id, tag=self.tag, status=Status.DISCARD, description="",
                                              config=self.config_name)
        record.commit, record.parent_commit, record.seed = entry.commit, entry.base_commit, entry.seed
        if entry.kind == RunKind.BASELINE:
            record.description, record.category = f"baseline (seed {entry.seed})", "baseline"
        elif entry.idea:
            idea = c.idea.model_dump() if c is not None else entry.idea
            record.description, record.category = idea["title"], idea.get("category", "")
            record.rationale, record.expected_effect = idea.get("rationale", ""), idea.get("expected_effect", "")
            record.changes = json.dumps(idea["changes"]) if idea.get("changes") else ""
            record.diff = unified_diff(base_text, entry.new_text)
            record.diff_hash = normalised_diff_hash(base_text, entry.new_text)
            fingerprint = fingerprint_or_none(base_text, entry.new_text)  # what memory judges repeats by
            record.fingerprint = fingerprint.to_json() if fingerprint is not None else ""
            record.lines_added, record.lines_removed = diff_stats(base_text, entry.new_text)
            if c is not None and c.review is not None:
                record.review_verdict, record.review_reasons = c.review.verdict, json.dumps(c.review.reasons)
            if c is not None and c.findings:  # the edit departs from its idea's changes: said where results are read
                reasons = json.loads(record.review_reasons) if record.review_reasons else []
                found = [f"finding (idea vs edit): {f}" for f in c.findings]
                record.review_reasons = json.dumps(reasons + [f for f in found if f not in reasons])
            record.guard_violations = ""
        record.val_bpb = result.val_bpb
        record.best_bpb_before = base_bpb
        record.delta = (result.val_bpb - base_bpb) if (result.val_bpb is not None and base_bpb) else None
        record.memory_gb = round(float(summary.get("peak_vram_mb") or 0.0) / 1024, 1)
        record.training_seconds = summary.get("training_seconds")
        record.wall_seconds = result.wall_seconds
        record.eval_seconds, record.sandbox = result.eval_seconds, result.sandbox
        record.num_steps = int(summary["num_steps"]) if summary.get("num_steps") is not None else None
        record.num_params_M = summary.get("num_params_M")
        record.mfu_percent = summary.get("mfu_percent")
        record.total_tokens_M = summary.get("total_tokens_M")
        record.log_path = str(result.log_path or "")
        record.error = result.error or ""
        record.node, record.gpu = entry.node, entry.gpu
        record.finished_at = now()
        record.started_at = record.started_at or now(seconds_ago=result.wall_seconds or 0.0)
        record.degraded_roles = "; ".join(self.crew.degraded_roles)
        return record

    def _usage_into(self, record: ExperimentRecord) -> None:
        """Tokens and USD of every call made for this experiment (this process's share after a resume)."""
        spent = self.ledger.totals(experiment=record.exp_id)
        record.tokens_in = max(record.tokens_in, spent.input_tokens)
        record.tokens_out = max(record.tokens_out, spent.output_tokens)
        record.usd = max(record.usd, spent.usd)
        faults = self.ledger.faults.for_experiment(record.exp_id) if hasattr(self.ledger, "faults") else {}
        if faults:
            record.faults = json.dumps(faults)


# ---------------------------------------------------------------------------------------------- helpers


def result_dict(result: RunResult) -> dict:
    keep = ("status", "val_bpb", "record", "summary", "returncode", "wall_seconds", "log_path", "log_tail",
            "error", "warnings", "sandbox")
    return {k: (str(v) if k == "log_path" and v is not None else v) for k, v in vars(result).items() if k in keep}


def result_from_dict(d: dict) -> RunResult:
    return RunResult(**{**d, "log_path": Path(d["log_path"]) if d.get("log_path") else None})


def stop_orphan(pid: int, node: str = "") -> None:
    """A training process whose loop was killed keeps running in its own session: stop it before re-running.

    Only a process on this machine can be stopped here; on a cluster node the worker's own cleanup does it.
    """
    import socket

    if pid <= 0 or (node and node != socket.gethostname()):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return  # gone already
    if b"train.py" in cmdline:
        try:
            os.killpg(pid, signal.SIGKILL)  # the runner made it a process-group leader
        except ProcessLookupError:
            pass


def now(seconds_ago: float = 0.0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat(timespec="seconds")
