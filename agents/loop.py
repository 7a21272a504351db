"""The research cycle, top to bottom: one coordinator keeps N workers busy.

setup (lock, branch, memory, crew, executor) → resume whatever a crash left in flight → baseline runs (σ),
in parallel across workers → until a stop condition: keep N + 1 reviewed candidates prepared (the crew works
in threads, candidates.py) → commit each on its base without touching the working tree → hand it to a worker
(executor.py: this machine, or a Ray cluster) → judge each result against the base it trained on (decide.py:
numbers decide) → the branch advances on a keep → results + memory → the analyst explains in a thread.

With one worker (the default) this is the classic loop: one experiment trains while the next is prepared.
With several, a result whose base is no longer the best is judged against its own base; a winner is then
re-applied on the new best (three-way merge) and confirmed by a run there before it is kept.

The coordinator is the only writer of git, the results, the journal and the memory. Every phase is written
ahead to the journal (journal.py) so a kill at any moment loses nothing: the same command resumes, and what
was in flight is trained again.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from agents.bench.decide import Decision, Plausibility, WallTimeLimit, decide
from agents.bench.executor import Finished, Running, TrainingTask
from agents.bench.guard import check_edit, check_prepare_hash, file_sha256
from agents.config import CrewConfig
from agents.crew.candidates import Candidate, Workbench, prepare_candidate, recode
from agents.crew.roles import ResearchCrew, RoleError
from agents.crew.schemas import Analysis, CodeEdit, Idea
from agents.crew.supply import CandidateSupply
from agents.engine import open_executor
from agents.lock import RunLock
from agents.record.gitops import ExperimentRepo
from agents.record.journal import Journal, JournalEntry
from agents.record.results import ExperimentRecord
from agents.record.runbook import RunBook, result_dict, result_from_dict, stop_orphan
from agents.record.tracking import Tracker

TRAINED = ("keep", "discard", "crash")
MAX_REAPPLY = 2  # a winner re-applied this many times while the best kept moving is not chased further


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
    worker: str = ""  # where a run trains ("host #2"), for progress and "training" phase events


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
    runner_options: dict = field(default_factory=dict)  # keyword arguments for the runner, on every worker
    sandbox: str = "auto"  # auto | bwrap | landlock | none: where train.py runs (agents/bench/sandbox/)
    sandbox_notice: str = ""  # said once at the start of the run (e.g. "no sandbox works here ...")
    tracker: Tracker = field(default_factory=Tracker.off)  # MLflow: fed after results are written
    observers: list = field(default_factory=list)  # callables given every record once written (a sampler's study)


@dataclass
class LoopOutcome:
    stop_reason: str
    records: list[ExperimentRecord]
    best_bpb: float | None
    best_commit: str
    run_dir: Path


@dataclass
class _InFlight:
    entry: JournalEntry
    candidate: Candidate | None
    running: Running


def run_loop(s: LoopSettings) -> LoopOutcome:
    repo = ExperimentRepo(s.repo_dir)
    repo.ensure_git_repo()
    repo.ensure_clean(["train.py", "prepare.py"])
    with RunLock(s.repo_dir) as lock:
        if lock.took_over_from:
            s.on_event(LoopEvent("note", message=f"took over a stale lock left by {lock.took_over_from}"))
        s.tracker.start(s.run_dir or s.repo_dir / "runs" / s.tag,
                        warn=lambda message: s.on_event(LoopEvent("note", message=message)))
        coordinator = _Coordinator(s, repo)
        try:
            return coordinator.run()
        finally:  # the parent run gets the plot and report; a failing store never holds the run for long
            s.tracker.finish(coordinator.book.records, interrupted=sys.exc_info()[0] is not None)


class _Coordinator:
    """One run of the loop: hands runs to the executor and decides on what comes back."""

    def __init__(self, s: LoopSettings, repo: ExperimentRepo):
        self.s, self.repo, self.cfg = s, repo, s.config.loop
        self.run_dir = s.run_dir or s.repo_dir / "runs" / s.tag
        self.journal = Journal(self.run_dir)
        self.book = RunBook(self.run_dir, s.tag, s.config_name, s.crew, s.ledger, s.memory, self._event,
                            self._checkpoint, tracker=s.tracker, observers=s.observers)
        self.started = time.monotonic()
        self.budget_stop: str | None = None
        self._checkpoints_seen: dict[str, int] = {}
        self.prepare_py = (s.repo_dir / "prepare.py").read_text(encoding="utf-8")
        self.prepare_sha = file_sha256(s.repo_dir / "prepare.py")
        self.plausibility = Plausibility(floor=self.cfg.plausibility.val_bpb_floor,
                                         max_gain=self.cfg.plausibility.max_gain)
        self.wall_limit = WallTimeLimit(tolerance=self.cfg.plausibility.wall_time_tolerance,
                                        slack_s=self.cfg.plausibility.wall_time_slack_s)
        # every run goes through the sandbox chosen at setup; `auto` is probed again on each worker node
        self.runner_options = {"sandbox": s.sandbox, **s.runner_options}
        self.queue: deque[JournalEntry] = deque()  # runs to hand out before new candidates (re-queued, re-runs)
        self.flight: dict[str, _InFlight] = {}  # run id -> what trains there
        self.waiting: dict[str, tuple[JournalEntry, Candidate | None]] = {}  # experiments awaiting a re-run
        self.deferred: list[tuple[JournalEntry, Candidate | None]] = []  # results waiting for the baselines
        self.analyses: dict[Future, ExperimentRecord] = {}
        self._prep_seconds: deque[float] = deque(maxlen=8)
        # ideas written ahead (prepared, or resumed from the journal) by experiment id, until their record is in:
        # the crew must not propose them again, wherever they are on the way to a worker
        self.prepared: dict[str, Idea] = {}
        self._run_seconds: deque[float] = deque(maxlen=8)

    # ---------------------------------------------------------------- the cycle
    def run(self) -> LoopOutcome:
        if self.s.sandbox_notice:
            self._event("note", message=f"warning: {self.s.sandbox_notice}")
        self.repo.start_branch(self.s.tag)
        self.best = self.book.best(self.repo)
        baselines = self.book.baselines()
        # the researcher's own train.py, the one the run started from: only its runs add to the shared compile cache
        self.start_commit = baselines[0].commit if baselines else self.repo.head()
        self.earlier = self.book.earlier_runs()
        bench = self._workbench()
        with open_executor(self.s, self.run_dir, self.prepare_py, lambda text: self._event("note", message=text)) \
                as self.ex:
            self.supply = CandidateSupply(lambda: self._prepare(bench), max_parallel=4 * self.ex.slots + 4)
            analyst = ThreadPoolExecutor(max_workers=max(1, self.ex.slots), thread_name_prefix="analyst")
            self.analyst = analyst
            try:
                self._resume(bench)
                self._queue_baselines()
                stop = self._cycle(bench)
            finally:
                self.supply.close()
                analyst.shutdown(wait=True)
                self._collect_analyses()
        for c in self.supply.leftovers():  # prepared but never trained: the journal keeps them for the next run
            self._event("note", c.exp_id, "prepared candidate kept for the next run")
        self._reconcile_memory()
        self.repo.reset_hard(self.best.commit)
        return LoopOutcome(stop, self.book.records, self.best.bpb, self.best.commit, self.run_dir)

    def _reconcile_memory(self) -> None:
        """Results are the record of truth: whatever of this run memory lacks (a write that failed) is added now."""
        try:
            added = self.s.memory.sync_from([self.run_dir / "results.parquet"])
        except Exception as exc:  # memory is rebuildable: say so, never fail the run for it
            self._event("note", message=f"memory: could not check it against the results ({type(exc).__name__}); "
                        "run `autoresearch memory rebuild`")
            return
        if added:
            self._event("note", message=f"memory: {added} experiment(s) of this run were missing; added them "
                        "from results.parquet")

    def _cycle(self, bench: Workbench) -> str:
        while True:
            self._collect_analyses()
            stop = self._stop_reason()
            self._dispatch(bench, stop)
            if not self.flight and not self.queue and not self.waiting:
                if stop is not None:
                    return stop
                if self.supply.exhausted and not self.supply.ready and not self.supply.preparing:
                    return self.supply.exhausted
                self.supply.wait_for_one(0.2)
            finished = self.ex.wait(0.2 if self.flight else 0.0)
            if finished and self.ex.slots > 1:
                # freed workers start their next run before the results are recorded (with one worker the next
                # candidate waits for the decision instead, so a keep moves it onto the new best first)
                self._dispatch(bench, stop)
            for done in finished:
                self._finished(bench, done)
                self._dispatch(bench, self._stop_reason())
            for run_id, fl in self.flight.items():
                self._event("progress", run_id, elapsed=fl.running.elapsed, budget=self.cfg.time_budget or 0.0,
                            worker=fl.running.worker)

    # ---------------------------------------------------------------- handing out runs
    def _dispatch(self, bench: Workbench, stop: str | None) -> None:
        """Fill free workers: queued runs first, then new candidates (none once a stop condition holds)."""
        while self.ex.free_slots() > 0:
            if self.queue:
                entry = self.queue.popleft()
                self._submit(entry, self._candidate_from_entry(entry))
                continue
            if stop is not None or self._underway() >= self._remaining():
                break
            candidate = self.supply.take()
            if candidate is None:
                break
            candidate = self._rebase(bench, candidate)
            if candidate is not None:
                self._submit(self._commit(candidate), candidate)
        self.supply.top_up(self._wanted_ahead(stop))

    def _wanted_ahead(self, stop: str | None) -> int:
        """Candidates to hold (ready + preparing): N + 1, plus what the workers use up while one is prepared."""
        if stop is not None:
            return 0
        left = self._remaining() - self._underway()
        if not self.cfg.pipelining:  # one at a time, prepared only when a worker is free for it
            return min(left, 1 if self.ex.free_slots() > 0 else 0)
        n = self.ex.slots
        # until preparations finish, the oldest one still running says how long they take at least (with slow
        # LLM calls the first ones take minutes, and the workers would wait a whole round for the next ones)
        measured = statistics.fmean(self._prep_seconds) if self._prep_seconds else 1.0
        prep = max(measured, self.supply.oldest_age())
        run = statistics.fmean(self._run_seconds) if self._run_seconds else (self.cfg.time_budget or 300.0)
        return max(0, min(left, n + 1 + math.ceil(n * prep / max(run, 1e-3)), 4 * n + 4))

    def _commit(self, c: Candidate) -> JournalEntry:
        entry = self._entry_for(c)  # re-written: a rebase may have changed the text and base
        self.journal.write(entry)
        self._checkpoint("commit")
        entry.commit = self.repo.commit_text("train.py", c.new_text, c.base_commit, f"{c.exp_id}: {c.idea.title}")
        self.repo.keep_ref(self.s.tag, c.exp_id, entry.commit)
        self.journal.advance(entry, "committed")
        return entry

    def _submit(self, entry: JournalEntry, candidate: Candidate | None) -> None:
        self._checkpoint("train")
        violation = check_prepare_hash(self.s.repo_dir, self.prepare_sha)
        if violation is not None:
            raise RuntimeError(f"prepare.py changed outside the loop: {violation.message}; restore it and run again")
        cluster = self.s.config.cluster
        options = dict(self.runner_options)
        if entry.kind == "baseline" and entry.commit == self.start_commit:
            options["compile_cache_mode"] = "publish"  # trusted code: what it compiled is shared with later runs
        task = TrainingTask(entry.exp_id, entry.new_text, self.prepare_py, self.prepare_sha, entry.seed,
                            self.cfg.time_budget, self.cfg.hard_timeout_s, dict(self.s.extra_env), options,
                            cluster.cache)
        running = self.ex.submit(task)
        entry.pid, entry.node, entry.started = running.pid, running.node, running.started
        self.journal.write(entry)
        self.flight[entry.exp_id] = _InFlight(entry, candidate, running)
        self._event("phase", entry.exp_id, "training", worker=running.worker)
        self._checkpoint("training")

    def _finished(self, bench: Workbench, done: Finished) -> None:
        fl = self.flight.pop(done.exp_id)
        entry = fl.entry
        self._event("phase", entry.exp_id, "trained" if not done.lost else "lost", worker=fl.running.worker)
        if done.lost:  # the worker or its machine vanished: the run goes back in the queue, counted once
            self._event("note", entry.exp_id, f"{done.lost}; re-queued")
            entry.pid = 0
            self.journal.write(entry)
            self.queue.appendleft(entry)
            return
        self._run_seconds.append(fl.running.elapsed)
        entry.result, entry.node, entry.gpu = result_dict(done.result), done.node or entry.node, done.gpu
        self.journal.advance(entry, "trained")
        self._checkpoint("trained")
        if entry.kind == "baseline":
            self._finish(entry, _baseline_decision(done.result), None)
            if done.result.val_bpb is None:
                raise BaselineCrashed(f"the starting train.py crashed ({done.result.error}); see "
                                      f"{done.result.log_path}")
            self._flush_deferred(bench)
        elif entry.kind in ("rerun", "confirm"):
            self._follow_up_done(bench, entry, done.result)
        else:
            self._judge(bench, entry, fl.candidate)

    # ---------------------------------------------------------------- deciding
    def _judge(self, bench: Workbench, entry: JournalEntry, candidate: Candidate | None) -> None:
        """Numbers decide, against the base this experiment trained on; a winner on an old base is re-applied."""
        if self._baselines_missing():
            self.deferred.append((entry, candidate))  # σ and the start's val_bpb are not known yet
            return
        result = result_from_dict(entry.result)
        base_bpb = self.book.bpb_of(entry.base_commit, default=self.best.bpb)
        if not entry.runs and not entry.stretch and result.val_bpb is not None and not entry.first_commit:
            # its first run counts only if it kept to the budget: the harness's clock against the baselines'
            entry.stretch = self._stretch(result) or ""
            entry.runs = [] if entry.stretch else [result.val_bpb]
        if entry.stretch:  # the latest run trained past its budget: its val_bpb never counts
            decision = decide(result.val_bpb, base_bpb, sigma=self.best.sigma, min_delta=self.cfg.noise.min_delta,
                              sigma_k=self.cfg.noise.sigma_k, plausibility=self.plausibility,
                              confirmed=bool(self._follow_up_ids(entry, "rerun")), stretch=entry.stretch)
            if decision.action == "rerun":
                self._follow_up(entry, candidate, "rerun", f"re-running with another seed: {decision.reason}")
                return
        elif not entry.runs:
            decision = Decision("crash", result.error or "crashed", 0.0)
        else:
            lines = candidate.lines if candidate is not None else (0, 0)
            many = len(entry.runs) > 1
            decision = decide(statistics.fmean(entry.runs), base_bpb, sigma=self.best.sigma,
                              min_delta=self.cfg.noise.min_delta, sigma_k=self.cfg.noise.sigma_k,
                              lines_delta=lines[0] - lines[1], plausibility=self.plausibility, confirmed=many,
                              runs=entry.runs if many else ())
            if decision.action == "rerun" and len(entry.runs) <= self.cfg.noise.max_reruns:
                # borderline or implausible: the same commit with another seed, the mean decides
                self._follow_up(entry, candidate, "rerun", f"re-running with another seed: {decision.reason}")
                return
            if decision.action == "rerun":
                decision = Decision("discard", f"not confirmed after re-runs: {decision.reason}", decision.threshold)
            if decision.action == "keep" and entry.base_commit != self.best.commit:
                decision = self._reapply(bench, entry, candidate, decision)
                if decision is None:
                    return
        self._finish(entry, decision, candidate)

    def _flush_deferred(self, bench: Workbench) -> None:
        """Results that came in before the baselines were all done are judged once they are."""
        if not self._baselines_missing():
            parked, self.deferred = self.deferred, []
            for entry, candidate in parked:
                self._judge(bench, entry, candidate)

    def _reapply(self, bench: Workbench, entry: JournalEntry, candidate: Candidate | None,
                 won: Decision) -> Decision | None:
        """A winner over its own base while the best moved: merge it onto the new best and confirm it there."""
        attempts = len(self._follow_up_ids(entry, "confirm")) if entry.first_commit else 0
        if attempts >= MAX_REAPPLY:
            return Decision("discard", f"beat its own base, but the best moved {attempts + 1} times while it was "
                            f"being confirmed; not chased further ({won.reason})", won.threshold)
        base_text = self.repo.read_file_at(entry.base_commit, "train.py")
        merged = self.repo.merge_file(base=base_text, ours=self.best.text, theirs=entry.new_text)
        problem = None
        if merged is None:
            problem = "its edit conflicts with the new best"
        elif merged == self.best.text:
            problem = "the new best already holds its change"
        elif not (report := check_edit(self.best.text, merged, ["train.py"], rules=bench.guard_rules)).ok:
            problem = f"re-applied on the new best it breaks a guard rule ({report.text()})"
        if problem is not None:
            bench.feedback.append(f"{entry.exp_id} '{(entry.idea or {}).get('title', '')}' beat its own base, but "
                                  f"{problem}; propose it again on the new best if it still applies")
            return Decision("discard", f"beat its own base, but {problem}; not kept ({won.reason})", won.threshold)
        entry.first_commit = entry.first_commit or entry.commit
        entry.first_base = entry.first_base or entry.base_commit
        entry.base_commit, entry.new_text, entry.runs = self.best.commit, merged, []
        entry.commit = self.repo.commit_text("train.py", merged, self.best.commit,
                                             f"{entry.exp_id}: {(entry.idea or {}).get('title', '')} (re-applied)")
        self.repo.keep_ref(self.s.tag, entry.exp_id, entry.commit)
        self.repo.keep_ref(self.s.tag, f"{entry.exp_id}.first", entry.first_commit)
        self.journal.write(entry)
        self._follow_up(entry, candidate, "confirm", f"beat its own base while the best moved ({won.reason}); "
                        f"re-applied on the new best {self.best.commit[:7]}, confirming there")
        return None

    def _follow_up_ids(self, entry: JournalEntry, kind: str) -> list[str]:
        mark = "c" if kind == "confirm" else "r"
        return [p.stem for p in self.journal.dir.glob(f"{entry.exp_id}.{mark}*.json")]

    def _follow_up(self, entry: JournalEntry, candidate: Candidate | None, kind: str, note: str) -> None:
        """A re-run (same commit, another seed) or a confirmation (on the new best) decides `entry` later."""
        number = len(self._follow_up_ids(entry, kind)) + 1
        seed = entry.seed + 1000 * number if kind == "rerun" else entry.seed
        child = JournalEntry(exp_id=f"{entry.exp_id}.{kind[0]}{number}", phase="committed", kind=kind,
                             base_commit=entry.base_commit, commit=entry.commit, new_text=entry.new_text, seed=seed,
                             parent=entry.exp_id)
        self.journal.write(child)
        self.waiting[entry.exp_id] = (entry, candidate)
        self._event("note", entry.exp_id, note)
        self.queue.appendleft(child)

    def _follow_up_done(self, bench: Workbench, child: JournalEntry, result) -> None:
        entry, candidate = self.waiting.pop(child.parent)
        self.journal.advance(child, "done")
        if result.val_bpb is None:
            what = "re-run" if child.kind == "rerun" else "confirmation run on the new best"
            self._finish(entry, Decision("discard", f"{what} crashed ({result.error}); not confirmed", 0.0), candidate)
            return
        if child.kind == "confirm":  # the run on the new base is the one the record shows
            entry.result, entry.node, entry.gpu = child.result, child.node, child.gpu
        entry.stretch = self._stretch(result) or ""
        if not entry.stretch:  # a run past its budget never counts
            entry.runs = [*entry.runs, result.val_bpb]
        self.journal.write(entry)
        self._judge(bench, entry, candidate)

    def _finish(self, entry: JournalEntry, decision: Decision, candidate: Candidate | None) -> ExperimentRecord:
        """Move git, write results and memory. Idempotent: resume may call it again with the journalled decision."""
        result = result_from_dict(entry.result)
        base_bpb = None if entry.kind == "baseline" else self.book.bpb_of(entry.base_commit, default=self.best.bpb)
        base_text = self.repo.read_file_at(entry.base_commit, "train.py") if entry.kind != "baseline" else ""
        record = self.book.record_for(entry, result, candidate, base_bpb, base_text)
        if len(entry.runs) > 1 or (entry.runs and entry.runs[0] != result.val_bpb):  # re-runs, or one past its budget
            record.val_bpb = statistics.fmean(entry.runs)
            record.delta = record.val_bpb - base_bpb if base_bpb is not None else None
            decision = Decision(decision.action, f"{decision.reason} (mean of {len(entry.runs)} runs: "
                                f"{', '.join(f'{r:.6f}' for r in entry.runs)})", decision.threshold)
        if entry.first_commit:
            decision = Decision(decision.action, f"{decision.reason}; first trained on {entry.first_base[:7]}, "
                                f"re-applied on {entry.base_commit[:7]}", decision.threshold)
        record.status, record.decision_reason = decision.action, decision.reason
        entry.decision = {"action": decision.action, "reason": decision.reason, "threshold": decision.threshold}
        self.journal.advance(entry, "decided")
        self._checkpoint("decide")
        if record.status == "keep":
            self.best = self.book.new_best(entry.commit, entry.new_text, record.val_bpb, self.best.sigma)
            self.repo.reset_hard(self.best.commit)  # the branch advances; the working tree shows the best
        self.book.append(record)
        if entry.kind == "baseline":
            self.best = self.book.best(self.repo)  # the baseline mean and sigma change with every repeat
        self.journal.advance(entry, "recorded" if record.status in TRAINED else "done")
        self._checkpoint("record")
        self._event("record", entry.exp_id, record.status, record=record)
        if record.status in TRAINED:
            self._analyse(record)
        return record

    # ---------------------------------------------------------------- the analyst
    def _analyse(self, record: ExperimentRecord) -> None:
        self._event("phase", record.exp_id, "analysing")
        self._checkpoint("analyse")
        history = list(self.book.records)
        if self.cfg.pipelining:  # explained in a thread while the workers go on
            self.analyses[self.analyst.submit(self._explain, record, history)] = record
        else:
            self._record_lesson(record, self._explain(record, history))

    def _collect_analyses(self) -> None:
        for future in [f for f in self.analyses if f.done()]:
            self._record_lesson(self.analyses.pop(future), future.result())

    def _explain(self, record: ExperimentRecord, history: list[ExperimentRecord]) -> Analysis | RoleError:
        """The analyst's reading; only the LLM call, so it may run in a thread while the workers train."""
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
        self.book.append(record)
        entry_path = self.journal.dir / f"{record.exp_id}.json"
        if entry_path.exists():
            entry = JournalEntry(**json.loads(entry_path.read_text()))
            self.journal.advance(entry, "done")

    # ---------------------------------------------------------------- candidates
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
        self.supply.rework(lambda best=self.best: self._recode(bench, c, best))  # LLM calls: not in this thread
        return None

    def _recode(self, bench: Workbench, c: Candidate, best) -> Candidate | None:
        recoded = recode(bench, c, best.commit, best.text, self.s.tag, self.s.config_name)
        if recoded is None:  # recorded as skipped by the crew's refusal: nothing left to resume
            self.journal.advance(self._entry_for(c), "done")
        else:
            self.journal.write(self._entry_for(recoded))
            self.prepared[recoded.exp_id] = recoded.idea
        return recoded

    def _prepare(self, bench: Workbench) -> Candidate | None:
        """A reviewed candidate on the current best, written ahead so a kill cannot lose it (in a thread)."""
        started = time.monotonic()
        best = self.best
        c = prepare_candidate(bench, self.s.tag, self.s.config_name, best.commit, best.text)
        self._prep_seconds.append(time.monotonic() - started)
        if c is not None:
            self.journal.write(self._entry_for(c))
            self.prepared[c.exp_id] = c.idea
            self._checkpoint("reviewed")
        return c

    def _entry_for(self, c: Candidate) -> JournalEntry:
        return JournalEntry(exp_id=c.exp_id, phase="reviewed", idea=c.idea.model_dump(), edit=c.edit.model_dump(),
                            new_text=c.new_text, base_commit=c.base_commit, seed=self.cfg.seed)

    def _candidate_from_entry(self, entry: JournalEntry) -> Candidate | None:
        if entry.kind != "experiment" or not entry.idea:
            return None
        base_text = self.repo.read_file_at(entry.base_commit, "train.py")
        return Candidate(entry.exp_id, Idea(**entry.idea), CodeEdit(**entry.edit), entry.base_commit, base_text,
                         entry.new_text)

    def _workbench(self) -> Workbench:
        return Workbench(
            crew=self.s.crew, memory=self.s.memory, program=self.s.program, device=self.s.device,
            novelty_threshold=self.cfg.novelty_threshold, coder_retries=self.cfg.coder_retries,
            review_rounds=self.cfg.review_rounds, guard_rules=self.s.config.guard.enabled_rules(),
            new_exp_id=self._reserve_exp_id, refuse=self.book.refuse,
            history=lambda: self.earlier + self.book.snapshot() + self._in_flight_records(),
            usage_scope=self.s.ledger.experiment, on_role_error=self._note_budget,
            recall=lambda direction: self.s.memory.recall(direction, token_budget=1500),
            best_summary=lambda: self.book.best_summary(self.best),
        )

    def _in_flight_records(self) -> list[ExperimentRecord]:
        """Experiments training now or prepared to train (resumed ones too), so the crew does not propose them
        again before memory knows them."""
        entries = [fl.entry for fl in list(self.flight.values()) if fl.entry.kind == "experiment"]
        entries += [e for e, _ in list(self.waiting.values())]
        ideas = {e.exp_id: (e.idea["title"], e.idea.get("category", "")) for e in entries if e.idea}
        recorded = {r.exp_id for r in self.book.snapshot()}
        ideas |= {exp_id: (idea.title, idea.category) for exp_id, idea in dict(self.prepared).items()
                  if exp_id not in recorded}
        return [ExperimentRecord(exp_id=exp_id, tag=self.s.tag, status="training", description=title,
                                 category=category) for exp_id, (title, category) in ideas.items()]

    def _reserve_exp_id(self) -> str:
        exp_id = self.book.reserve_id(self.journal)
        self._event("phase", exp_id, "proposing")
        self._checkpoint("propose")
        return exp_id

    # ---------------------------------------------------------------- resume
    def _resume(self, bench: Workbench) -> None:
        """Complete, re-decide or re-queue whatever the last run left half-done."""
        for entry in self.journal.unfinished():
            self._event("note", entry.exp_id, f"resuming an experiment interrupted at '{entry.phase}'")
            if entry.kind == "experiment" and entry.idea:
                self.prepared[entry.exp_id] = Idea(**entry.idea)
            if entry.kind in ("rerun", "confirm"):
                self.journal.advance(entry, "done")  # its parent decides again from its own result
            elif entry.phase in ("proposed", "coded", "reviewed"):
                # no GPU time spent yet: the idea is queued again (re-applied on the best when it is handed out)
                self.supply.add(Candidate(entry.exp_id, Idea(**entry.idea), CodeEdit(**entry.edit),
                                          entry.base_commit, self.repo.read_file_at(entry.base_commit, "train.py"),
                                          entry.new_text))
            elif entry.phase == "committed":
                stop_orphan(entry.pid, entry.node)
                self.queue.append(entry)  # trained again, wherever a worker is free
            elif entry.phase == "trained" and entry.kind == "baseline":
                self._finish(entry, _baseline_decision(result_from_dict(entry.result)), None)
            elif entry.phase == "trained" and entry.first_commit and not entry.runs:
                # re-applied on a newer best, its confirmation cut short: confirm it again
                self._follow_up(entry, self._candidate_from_entry(entry), "confirm", "confirming again on the "
                                f"best it was re-applied on ({entry.base_commit[:7]})")
            elif entry.phase == "trained":
                self._judge(bench, entry, self._candidate_from_entry(entry))
            elif entry.phase == "decided":
                self._finish(entry, Decision(**entry.decision), self._candidate_from_entry(entry))
            elif entry.phase == "recorded":
                record = self.book.find(entry.exp_id)
                if record is not None:
                    self._analyse(record)
                else:
                    self._finish(entry, Decision(**entry.decision), self._candidate_from_entry(entry))
        self._flush_deferred(bench)
        self.repo.reset_hard(self.best.commit)

    def _queue_baselines(self) -> None:
        queued = sum(e.kind == "baseline" for e in self.queue)
        for i in range(self.cfg.noise.baseline_repeats - len(self.book.baselines()) - queued):
            seed = self.cfg.seed + len(self.book.baselines()) + queued + i
            entry = JournalEntry(exp_id=self.book.reserve_id(self.journal), phase="committed", kind="baseline",
                                 base_commit=self.best.commit, commit=self.best.commit, seed=seed,
                                 new_text=self.best.text)
            self.journal.write(entry)
            self.queue.append(entry)

    # ---------------------------------------------------------------- bookkeeping
    def _baselines_missing(self) -> bool:
        return len(self.book.baselines()) < self.cfg.noise.baseline_repeats

    def _underway(self) -> int:
        """Experiments handed out and not yet recorded (re-runs and confirmations belong to their experiment)."""
        running = sum(fl.entry.kind == "experiment" for fl in self.flight.values())
        queued = sum(e.kind == "experiment" for e in self.queue)
        return running + queued + len(self.waiting) + len(self.deferred)

    def _remaining(self) -> int:
        if self.cfg.max_experiments is None:
            return 1 << 30
        return self.cfg.max_experiments - len(self.book.trained())

    def _stop_reason(self) -> str | None:
        if self.cfg.max_experiments is not None and len(self.book.trained()) >= self.cfg.max_experiments:
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
        streak = self.book.refusal_streak()
        if streak >= self.cfg.max_refusals_in_a_row:
            return f"{streak} proposals in a row were refused; the crew seems stuck (see results.tsv)"
        if self.supply.exhausted and not self.supply.ready and not self.supply.preparing:
            return self.supply.exhausted
        return None

    def _note_budget(self, exc: RoleError) -> None:
        if exc.stop_reason:  # the budget refused a call, or a role lost its model with on_model_failure: stop
            self.budget_stop = exc.stop_reason

    def _stretch(self, result) -> str | None:
        """Why a run looks like it trained past its budget (harness clock vs the baselines'), or None."""
        walls = [r.wall_seconds - (r.eval_seconds or 0.0) for r in self.book.baselines() if r.wall_seconds]
        return self.wall_limit.problem(result.train_wall_seconds, walls,
                                       reported_training_s=(result.summary or {}).get("training_seconds"),
                                       time_budget=self.cfg.time_budget)

    def _event(self, kind: str, exp_id: str = "", message: str = "", **kw) -> None:
        self.s.on_event(LoopEvent(kind, exp_id, message, best_bpb=self.best.bpb if hasattr(self, "best") else None,
                                  **kw))

    def _checkpoint(self, phase: str) -> None:
        """Test hook: AUTORESEARCH_TEST_KILL_AT=phase[@n] dies at the n-th pass here, as a power cut would."""
        target = os.environ.get("AUTORESEARCH_TEST_KILL_AT", "")
        name, _, nth = target.partition("@")
        if name != phase:
            return
        with _CHECKPOINT_LOCK:
            self._checkpoints_seen[phase] = self._checkpoints_seen.get(phase, 0) + 1
            if self._checkpoints_seen[phase] == int(nth or 1):
                os.kill(os.getpid(), signal.SIGKILL)


_CHECKPOINT_LOCK = threading.Lock()


def _baseline_decision(result) -> Decision:
    ok = result.val_bpb is not None
    return Decision("baseline" if ok else "crash", "baseline run" if ok else (result.error or "crashed"), 0.0)
