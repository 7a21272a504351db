"""The research cycle, top to bottom.

setup (lock, branch, memory, crew) → resume whatever a crash interrupted → baseline runs (σ) → until a
stop condition: prepare a candidate (candidates.py) → commit → train (runner.py) → decide (decide.py:
numbers decide) → git keep/reset → results + memory → the analyst explains and writes the lesson.

With pipelining on, the crew prepares the next candidate and analyses the previous experiment while
the current one trains, so the trainer does not wait for agents. A prepared candidate whose base was
overtaken by a keep is re-applied on the new best with a three-way merge, or re-coded on conflict.
Every phase is written ahead to the journal (journal.py) so a kill at any moment loses nothing.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agents.bench.decide import Decision, Plausibility, WallTimeLimit, decide, estimate_sigma
from agents.bench.guard import check_edit, check_prepare_hash, file_sha256
from agents.bench.runner import RunResult, start_training
from agents.bench.sandbox import select_sandbox
from agents.config import CrewConfig
from agents.crew.candidates import Candidate, Workbench, prepare_candidate, recode
from agents.crew.policy import SearchExhausted
from agents.crew.roles import ResearchCrew, RoleError
from agents.crew.schemas import Analysis, CodeEdit, Idea
from agents.lock import RunLock
from agents.record.gitops import ExperimentRepo
from agents.record.journal import Journal, JournalEntry
from agents.record.results import ExperimentRecord, ResultsStore
from agents.record.tracking import Tracker

TRAINED = ("keep", "discard", "crash")


class BaselineCrashed(RuntimeError):
    """The unmodified train.py does not run: nothing can be compared against it."""


@dataclass
class LoopEvent:
    """What the live view shows: a phase change, training progress, a finished record, or a note."""

    kind: str  # "phase" | "progress" | "record" | "note"
    exp_id: str = ""
    message: str = ""
    elapsed: float = 0.0
    budget: float = 0.0
    record: ExperimentRecord | None = None
    best_bpb: float | None = None


@dataclass
class LoopSettings:
    repo_dir: Path
    tag: str
    config: CrewConfig
    config_name: str
    program: str
    crew: ResearchCrew
    ledger: object  # agents.crew.llm.usage.UsageLedger
    memory: object  # memory.store.ExperimentMemory
    run_dir: Path | None = None
    python: str = sys.executable
    device: str = "cpu"
    on_event: Callable[[LoopEvent], None] = lambda event: None
    extra_env: dict = field(default_factory=dict)
    sandbox: str = "auto"  # auto | bwrap | landlock | none: where train.py runs (agents/bench/sandbox/)
    sandbox_notice: str = ""  # said once at the start of the run (e.g. "no sandbox works here ...")
    tracker: Tracker = field(default_factory=Tracker.off)  # MLflow: fed after results are written


@dataclass
class LoopOutcome:
    stop_reason: str
    records: list[ExperimentRecord]
    best_bpb: float | None
    best_commit: str
    run_dir: Path


@dataclass
class Best:
    commit: str
    text: str
    bpb: float | None = None
    sigma: float = 0.0


def run_loop(s: LoopSettings) -> LoopOutcome:
    repo = ExperimentRepo(s.repo_dir)
    repo.ensure_git_repo()
    run_dir = s.run_dir or s.repo_dir / "runs" / s.tag
    _undo_own_uncommitted_edit(repo, Journal(run_dir), s.repo_dir)
    repo.ensure_clean(["train.py", "prepare.py"])
    with RunLock(s.repo_dir) as lock:
        if lock.took_over_from:
            s.on_event(LoopEvent("note", message=f"took over a stale lock left by {lock.took_over_from}"))
        s.tracker.start(run_dir, warn=lambda message: s.on_event(LoopEvent("note", message=message)))
        cycle = _Cycle(s, repo)
        try:
            return cycle.run()
        finally:  # the parent run gets the plot and report; a failing store never holds the run for long
            s.tracker.finish(cycle.records, interrupted=sys.exc_info()[0] is not None)


class _Cycle:
    """One run of the loop; holds the per-run objects so the steps below stay short."""

    def __init__(self, s: LoopSettings, repo: ExperimentRepo):
        self.s, self.repo, self.cfg = s, repo, s.config.loop
        self.run_dir = s.run_dir or s.repo_dir / "runs" / s.tag
        self.results = ResultsStore(self.run_dir)
        self.journal = Journal(self.run_dir)
        self.records = self.results.load()
        self.started = time.monotonic()
        self.budget_stop: str | None = None
        self._checkpoints_seen: dict[str, int] = {}
        self.prepare_sha = file_sha256(s.repo_dir / "prepare.py")
        self.plausibility = Plausibility(floor=self.cfg.plausibility.val_bpb_floor,
                                         max_gain=self.cfg.plausibility.max_gain)
        self.wall_limit = WallTimeLimit(tolerance=self.cfg.plausibility.wall_time_tolerance,
                                        slack_s=self.cfg.plausibility.wall_time_slack_s)
        selection = select_sandbox(s.sandbox, s.python)  # SandboxUnavailable: an explicit choice that cannot start
        self.sandbox = selection.name
        self.sandbox_notice = s.sandbox_notice or selection.warning

    # ---------------------------------------------------------------- the cycle
    def run(self) -> LoopOutcome:
        if self.sandbox_notice:
            self.s.on_event(LoopEvent("note", message=f"warning: {self.sandbox_notice}"))
        self.repo.start_branch(self.s.tag)
        self.best = self._best_from_records()
        self.earlier = self._earlier_runs()
        bench = self._workbench()
        candidate = self._resume(bench)

        while len(self._baselines()) < self.cfg.noise.baseline_repeats and self._stop_reason() is None:
            last = len(self._baselines()) + 1 == self.cfg.noise.baseline_repeats
            overlap = last and self.cfg.pipelining and candidate is None
            record, prepared = self._run_baseline(self.cfg.seed + len(self._baselines()), bench if overlap else None)
            candidate = candidate or prepared
            if record.status == "crash":
                raise BaselineCrashed(f"the starting train.py crashed ({record.error}); see {record.log_path}")

        pending_analysis: ExperimentRecord | None = None
        analyst = ThreadPoolExecutor(max_workers=1, thread_name_prefix="analyst")
        stop = self._stop_reason()
        while stop is None:
            if candidate is None:
                try:
                    candidate = self._prepare(bench)
                except SearchExhausted as exc:
                    stop = str(exc)
                    break
                if candidate is None:
                    stop = self._stop_reason()
                    continue
            entry = self._commit(candidate)
            job = self._start(entry)
            explaining = None
            if pending_analysis is not None:  # explain the previous experiment while this one trains
                self._begin_analysis(pending_analysis)
                explaining = analyst.submit(self._explain, pending_analysis, list(self.records))
            upcoming = None
            if self.cfg.pipelining and self._stop_reason(upcoming=True) is None:
                try:
                    upcoming = self._prepare(bench)
                except SearchExhausted:
                    upcoming = None  # asked again after this experiment, which may open new moves
            record = self._finish(entry, self._wait(job, entry), candidate)
            if explaining is not None:
                self._record_lesson(pending_analysis, explaining.result())
                pending_analysis = None
            if self.cfg.pipelining and record.status in TRAINED:
                pending_analysis = record
            else:
                self._analyse(record)
            candidate = self._rebase(bench, upcoming) if upcoming is not None else None
            stop = self._stop_reason()

        analyst.shutdown()
        if pending_analysis is not None:
            self._analyse(pending_analysis)
        if candidate is not None:
            # prepared but never trained: the journal keeps it, the next run starts with it
            self.s.on_event(LoopEvent("note", exp_id=candidate.exp_id, message="prepared candidate kept for the next run"))
        self.repo.reset_hard(self.best.commit)
        return LoopOutcome(stop, self.records, self.best.bpb, self.best.commit, self.run_dir)

    # ---------------------------------------------------------------- baseline
    def _run_baseline(self, seed: int, bench: Workbench | None) -> tuple[ExperimentRecord, Candidate | None]:
        """One run of the starting code; with a workbench, the first candidate is prepared meanwhile."""
        exp_id = self._new_exp_id()
        commit = self.best.commit
        entry = JournalEntry(exp_id=exp_id, phase="committed", kind="baseline", base_commit=commit,
                             commit=commit, seed=seed, new_text=self.best.text)
        self.journal.write(entry)
        job = self._start(entry)
        prepared = None
        if bench is not None:
            try:
                prepared = self._prepare(bench)
            except SearchExhausted:
                prepared = None
        return self._finish(entry, self._wait(job, entry), None), prepared

    # ---------------------------------------------------------------- one experiment
    def _commit(self, c: Candidate) -> JournalEntry:
        entry = self._entry_for(c)  # re-written: a rebase may have changed the text and base
        self.journal.write(entry)
        self._checkpoint("commit")
        (self.s.repo_dir / "train.py").write_text(c.new_text)
        entry.commit = self.repo.commit_file("train.py", f"{c.exp_id}: {c.idea.title}")
        self.repo.keep_ref(self.s.tag, c.exp_id, entry.commit)
        self.journal.advance(entry, "committed")
        return entry

    def _start(self, entry: JournalEntry):
        self._event("phase", entry.exp_id, "training")
        self._checkpoint("train")
        violation = check_prepare_hash(self.s.repo_dir, self.prepare_sha)
        if violation is not None:
            raise RuntimeError(f"prepare.py changed outside the loop: {violation.message}; restore it and run again")
        job = start_training(self.s.repo_dir, self.run_dir, entry.exp_id, time_budget=self.cfg.time_budget,
                             seed=entry.seed, hard_timeout_s=self.cfg.hard_timeout_s, python=self.s.python,
                             extra_env=self.s.extra_env, sandbox=self.sandbox)
        entry.pid = job.pid
        self.journal.write(entry)
        self._checkpoint("training")
        return job

    def _wait(self, job, entry: JournalEntry) -> RunResult:
        budget = self.cfg.time_budget or 0.0
        while job.poll() is None:
            self._event("progress", entry.exp_id, elapsed=job.elapsed, budget=budget)
            time.sleep(0.2)
        result = job.wait()
        violation = check_prepare_hash(self.s.repo_dir, self.prepare_sha)
        if violation is not None:  # the run itself changed the locked file: never trust its number
            result.status, result.val_bpb = "crash", None
            result.error = f"prepare.py changed during the run ({violation.rule})"
            self.repo.restore_file("prepare.py")
        entry.result = _result_dict(result)
        self.journal.advance(entry, "trained")
        self._checkpoint("trained")
        return result

    def _finish(self, entry: JournalEntry, result: RunResult, candidate: Candidate | None) -> ExperimentRecord:
        """Decide, move git, write results and memory. Idempotent: resume may call it again."""
        record = self._record_for(entry, result, candidate)
        if entry.kind == "baseline":
            ok = result.val_bpb is not None
            decision = Decision("baseline" if ok else "crash", "baseline run" if ok else (result.error or "crashed"), 0.0)
        else:
            decision = self._decide(entry, result, record)
        record.status, record.decision_reason = decision.action, decision.reason
        entry.decision = {"action": record.status, "reason": decision.reason, "val_bpb": record.val_bpb}
        self.journal.advance(entry, "decided")
        self._checkpoint("decide")

        if record.status == "keep":
            self.best = Best(entry.commit, entry.new_text, record.val_bpb, self.best.sigma)
        self.repo.reset_hard(self.best.commit)
        self.records_append(record)
        if entry.kind == "baseline":
            self.best = self._best_from_records()  # the baseline mean and sigma change with every repeat
        self.journal.advance(entry, "recorded" if record.status in TRAINED else "done")
        self._checkpoint("record")
        self._event("record", entry.exp_id, record.status, record=record)
        return record

    def _decide(self, entry: JournalEntry, result: RunResult, record: ExperimentRecord) -> Decision:
        lines_delta = record.lines_added - record.lines_removed
        stretch = self._stretch(result)
        decision = decide(result.val_bpb, self.best.bpb, sigma=self.best.sigma, min_delta=self.cfg.noise.min_delta,
                          sigma_k=self.cfg.noise.sigma_k, lines_delta=lines_delta, plausibility=self.plausibility,
                          stretch=stretch)
        runs = [] if stretch else [result.val_bpb]  # a stretched run's val_bpb never counts
        for attempt in range(self.cfg.noise.max_reruns):
            if decision.action != "rerun":
                break
            # borderline, implausible or over time: the same commit with another seed, the mean decides
            self._event("note", entry.exp_id, f"re-running with another seed: {decision.reason}")
            rerun = JournalEntry(exp_id=f"{entry.exp_id}.r{attempt + 1}", phase="committed", kind="rerun",
                                 base_commit=entry.base_commit, commit=entry.commit, new_text=entry.new_text,
                                 seed=entry.seed + 1000 * (attempt + 1))
            self.repo.reset_hard(entry.commit)
            again = self._wait(self._start(rerun), rerun)
            self.journal.advance(rerun, "done")
            if again.val_bpb is None:
                return Decision("discard", f"re-run crashed ({again.error}); not confirmed", 0.0)
            again_stretch = self._stretch(again)
            if again_stretch is None:
                runs.append(again.val_bpb)
            decision = decide(statistics.fmean(runs) if runs else again.val_bpb, self.best.bpb, sigma=self.best.sigma,
                              min_delta=self.cfg.noise.min_delta, sigma_k=self.cfg.noise.sigma_k,
                              lines_delta=lines_delta, confirmed=True, plausibility=self.plausibility, runs=runs,
                              stretch=again_stretch)
        if decision.action == "rerun":
            decision = Decision("discard", f"not confirmed after re-runs: {decision.reason}", decision.threshold)
        if runs != [result.val_bpb] and runs:
            record.val_bpb = statistics.fmean(runs)
            record.delta = record.val_bpb - self.best.bpb if self.best.bpb is not None else None
            decision = Decision(decision.action, f"{decision.reason} (mean of {len(runs)} run(s) within the budget: "
                                f"{', '.join(f'{r:.6f}' for r in runs)})", decision.threshold)
        return decision

    def _stretch(self, result: RunResult) -> str | None:
        """Why a run looks like it trained past its budget (harness clock vs the baselines'), or None."""
        walls = [r.wall_seconds - (r.eval_seconds or 0.0) for r in self._baselines() if r.wall_seconds]
        return self.wall_limit.problem(result.train_wall_seconds, walls,
                                       reported_training_s=(result.summary or {}).get("training_seconds"),
                                       time_budget=self.cfg.time_budget)

    def _analyse(self, record: ExperimentRecord) -> None:
        if record.status in TRAINED:
            self._begin_analysis(record)
            self._record_lesson(record, self._explain(record, list(self.records)))

    def _begin_analysis(self, record: ExperimentRecord) -> None:
        self._event("phase", record.exp_id, "analysing")
        self._checkpoint("analyse")

    def _explain(self, record: ExperimentRecord, history: list[ExperimentRecord]) -> Analysis | RoleError:
        """The analyst's reading; only the LLM call, so it may run in a thread while the next one trains."""
        log_tail = ""
        if record.log_path and Path(record.log_path).exists():
            log_tail = "\n".join(Path(record.log_path).read_text(errors="replace").splitlines()[-40:])
        idea = Idea(title=record.description, rationale=record.rationale, expected_effect=record.expected_effect,
                    category=record.category or "other")
        inputs = {"program": self.s.program, "idea": idea, "record": record, "log_tail": log_tail,
                  "history": history}
        try:
            with self.s.ledger.experiment(record.exp_id):
                return self.s.crew.analyse(inputs)
        except RoleError as exc:
            return exc

    def _record_lesson(self, record: ExperimentRecord, outcome: Analysis | RoleError) -> None:
        if isinstance(outcome, RoleError):
            self._note_budget(outcome)
            record.lesson = record.lesson or f"(analyst unavailable: {outcome}) {record.decision_reason}"
        else:
            record.explanation, record.lesson = outcome.explanation, outcome.lesson
        self.records_append(record)
        entry_path = self.journal.dir / f"{record.exp_id}.json"
        if entry_path.exists():
            entry = JournalEntry(**json.loads(entry_path.read_text()))
            self.journal.advance(entry, "done")

    # ---------------------------------------------------------------- pipelining
    def _rebase(self, bench: Workbench, c: Candidate) -> Candidate | None:
        """A candidate prepared against an older best: three-way merge, else re-code."""
        if c.base_commit == self.best.commit:
            return c
        merged = self.repo.merge_file(base=c.base_text, ours=self.best.text, theirs=c.new_text)
        if merged is not None and merged != self.best.text:
            report = check_edit(self.best.text, merged, ["train.py"], rules=bench.guard_rules)
            if report.ok:
                self._event("note", c.exp_id, "re-applied on the new best (three-way merge)")
                return Candidate(c.exp_id, c.idea, c.edit, self.best.commit, self.best.text, merged,
                                 c.review, report.text())
        self._event("note", c.exp_id, "conflict with the new best: re-coding")
        return recode(bench, c, self.best.commit, self.best.text, self.s.tag, self.s.config_name)

    # ---------------------------------------------------------------- resume
    def _resume(self, bench: Workbench) -> Candidate | None:
        """Complete, re-run or re-queue whatever the last run left half-done."""
        candidate = None
        for entry in self.journal.unfinished():
            self._event("note", entry.exp_id, f"resuming an experiment interrupted at '{entry.phase}'")
            if entry.kind == "rerun":
                self.journal.advance(entry, "done")  # its parent re-decides from scratch
            elif entry.phase in ("proposed", "coded", "reviewed"):
                # no GPU time spent yet: the idea is queued again on the current best
                stale = Candidate(entry.exp_id, Idea(**entry.idea), CodeEdit(**entry.edit), entry.base_commit,
                                  self.repo.read_file_at(entry.base_commit, "train.py"), entry.new_text)
                self.journal.advance(entry, "done")
                candidate = self._rebase(bench, stale) if candidate is None else candidate
            elif entry.phase == "committed":
                _stop_orphan(entry.pid)
                self.repo.reset_hard(entry.commit)
                result = self._wait(self._start(entry), entry)
                self._analyse(self._finish(entry, result, self._candidate_from_entry(entry)))
            elif entry.phase in ("trained", "decided"):
                record = self._finish(entry, _result_from_dict(entry.result), self._candidate_from_entry(entry))
                self._analyse(record)
            elif entry.phase == "recorded":
                record = next((r for r in self.records if r.exp_id == entry.exp_id), None)
                if record is not None:
                    self._analyse(record)
                else:
                    self._finish(entry, _result_from_dict(entry.result), self._candidate_from_entry(entry))
            self.records = self.results.load()
            self.best = self._best_from_records()
        self.repo.reset_hard(self.best.commit)
        return candidate

    def _candidate_from_entry(self, entry: JournalEntry) -> Candidate | None:
        if entry.kind == "baseline" or not entry.idea:
            return None
        base_text = self.repo.read_file_at(entry.base_commit, "train.py")
        return Candidate(entry.exp_id, Idea(**entry.idea), CodeEdit(**entry.edit), entry.base_commit, base_text,
                         entry.new_text)

    # ---------------------------------------------------------------- bookkeeping
    def _record_for(self, entry: JournalEntry, result: RunResult, c: Candidate | None) -> ExperimentRecord:
        existing = next((r for r in self.records if r.exp_id == entry.exp_id), None)
        summary = result.summary or {}
        record = existing or ExperimentRecord(exp_id=entry.exp_id, tag=self.s.tag, status="discard",
                                              description="", config=self.s.config_name)
        record.commit, record.parent_commit, record.seed = entry.commit, entry.base_commit, entry.seed
        if entry.kind == "baseline":
            record.description = f"baseline (seed {entry.seed})"
            record.category = "baseline"
        elif c is not None:
            record.description, record.category = c.idea.title, c.idea.category
            record.rationale, record.expected_effect = c.idea.rationale, c.idea.expected_effect
            record.diff, record.diff_hash, record.fingerprint = c.diff, c.diff_hash, c.fingerprint
            record.lines_added, record.lines_removed = c.lines
            if c.review is not None:
                record.review_verdict, record.review_reasons = c.review.verdict, json.dumps(c.review.reasons)
            record.guard_violations = ""
        record.val_bpb = result.val_bpb
        record.best_bpb_before = self.best.bpb
        record.delta = (result.val_bpb - self.best.bpb) if (result.val_bpb is not None and self.best.bpb) else None
        record.memory_gb = round(float(summary.get("peak_vram_mb") or 0.0) / 1024, 1)
        record.training_seconds = summary.get("training_seconds")
        record.wall_seconds = result.wall_seconds
        record.eval_seconds = result.eval_seconds
        record.sandbox = result.sandbox
        record.num_steps = _maybe_int(summary.get("num_steps"))
        record.num_params_M = summary.get("num_params_M")
        record.mfu_percent = summary.get("mfu_percent")
        record.total_tokens_M = summary.get("total_tokens_M")
        record.log_path = str(result.log_path or "")
        record.error = result.error or ""
        record.finished_at = _now()
        record.started_at = record.started_at or _now(seconds_ago=result.wall_seconds or 0.0)
        record.degraded_roles = "; ".join(self.s.crew.degraded_roles)
        return record

    def records_append(self, record: ExperimentRecord) -> None:
        """Results first (the history everything is rebuilt from), then memory."""
        self._usage_into(record)
        if record.diff:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / f"{record.exp_id}.patch").write_text(record.diff)
        self.results.append(record)
        self.s.tracker.log(record)  # after the record of truth is written; never blocks
        self.records = [r for r in self.records if r.exp_id != record.exp_id] + [record]
        self._checkpoint("memory")
        try:
            self.s.memory.add(record)
        except Exception as exc:  # memory is rebuildable from results: never stop the loop for it
            self._event("note", record.exp_id, f"memory write failed ({type(exc).__name__}: {exc}); "
                        "run `autoresearch memory rebuild` later")

    def _refuse(self, record: ExperimentRecord) -> None:
        record.finished_at = _now()
        record.started_at = record.started_at or record.finished_at  # refused before any GPU time
        self.records_append(record)
        self._event("record", record.exp_id, record.status, record=record)

    def _baselines(self) -> list[ExperimentRecord]:
        return [r for r in self.records if r.status == "baseline"]

    def _best_from_records(self) -> Best:
        baselines = self._baselines()
        kept = [r for r in self.records if r.status == "keep"]
        sigma = estimate_sigma([r.val_bpb for r in baselines if r.val_bpb is not None]) if baselines else 0.0
        if kept:
            last = kept[-1]
            return Best(last.commit, self.repo.read_file_at(last.commit, "train.py"), last.val_bpb, sigma)
        start = baselines[0].commit if baselines else self.repo.head()
        bpbs = [r.val_bpb for r in baselines if r.val_bpb is not None]
        return Best(start, self.repo.read_file_at(start, "train.py"), statistics.fmean(bpbs) if bpbs else None, sigma)

    def _earlier_runs(self, limit: int = 2000) -> list[ExperimentRecord]:
        """What earlier runs sharing this memory tried, so the crew does not walk the same path again."""
        try:
            hits = self.s.memory.where({"tag": {"$ne": self.s.tag}}, limit=limit)
        except Exception as exc:  # memory is an aid: a run goes on without it
            self._event("note", message=f"earlier runs unavailable from memory ({type(exc).__name__})")
            return []
        return [ExperimentRecord(exp_id=f"{h.tag}/{h.exp_id}", tag=h.tag, status=h.status, description=h.title,
                                 category=h.category, val_bpb=h.val_bpb, delta=h.delta, lesson=h.lesson,
                                 config=h.config) for h in hits]

    def _new_exp_id(self) -> str:
        """One past every id in the results and the journal (re-runs are named '<id>.r1', '<id>.r2')."""
        taken = {r.exp_id for r in self.records}
        if self.journal.dir.exists():
            taken |= {p.stem for p in self.journal.dir.glob("*.json")}
        numbers = [int(head) for head in (t.split(".")[0] for t in taken) if head.isdigit()]
        return f"{max(numbers, default=-1) + 1:04d}"

    def _workbench(self) -> Workbench:
        return Workbench(
            crew=self.s.crew, memory=self.s.memory, program=self.s.program, device=self.s.device,
            novelty_threshold=self.cfg.novelty_threshold, coder_retries=self.cfg.coder_retries,
            review_rounds=self.cfg.review_rounds, guard_rules=self.s.config.guard.enabled_rules(),
            new_exp_id=self._reserve_exp_id, refuse=self._refuse, history=lambda: self.earlier + list(self.records),
            usage_scope=self.s.ledger.experiment, on_role_error=self._note_budget,
            recall=lambda direction: self.s.memory.recall(direction, token_budget=1500),
            best_summary=self._best_summary,
        )

    def _reserve_exp_id(self) -> str:
        exp_id = self._new_exp_id()
        self._event("phase", exp_id, "proposing")
        self._checkpoint("propose")
        return exp_id

    def _prepare(self, bench: Workbench) -> Candidate | None:
        """A reviewed candidate on the current best, written ahead so a kill cannot lose it."""
        c = prepare_candidate(bench, self.s.tag, self.s.config_name, self.best.commit, self.best.text)
        if c is not None:
            self.journal.write(self._entry_for(c))
            self._checkpoint("reviewed")
        return c

    def _entry_for(self, c: Candidate) -> JournalEntry:
        return JournalEntry(exp_id=c.exp_id, phase="reviewed", idea=c.idea.model_dump(), edit=c.edit.model_dump(),
                            new_text=c.new_text, base_commit=c.base_commit, seed=self.cfg.seed)

    def _best_summary(self) -> str:
        if self.best.bpb is None:
            return "no result yet"
        kept = [r for r in self.records if r.status == "keep"]
        chain = "; ".join(f"{r.description} ({r.delta:+.4f})" for r in kept[-10:] if r.delta is not None)
        return (f"best val_bpb {self.best.bpb:.6f} at commit {self.best.commit[:7]}, noise sigma {self.best.sigma:.5f}"
                + (f"; kept so far: {chain}" if chain else ""))

    def _stop_reason(self, upcoming: bool = False) -> str | None:
        trained = [r for r in self.records if r.status in TRAINED]
        # while one trains, preparing the next only makes sense if it may still run
        pending = 1 if upcoming else 0
        if self.cfg.max_experiments is not None and len(trained) + pending >= self.cfg.max_experiments:
            return f"reached max_experiments ({self.cfg.max_experiments})"
        if self.cfg.max_hours is not None and (time.monotonic() - self.started) / 3600 >= self.cfg.max_hours:
            return f"reached max_hours ({self.cfg.max_hours})"
        if self.budget_stop:
            return self.budget_stop
        totals = self.s.ledger.totals()
        if self.cfg.max_usd is not None and totals.usd >= self.cfg.max_usd:
            return f"reached max_usd ({self.cfg.max_usd})"
        if self.cfg.max_tokens is not None and totals.tokens >= self.cfg.max_tokens:
            return f"reached max_tokens ({self.cfg.max_tokens})"
        streak = 0
        for r in reversed(self.records):
            if r.status in TRAINED or r.status == "baseline":
                break
            streak += 1
        if streak >= self.cfg.max_refusals_in_a_row:
            return f"{streak} proposals in a row were refused; the crew seems stuck (see results.tsv)"
        return None

    def _usage_into(self, record: ExperimentRecord) -> None:
        """Tokens and USD of every call made for this experiment (this process's share after a resume)."""
        spent = self.s.ledger.totals(experiment=record.exp_id)
        record.tokens_in = max(record.tokens_in, spent.input_tokens)
        record.tokens_out = max(record.tokens_out, spent.output_tokens)
        record.usd = max(record.usd, spent.usd)
        faults = self.s.ledger.faults.for_experiment(record.exp_id) if hasattr(self.s.ledger, "faults") else {}
        if faults:
            record.faults = json.dumps(faults)

    def _note_budget(self, exc: RoleError) -> None:
        if exc.stop_reason:  # the budget refused a call, or a role lost its model with on_model_failure: stop
            self.budget_stop = exc.stop_reason

    def _event(self, kind: str, exp_id: str = "", message: str = "", **kw) -> None:
        self.s.on_event(LoopEvent(kind, exp_id, message, best_bpb=self.best.bpb if hasattr(self, "best") else None,
                                  **kw))

    def _checkpoint(self, phase: str) -> None:
        """Test hook: AUTORESEARCH_TEST_KILL_AT=phase[@n] dies at the n-th pass here, as a power cut would."""
        target = os.environ.get("AUTORESEARCH_TEST_KILL_AT", "")
        name, _, nth = target.partition("@")
        if name != phase:
            return
        self._checkpoints_seen[phase] = self._checkpoints_seen.get(phase, 0) + 1
        if self._checkpoints_seen[phase] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def _undo_own_uncommitted_edit(repo: ExperimentRepo, journal: Journal, repo_dir: Path) -> None:
    """A kill between writing train.py and committing it leaves our own edit behind: undo only that."""
    train_py = repo_dir / "train.py"
    if not train_py.exists():
        return
    text = train_py.read_text()
    if any(e.new_text == text and e.phase in ("reviewed",) for e in journal.unfinished()):
        repo.restore_file("train.py")


def _stop_orphan(pid: int) -> None:
    """A training process whose loop was killed keeps running in its own session: stop it before re-running."""
    if pid <= 0:
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


def _result_dict(result: RunResult) -> dict:
    keep = ("status", "val_bpb", "record", "summary", "returncode", "wall_seconds", "log_path", "log_tail",
            "error", "warnings", "sandbox")
    return {k: (str(v) if k == "log_path" and v is not None else v) for k, v in vars(result).items() if k in keep}


def _result_from_dict(d: dict) -> RunResult:
    return RunResult(**{**d, "log_path": Path(d["log_path"]) if d.get("log_path") else None})


def _maybe_int(value) -> int | None:
    return int(value) if value is not None else None


def _now(seconds_ago: float = 0.0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat(timespec="seconds")
