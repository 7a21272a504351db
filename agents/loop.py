"""The research cycle, top to bottom: one coordinator keeps N workers busy.

setup (lock, branch, memory, crew, executor) → resume whatever a crash left in flight → baseline runs (σ),
in parallel across workers → until a stop condition: keep N + 1 reviewed candidates prepared (the crew works
in threads, candidates.py; what each preparation came to is recorded here) → commit each on its base without
touching the working tree → hand it to a worker (executor.py: this machine, or a Ray cluster) → judge each
result against the base it trained on (decide.py: numbers decide) → the branch advances on a keep → results +
memory → the analyst explains in a thread.

With one worker (the default) this is the classic loop: one experiment trains while the next is prepared.
With several, a result whose base is no longer the best is judged against its own base; a winner is then
re-applied on the new best (three-way merge) and confirmed by a run there before it is kept.

The coordinator is the only writer of git, the results, the journal and the memory; the preparing threads only
read (see docs/ARCHITECTURE.md, "What the preparing threads share"). Every phase is written ahead to the journal
(journal.py) so a kill at any moment loses nothing: the same command resumes, and what was in flight is trained
again. Progress is watched (progress.py): a role whose candidates keep stalling is given up as
`on_model_failure` says, and the candidates per trained experiment are capped. A stop asked for by the user
(agents/stop.py: Ctrl-C, SIGTERM) starts nothing new and lets what is in flight finish; a second one abandons it.
"""

from __future__ import annotations

import math
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from agents import stop
from agents.bench.decide import Decision, Plausibility, WallTimeLimit, decide
from agents.bench.executor import Finished, Running, TrainingTask
from agents.bench.guard import check_edit, check_prepare_hash, file_sha256
from agents.config import CrewConfig
from agents.crew.candidates import Candidate, Prepared, Workbench, gate_idea, prepare_candidate
from agents.crew.progress import Progress, Stall
from agents.crew.roles import ResearchCrew, RoleError
from agents.crew.schemas import Analysis, CodeEdit, Idea
from agents.crew.supply import CandidateSupply
from agents.engine import open_executor
from agents.events import EventKind, LoopEvent
from agents.lock import RunLock
from agents.ports import Ledger, Memory
from agents.record.gitops import ExperimentRepo
from agents.record.journal import FollowUp, Journal, JournalEntry, Phase, RunKind
from agents.record.results import TRAINED, ExperimentRecord, Status
from agents.record.runbook import Best, RunBook, result_dict, result_from_dict, stop_orphan
from agents.record.tracking import Tracker

__all__ = ["BaselineCrashed", "EventKind", "LoopEvent", "LoopOutcome", "LoopSettings", "run_loop"]

MAX_REAPPLY = 2  # a winner re-applied this many times while the best kept moving is not chased further
EXIT_STUCK = 1  # the crew made no progress, or a role lost its model under on_model_failure: stop
EXIT_INTERRUPTED = 130  # stopped on the user's request (Ctrl-C, SIGTERM): the same command resumes


class BaselineCrashed(RuntimeError):
    """The unmodified train.py does not run: nothing can be compared against it."""


@dataclass
class LoopSettings:
    repo_dir: Path
    tag: str
    config: CrewConfig
    config_name: str
    program: str
    crew: ResearchCrew
    ledger: Ledger
    memory: Memory
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
    exit_code: int = 0  # 0, EXIT_STUCK, or EXIT_INTERRUPTED


@dataclass
class _Run:
    """A training run to hand out: an experiment or a baseline, or one of an experiment's follow-ups."""

    entry: JournalEntry
    follow_up: FollowUp | None = None

    @property
    def run_id(self) -> str:
        return self.follow_up.run_id if self.follow_up else self.entry.exp_id

    @property
    def kind(self) -> RunKind:
        return self.follow_up.kind if self.follow_up else self.entry.kind

    @property
    def seed(self) -> int:
        return self.follow_up.seed if self.follow_up else self.entry.seed

    @property
    def counts(self) -> bool:
        """An experiment of its own (its follow-ups belong to it; baselines are not experiments)."""
        return self.follow_up is None and self.entry.kind == RunKind.EXPERIMENT


@dataclass
class _InFlight:
    run: _Run
    candidate: Candidate | None
    running: Running


def run_loop(s: LoopSettings) -> LoopOutcome:
    repo = ExperimentRepo(s.repo_dir)
    repo.ensure_git_repo()
    repo.ensure_clean(["train.py", "prepare.py"])
    with RunLock(s.repo_dir) as lock:
        if lock.took_over_from:
            s.on_event(LoopEvent(EventKind.NOTE, message=f"took over a stale lock left by {lock.took_over_from}"))
        s.tracker.start(s.run_dir or s.repo_dir / "runs" / s.tag,
                        warn=lambda message: s.on_event(LoopEvent(EventKind.NOTE, message=message)))
        coordinator = _Coordinator(s, repo)
        try:
            return coordinator.run()
        finally:  # the summary run gets the plot and report; a failing store never holds the run for long
            s.tracker.finish(coordinator.book.records, interrupted=sys.exc_info()[0] is not None)


class _RunView:
    """What the preparing threads may read of the run (candidates.RunContext): thread-safe by construction.

    The best is a frozen `Best` replaced, never changed; the ideas in flight a tuple the coordinator publishes;
    the records are copied under the book's lock; experiment ids are handed out under a lock.
    """

    def __init__(self, coordinator: _Coordinator):
        self._c = coordinator
        self._lock = threading.Lock()
        self.free_ids: deque[str] = deque()  # reserved for a proposal that failed: the next candidate takes it
        self.in_flight: tuple[ExperimentRecord, ...] = ()

    def new_exp_id(self) -> str:
        with self._lock:
            exp_id = self.free_ids.popleft() if self.free_ids else self._c.book.reserve_id(self._c.journal)
        self._c._event(EventKind.PHASE, exp_id, "proposing")
        return exp_id

    def history(self) -> list[ExperimentRecord]:
        return self._c.earlier + self._c.book.snapshot() + list(self.in_flight)

    def best_summary(self) -> str:
        return self._c.book.best_summary(self._c.best)

    def usage_scope(self, exp_id: str) -> AbstractContextManager:
        return self._c.s.ledger.experiment(exp_id)

    def give_back(self, exp_id: str) -> None:
        with self._lock:
            self.free_ids.append(exp_id)


class _Coordinator:
    """One run of the loop: hands runs to the executor and decides on what comes back."""

    def __init__(self, s: LoopSettings, repo: ExperimentRepo):
        self.s, self.repo, self.cfg = s, repo, s.config.loop
        self.run_dir = s.run_dir or s.repo_dir / "runs" / s.tag
        self.journal = Journal(self.run_dir)
        self.book = RunBook(self.run_dir, s.tag, s.config_name, s.crew, s.ledger, s.memory, self._event,
                            tracker=s.tracker, observers=s.observers)
        self.view = _RunView(self)
        self.started = time.monotonic()
        self.budget_stop: str | None = None
        self.role_lost = False  # the budget stop is a role without a model (on_model_failure: stop)
        self.stuck_reason = ""  # why the crew makes no progress (a stall under on_model_failure: stop, or the cap)
        self.stall_stop: str | None = None
        self.progress = Progress(self.cfg.max_stalled, self.cfg.max_candidates_per_experiment)
        self.prepare_py = (s.repo_dir / "prepare.py").read_text(encoding="utf-8")
        self.prepare_sha = file_sha256(s.repo_dir / "prepare.py")
        self.plausibility = Plausibility(floor=self.cfg.plausibility.val_bpb_floor,
                                         max_gain=self.cfg.plausibility.max_gain)
        self.wall_limit = WallTimeLimit(tolerance=self.cfg.plausibility.wall_time_tolerance,
                                        slack_s=self.cfg.plausibility.wall_time_slack_s)
        # every run goes through the sandbox chosen at setup; `auto` is probed again on each worker node
        self.runner_options = {"sandbox": s.sandbox, **s.runner_options}
        self.queue: deque[_Run] = deque()  # runs to hand out before new candidates (re-queued, follow-ups)
        self.flight: dict[str, _InFlight] = {}  # run id -> what trains there
        self.waiting: dict[str, tuple[JournalEntry, Candidate | None]] = {}  # experiments awaiting a follow-up
        self.deferred: list[tuple[JournalEntry, Candidate | None]] = []  # results waiting for the baselines
        self.analyses: dict[Future, ExperimentRecord] = {}
        self._prep_seconds: deque[float] = deque(maxlen=8)
        # ideas written ahead (prepared, or resumed from the journal) by experiment id, until their record is in:
        # the crew must not propose them again, wherever they are on the way to a worker
        self.prepared: dict[str, Idea] = {}
        self._run_seconds: deque[float] = deque(maxlen=8)
        self._said_stopping = False

    # ---------------------------------------------------------------- the cycle
    def run(self) -> LoopOutcome:
        if self.s.sandbox_notice:
            self._event(EventKind.NOTE, message=f"warning: {self.s.sandbox_notice}")
        self.repo.start_branch(self.s.tag)
        self.best = self.book.best(self.repo)
        baselines = self.book.baselines()
        # the researcher's own train.py, the one the run started from: only its runs add to the shared compile cache
        self.start_commit = baselines[0].commit if baselines else self.repo.head()
        self.earlier = self.book.earlier_runs()
        bench = self._workbench()
        with open_executor(self.s, self.run_dir, self.prepare_py,
                           lambda text: self._event(EventKind.NOTE, message=text)) as self.ex:
            self.supply = CandidateSupply(lambda: self._prepare(bench), max_parallel=4 * self.ex.slots + 4)
            self.analyst = ThreadPoolExecutor(max_workers=max(1, self.ex.slots), thread_name_prefix="analyst")
            try:
                self._resume(bench)
                self._queue_baselines()
                stop_reason = self._cycle(bench)
                # preparations and analyses in flight finish (no new call starts once stopping); theirs is kept
                self.supply.close(wait=True)
                self._collect_prepared(bench)
                self.analyst.shutdown(wait=True)
                self._collect_analyses()
            except BaseException:  # a second Ctrl-C or a failure: what is in flight is abandoned, unwritten
                self.supply.close(wait=False)
                self.analyst.shutdown(wait=False, cancel_futures=True)
                raise
        for c in self.supply.leftovers():  # prepared but never trained: the journal keeps them for the next run
            self._event(EventKind.NOTE, c.exp_id, "prepared candidate kept for the next run")
        self._reconcile_memory()
        self.repo.reset_hard(self.best.commit)
        return LoopOutcome(stop_reason, self.book.records, self.best.bpb, self.best.commit, self.run_dir,
                           self._exit_code(stop_reason))

    def _reconcile_memory(self) -> None:
        """Results are the record of truth: whatever of this run memory lacks (a write that failed) is added now."""
        try:
            added = self.s.memory.sync_from([self.run_dir / "results.parquet"])
        except Exception as exc:  # memory is rebuildable: say so, never fail the run for it
            self._event(EventKind.NOTE, message=f"memory: could not check it against the results "
                        f"({type(exc).__name__}); run `autoresearch memory rebuild`")
            return
        if added:
            self._event(EventKind.NOTE, message=f"memory: {added} experiment(s) of this run were missing; added "
                        "them from results.parquet")

    def _cycle(self, bench: Workbench) -> str:
        while True:
            self._collect_prepared(bench)
            self._collect_analyses()
            stop_reason = self._stop_reason()
            self._dispatch(bench, stop_reason)
            if stop.SWITCH.stopping:  # asked to stop: what trains finishes, nothing starts
                self._say_stopping()
                if not self.flight:
                    return stop_reason or "stopped on request"
            elif not self.flight and not self.queue and not self.waiting:
                if stop_reason is not None:
                    return stop_reason
                self.supply.wait_for_one(0.2)
            finished = self.ex.wait(0.2 if self.flight else 0.0)
            if finished and self.ex.slots > 1:
                # freed workers start their next run before the results are recorded (with one worker the next
                # candidate waits for the decision instead, so a keep moves it onto the new best first)
                self._dispatch(bench, stop_reason)
            for done in finished:
                self._finished(bench, done)
                self._dispatch(bench, self._stop_reason())
            for run_id, fl in self.flight.items():
                self._event(EventKind.PROGRESS, run_id, elapsed=fl.running.elapsed,
                            budget=self.cfg.time_budget or 0.0, worker=fl.running.worker)

    # ---------------------------------------------------------------- what the crew prepared
    def _prepare(self, bench: Workbench) -> Prepared:
        """A reviewed candidate on the current best (in a preparing thread: reads only, writes nothing)."""
        best = self.best
        return prepare_candidate(bench, self.s.tag, self.s.config_name, best.commit, best.text)

    def _collect_prepared(self, bench: Workbench) -> None:
        """Record what each finished preparation came to, in this thread: candidates are written ahead to the
        journal, refusals and failures to the results; the stall guard counts them."""
        for p in self.supply.outcomes():
            self._prep_seconds.append(p.seconds)
            for exc in p.role_errors:
                self._note_budget(exc)
                if exc.role == "hypothesis":
                    bench.feedback.add(f"the last proposal failed: {exc}")
            if p.exhausted:
                self.supply.exhausted = p.exhausted
            if p.candidate is not None:
                with stop.SWITCH.critical():
                    self.journal.write(self._entry_for(p.candidate))
                self.prepared[p.exp_id] = p.candidate.idea
                self.supply.put_ready(p.candidate)
                self.progress.reached_training()
                bench.feedback.clear()
            elif p.refusal is not None:
                self._refuse(p.refusal.record)
                bench.feedback.add(p.refusal.feedback)
                stall = self.progress.refused(p.refusal, p.serial)
                if stall is not None:
                    self._stalled(stall)
            elif p.error:
                self._failed_preparation(p)
            elif p.idea is not None and p.stopped:  # cut short by a stop: the journal keeps the idea
                with stop.SWITCH.critical():
                    self.journal.write(JournalEntry(exp_id=p.exp_id, phase=Phase.PROPOSED, idea=p.idea.model_dump(),
                                                    base_commit=p.base_commit, seed=self.cfg.seed))
                self.prepared[p.exp_id] = p.idea
            elif p.exp_id and self.journal.read(p.exp_id) is None:  # no idea came of it: the id is free again
                self.view.give_back(p.exp_id)
        self._publish_in_flight()

    def _refuse(self, record: ExperimentRecord) -> None:
        """A candidate refused before any GPU time (or failed while prepared): results, memory, journal."""
        self.book.refuse(record)
        entry = self.journal.read(record.exp_id)  # an idea re-gated after a resume or a conflict
        if entry is not None and entry.phase != Phase.DONE:
            self.journal.advance(entry, Phase.DONE)

    def _failed_preparation(self, p: Prepared) -> None:
        """A failure of the harness while preparing one candidate: that candidate's, named and shown; the run
        goes on (only the coordinator's own state ends a run)."""
        if not p.exp_id:
            p.exp_id = self.book.reserve_id(self.journal)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / f"{p.exp_id}.error.log").write_text(p.trace or p.error)
        self._event(EventKind.NOTE, p.exp_id, f"preparing this candidate failed: {p.error} (the run goes on; "
                    f"traceback in {self.run_dir / (p.exp_id + '.error.log')})")
        self._refuse(p.failure_record(self.s.tag, self.s.config_name))
        self.progress.failed()

    def _stalled(self, stall: Stall) -> None:
        """A role whose candidates keep stalling: given up for the offline policy, or the run stops."""
        if self.s.config.on_model_failure == "stop":
            self.stall_stop = (f"stalled: {stall.line()} (loop.max_stalled {self.cfg.max_stalled}; "
                               "on_model_failure: stop)")
            self._event(EventKind.NOTE, message=self.stall_stop)
            return
        degraded_before = set(self.s.crew.degradations)
        if self.s.crew.give_up_role(stall.role, f"{stall.why}; last: {stall.last}", stalled=stall.count):
            for role in set(self.s.crew.degradations) - degraded_before | {stall.role}:
                self.progress.replaced(role, self.supply.started)
            self._event(EventKind.NOTE, message=f"stalled: {stall.line()}; the offline policy plays the "
                        f"{stall.role} from now on (loop.max_stalled {self.cfg.max_stalled})")
        else:
            self._event(EventKind.NOTE, message=f"stalled: {stall.line()}; the {stall.role} already runs on the "
                        "offline policy (the run stops if nothing trains within "
                        f"loop.max_candidates_per_experiment {self.cfg.max_candidates_per_experiment})")

    def _publish_in_flight(self) -> None:
        """Experiments training now or prepared to train (resumed ones too), so the crew does not propose them
        again before memory knows them: a fresh tuple the preparing threads read."""
        entries = [fl.run.entry for fl in self.flight.values() if fl.run.counts]
        entries += [e for e, _ in self.waiting.values()]
        ideas = {e.exp_id: (e.idea["title"], e.idea.get("category", "")) for e in entries if e.idea}
        recorded = {r.exp_id for r in self.book.snapshot()}
        ideas |= {exp_id: (idea.title, idea.category) for exp_id, idea in self.prepared.items()
                  if exp_id not in recorded}
        self.view.in_flight = tuple(ExperimentRecord(exp_id=exp_id, tag=self.s.tag, status="training",
                                                     description=title, category=category)
                                    for exp_id, (title, category) in ideas.items())

    # ---------------------------------------------------------------- handing out runs
    def _dispatch(self, bench: Workbench, stop_reason: str | None) -> None:
        """Fill free workers: queued runs first, then new candidates (none once a stop condition holds; nothing
        at all once the user asked to stop)."""
        if stop.SWITCH.stopping:
            return
        while self.ex.free_slots() > 0:
            if self.queue:
                run = self.queue.popleft()
                self._submit(run, self._candidate_from_entry(run.entry))
                continue
            if stop_reason is not None or self._underway() >= self._remaining():
                break
            candidate = self.supply.take()
            if candidate is None:
                break
            candidate = self._rebase(bench, candidate)
            if candidate is not None:
                self._submit(_Run(self._commit(candidate)), candidate)
        self.supply.top_up(self._wanted_ahead(stop_reason), limit=self.progress.room(self.supply.started))

    def _wanted_ahead(self, stop_reason: str | None) -> int:
        """Candidates to hold (ready + preparing): N + 1, plus what the workers use up while one is prepared."""
        if stop_reason is not None:
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
        with stop.SWITCH.critical():
            self.journal.write(entry)
            entry.commit = self.repo.commit_text("train.py", c.new_text, c.base_commit, f"{c.exp_id}: {c.idea.title}")
            self.repo.keep_ref(self.s.tag, c.exp_id, entry.commit)
            self.journal.advance(entry, Phase.COMMITTED)
        return entry

    def _submit(self, run: _Run, candidate: Candidate | None) -> None:
        violation = check_prepare_hash(self.s.repo_dir, self.prepare_sha)
        if violation is not None:
            raise RuntimeError(f"prepare.py changed outside the loop: {violation.message}; restore it and run again")
        cluster, entry = self.s.config.cluster, run.entry
        options = dict(self.runner_options)
        if run.kind == RunKind.BASELINE and entry.commit == self.start_commit:
            options["compile_cache_mode"] = "publish"  # trusted code: what it compiled is shared with later runs
        task = TrainingTask(run.run_id, entry.new_text, self.prepare_py, self.prepare_sha, run.seed,
                            self.cfg.time_budget, self.cfg.hard_timeout_s, dict(self.s.extra_env), options,
                            cluster.cache)
        with stop.SWITCH.critical():
            running = self.ex.submit(task)
            where = run.follow_up or entry
            where.pid, where.node, where.started = running.pid, running.node, running.started
            self.journal.write(entry)
        self.flight[run.run_id] = _InFlight(run, candidate, running)
        self._event(EventKind.PHASE, run.run_id, "training", worker=running.worker)

    def _finished(self, bench: Workbench, done: Finished) -> None:
        fl = self.flight.pop(done.exp_id)
        run, entry = fl.run, fl.run.entry
        self._event(EventKind.PHASE, run.run_id, "trained" if not done.lost else "lost", worker=fl.running.worker)
        if done.lost:  # the worker or its machine vanished: the run goes back in the queue, counted once
            self._event(EventKind.NOTE, run.run_id, f"{done.lost}; re-queued")
            (run.follow_up or entry).pid = 0
            self.journal.write(entry)
            self.queue.appendleft(run)
            return
        self._run_seconds.append(fl.running.elapsed)
        if run.follow_up is not None:
            fu = run.follow_up
            fu.result, fu.node, fu.gpu = result_dict(done.result), done.node or fu.node, done.gpu
            self._follow_up_done(bench, entry, fu, done.result)
            return
        entry.result, entry.node, entry.gpu = result_dict(done.result), done.node or entry.node, done.gpu
        self.journal.advance(entry, Phase.TRAINED)
        if entry.kind == RunKind.BASELINE:
            self._finish(entry, _baseline_decision(done.result), None)
            if done.result.val_bpb is None:
                raise BaselineCrashed(f"the starting train.py crashed ({done.result.error}); see "
                                      f"{done.result.log_path}")
            self._flush_deferred(bench)
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
                              confirmed=bool(entry.follow_ups_of(RunKind.RERUN)), stretch=entry.stretch)
            if decision.action == "rerun":
                self._follow_up(entry, candidate, RunKind.RERUN, f"re-running with another seed: {decision.reason}")
                return
        elif not entry.runs:
            decision = Decision("crash", result.error or "crashed", 0.0)
        else:
            lines = candidate.lines if candidate is not None else (0, 0)
            many = len(entry.runs) > 1
            decision = decide(statistics.fmean(entry.runs), base_bpb, sigma=self.best.sigma,
                              min_delta=self.cfg.noise.min_delta, sigma_k=self.cfg.noise.sigma_k,
                              lines_delta=lines[0] - lines[1], plausibility=self.plausibility, confirmed=many,
                              runs=entry.runs if many else (), effect_scale=self.book.effect_scale(),
                              steps_outside=self.book.steps_outside((result.summary or {}).get("num_steps")))
            if decision.action == "rerun" and len(entry.runs) <= self.cfg.noise.max_reruns:
                # borderline or implausible: the same commit with another seed, the mean decides
                self._follow_up(entry, candidate, RunKind.RERUN, f"re-running with another seed: {decision.reason}")
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
        attempts = len(entry.follow_ups_of(RunKind.CONFIRM)) if entry.first_commit else 0
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
            bench.feedback.add(f"{entry.exp_id} '{(entry.idea or {}).get('title', '')}' beat its own base, but "
                               f"{problem}; propose it again on the new best if it still applies")
            return Decision("discard", f"beat its own base, but {problem}; not kept ({won.reason})", won.threshold)
        entry.first_commit = entry.first_commit or entry.commit
        entry.first_base = entry.first_base or entry.base_commit
        entry.base_commit, entry.new_text, entry.runs = self.best.commit, merged, []
        with stop.SWITCH.critical():
            entry.commit = self.repo.commit_text("train.py", merged, self.best.commit,
                                                 f"{entry.exp_id}: {(entry.idea or {}).get('title', '')} (re-applied)")
            self.repo.keep_ref(self.s.tag, entry.exp_id, entry.commit)
            self.repo.keep_ref(self.s.tag, f"{entry.exp_id}.first", entry.first_commit)
            self.journal.write(entry)
        self._follow_up(entry, candidate, RunKind.CONFIRM, f"beat its own base while the best moved ({won.reason}); "
                        f"re-applied on the new best {self.best.commit[:7]}, confirming there")
        return None

    def _follow_up(self, entry: JournalEntry, candidate: Candidate | None, kind: RunKind, note: str) -> None:
        """A re-run (same commit, another seed) or a confirmation (on the new best) decides `entry` later."""
        follow_up = entry.add_follow_up(kind)
        self.journal.write(entry)
        self.waiting[entry.exp_id] = (entry, candidate)
        self._event(EventKind.NOTE, entry.exp_id, note)
        self.queue.appendleft(_Run(entry, follow_up))

    def _follow_up_done(self, bench: Workbench, entry: JournalEntry, follow_up: FollowUp, result) -> None:
        _, candidate = self.waiting.pop(entry.exp_id)
        follow_up.done = True
        if result.val_bpb is None:
            self.journal.write(entry)
            what = "re-run" if follow_up.kind == RunKind.RERUN else "confirmation run on the new best"
            self._finish(entry, Decision("discard", f"{what} crashed ({result.error}); not confirmed", 0.0), candidate)
            return
        if follow_up.kind == RunKind.CONFIRM:  # the run on the new base is the one the record shows
            entry.result, entry.node, entry.gpu = follow_up.result, follow_up.node, follow_up.gpu
        entry.stretch = self._stretch(result) or ""
        if not entry.stretch:  # a run past its budget never counts
            entry.runs = [*entry.runs, result.val_bpb]
        self.journal.write(entry)
        self._judge(bench, entry, candidate)

    def _finish(self, entry: JournalEntry, decision: Decision, candidate: Candidate | None) -> ExperimentRecord:
        """Move git, write results and memory. Idempotent: resume may call it again with the journalled decision."""
        result = result_from_dict(entry.result)
        baseline = entry.kind == RunKind.BASELINE
        base_bpb = None if baseline else self.book.bpb_of(entry.base_commit, default=self.best.bpb)
        base_text = self.repo.read_file_at(entry.base_commit, "train.py") if not baseline else ""
        record = self.book.record_for(entry, result, candidate, base_bpb, base_text)
        if len(entry.runs) > 1 or (entry.runs and entry.runs[0] != result.val_bpb):  # re-runs, or one past its budget
            record.val_bpb = statistics.fmean(entry.runs)
            record.delta = record.val_bpb - base_bpb if base_bpb is not None else None
            decision = Decision(decision.action, f"{decision.reason} (mean of {len(entry.runs)} runs: "
                                f"{', '.join(f'{r:.6f}' for r in entry.runs)})", decision.threshold, decision.kept_as)
        if entry.first_commit:
            decision = Decision(decision.action, f"{decision.reason}; first trained on {entry.first_base[:7]}, "
                                f"re-applied on {entry.base_commit[:7]}", decision.threshold, decision.kept_as)
        record.status, record.decision_reason = decision.action, decision.reason
        record.kept_as = decision.kept_as if decision.action == Status.KEEP else ""
        entry.decision = {"action": decision.action, "reason": decision.reason, "threshold": decision.threshold,
                          "kept_as": decision.kept_as}
        with stop.SWITCH.critical():
            self.journal.advance(entry, Phase.DECIDED)
            if record.status == Status.KEEP:
                self.best = self.book.new_best(entry.commit, entry.new_text, record.val_bpb, self.best.sigma)
                self.repo.reset_hard(self.best.commit)  # the branch advances; the working tree shows the best
        self.book.append(record)
        if baseline:
            self.best = self.book.best(self.repo)  # the baseline mean and sigma change with every repeat
        self.journal.advance(entry, Phase.RECORDED if record.status in TRAINED else Phase.DONE)
        self._event(EventKind.RECORD, entry.exp_id, record.status, record=record)
        if record.status in TRAINED:
            self.progress.trained(self.supply.started)
            self._analyse(record)
        return record

    # ---------------------------------------------------------------- the analyst
    def _analyse(self, record: ExperimentRecord) -> None:
        if stop.SWITCH.stopping:  # a model call: not after Ctrl-C (the journal's `recorded` resumes it)
            return
        self._event(EventKind.PHASE, record.exp_id, "analysing")
        history = list(self.book.records)
        if self.cfg.pipelining:  # explained in a thread while the workers go on
            self.analyses[self.analyst.submit(self._explain, record, history)] = record
        else:
            self._record_lesson(record, self._explain(record, history))

    def _collect_analyses(self) -> None:
        for future in [f for f in self.analyses if f.done()]:
            self._record_lesson(self.analyses.pop(future), future.result())

    def _explain(self, record: ExperimentRecord, history: list[ExperimentRecord]) -> Analysis | RoleError | None:
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
        except stop.StopRequested:  # stopped before its call: the journal's `recorded` resumes it
            return None

    def _record_lesson(self, record: ExperimentRecord, outcome: Analysis | RoleError | None) -> None:
        if outcome is None:
            return
        if isinstance(outcome, RoleError):
            self._note_budget(outcome)
            record.lesson = record.lesson or f"(analyst unavailable: {outcome}) {record.decision_reason}"
        else:
            record.explanation, record.lesson = outcome.explanation, outcome.lesson
        self.book.append(record)
        entry = self.journal.read(record.exp_id)
        if entry is not None:
            self.journal.advance(entry, Phase.DONE)

    # ---------------------------------------------------------------- candidates
    def _rebase(self, bench: Workbench, c: Candidate) -> Candidate | None:
        """A candidate prepared against an older best: three-way merge, else re-code."""
        if c.base_commit == self.best.commit:
            return c
        merged = self.repo.merge_file(base=c.base_text, ours=self.best.text, theirs=c.new_text)
        if merged is not None and merged != self.best.text:
            report = check_edit(self.best.text, merged, ["train.py"], rules=bench.guard_rules)
            if report.ok:
                self._event(EventKind.NOTE, c.exp_id, "re-applied on the new best (three-way merge)")
                return Candidate(c.exp_id, c.idea, c.edit, self.best.commit, self.best.text, merged,
                                 c.review, report.text())
        self._event(EventKind.NOTE, c.exp_id, "conflict with the new best: re-coding")
        self._regate(bench, c.exp_id, c.idea)
        return None

    def _regate(self, bench: Workbench, exp_id: str, idea: Idea) -> None:
        """An idea already proposed, taken through the gate again on the best (LLM calls: in a preparing thread)."""
        self.supply.rework(lambda best=self.best: gate_idea(bench, exp_id, idea, best.commit, best.text, self.s.tag,
                                                            self.s.config_name))

    def _entry_for(self, c: Candidate) -> JournalEntry:
        return JournalEntry(exp_id=c.exp_id, phase=Phase.REVIEWED, idea=c.idea.model_dump(), edit=c.edit.model_dump(),
                            new_text=c.new_text, base_commit=c.base_commit, seed=self.cfg.seed)

    def _candidate_from_entry(self, entry: JournalEntry) -> Candidate | None:
        if entry.kind != RunKind.EXPERIMENT or not entry.idea or not entry.edit:
            return None
        base_text = self.repo.read_file_at(entry.base_commit, "train.py")
        return Candidate(entry.exp_id, Idea(**entry.idea), CodeEdit(**entry.edit), entry.base_commit, base_text,
                         entry.new_text)

    def _workbench(self) -> Workbench:
        return Workbench(
            crew=self.s.crew, memory=self.s.memory, run=self.view, program=self.s.program, device=self.s.device,
            novelty_threshold=self.cfg.novelty_threshold, coder_retries=self.cfg.coder_retries,
            review_rounds=self.cfg.review_rounds, guard_rules=self.s.config.guard.enabled_rules(),
            judge=_repeat_judge(self.s.crew),
        )

    # ---------------------------------------------------------------- resume
    def _resume(self, bench: Workbench) -> None:
        """Complete, re-decide or re-queue whatever the last run left half-done, by the phase it reached."""
        resume_at: dict[Phase, Callable[[Workbench, JournalEntry], None]] = {
            Phase.PROPOSED: self._resume_idea,
            Phase.CODED: self._resume_candidate,
            Phase.REVIEWED: self._resume_candidate,
            Phase.COMMITTED: self._resume_committed,
            Phase.TRAINED: self._resume_trained,
            Phase.DECIDED: self._resume_decided,
            Phase.RECORDED: self._resume_recorded,
        }
        for entry in self.journal.unfinished():
            self._event(EventKind.NOTE, entry.exp_id, f"resuming an experiment interrupted at '{entry.phase}'")
            if entry.kind == RunKind.EXPERIMENT and entry.idea:
                self.prepared[entry.exp_id] = Idea(**entry.idea)
            resume_at[entry.phase](bench, entry)
        self._flush_deferred(bench)
        self._publish_in_flight()
        self.repo.reset_hard(self.best.commit)

    def _resume_idea(self, bench: Workbench, entry: JournalEntry) -> None:
        """Proposed, not coded (a stop cut it short): through the gate again, on today's best."""
        self._regate(bench, entry.exp_id, Idea(**entry.idea))

    def _resume_candidate(self, bench: Workbench, entry: JournalEntry) -> None:
        """No GPU time spent yet: queued again (re-applied on the best when it is handed out)."""
        self.supply.add(self._candidate_from_entry(entry))

    def _resume_committed(self, bench: Workbench, entry: JournalEntry) -> None:
        """Handed to a worker, no result: trained again wherever a worker is free."""
        stop_orphan(entry.pid, entry.node)
        self.queue.append(_Run(entry))

    def _resume_trained(self, bench: Workbench, entry: JournalEntry) -> None:
        for follow_up in entry.follow_ups:
            stop_orphan(follow_up.pid, follow_up.node)
        if entry.kind == RunKind.BASELINE:
            self._finish(entry, _baseline_decision(result_from_dict(entry.result)), None)
        elif entry.pending is not None:  # its re-run or confirmation had not finished: trained again
            self.waiting[entry.exp_id] = (entry, self._candidate_from_entry(entry))
            self.queue.appendleft(_Run(entry, entry.pending))
        elif entry.first_commit and not entry.runs:
            # re-applied on a newer best, its confirmation cut short (an older journal): confirm it again
            self._follow_up(entry, self._candidate_from_entry(entry), RunKind.CONFIRM, "confirming again on the "
                            f"best it was re-applied on ({entry.base_commit[:7]})")
        else:
            self._judge(bench, entry, self._candidate_from_entry(entry))

    def _resume_decided(self, bench: Workbench, entry: JournalEntry) -> None:
        self._finish(entry, Decision(**entry.decision), self._candidate_from_entry(entry))

    def _resume_recorded(self, bench: Workbench, entry: JournalEntry) -> None:
        """Recorded; the analyst's lesson is missing."""
        record = self.book.find(entry.exp_id)
        if record is not None:
            self._analyse(record)
        else:
            self._resume_decided(bench, entry)

    def _queue_baselines(self) -> None:
        queued = sum(run.kind == RunKind.BASELINE for run in self.queue)
        for i in range(self.cfg.noise.baseline_repeats - len(self.book.baselines()) - queued):
            seed = self.cfg.seed + len(self.book.baselines()) + queued + i
            entry = JournalEntry(exp_id=self.book.reserve_id(self.journal), phase=Phase.COMMITTED,
                                 kind=RunKind.BASELINE, base_commit=self.best.commit, commit=self.best.commit, seed=seed,
                                 new_text=self.best.text)
            self.journal.write(entry)
            self.queue.append(_Run(entry))

    # ---------------------------------------------------------------- bookkeeping
    def _baselines_missing(self) -> bool:
        return len(self.book.baselines()) < self.cfg.noise.baseline_repeats

    def _underway(self) -> int:
        """Experiments handed out and not yet recorded (re-runs and confirmations belong to their experiment)."""
        running = sum(fl.run.counts for fl in self.flight.values())
        queued = sum(run.counts for run in self.queue)
        return running + queued + len(self.waiting) + len(self.deferred)

    def _remaining(self) -> int:
        if self.cfg.max_experiments is None:
            return 1 << 30
        return self.cfg.max_experiments - len(self.book.trained())

    def _stop_reason(self) -> str | None:
        if stop.SWITCH.stopping:
            return f"stopped on request ({stop.SWITCH.reason}); run the same command again to resume"
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
        if self.stall_stop:
            self.stuck_reason = self.stall_stop
            return self.stuck_reason
        idle = self.supply.idle and not self._underway()
        if idle and self.progress.room(self.supply.started) == 0:
            self.stuck_reason = self.progress.cap_line()
            return self.stuck_reason
        if idle and self.supply.exhausted:
            return self.supply.exhausted
        return None

    def _exit_code(self, stop_reason: str) -> int:
        if stop.SWITCH.stopping:
            return EXIT_INTERRUPTED
        lost = self.role_lost and stop_reason == self.budget_stop
        return EXIT_STUCK if lost or stop_reason == self.stuck_reason else 0

    def _say_stopping(self) -> None:
        """Once, after the stop line: what the run still waits for."""
        if self._said_stopping:
            return
        self._said_stopping = True
        training = [fl.run.run_id for fl in self.flight.values()]
        preparing = self.supply.preparing
        waits = [f"{len(training)} run(s) training ({', '.join(training)})" if training else "",
                 f"{preparing} candidate(s) being prepared" if preparing else "",
                 f"{len(self.analyses)} analysis(es)" if self.analyses else ""]
        waits = [w for w in waits if w]
        self._event(EventKind.NOTE, message="stopping: waiting for " + " and ".join(waits) if waits
                    else "stopping: nothing in flight")

    def _note_budget(self, exc: RoleError) -> None:
        if exc.stop_reason:  # the budget refused a call, or a role lost its model with on_model_failure: stop
            self.budget_stop = exc.stop_reason
            self.role_lost = exc.stop_run

    def _stretch(self, result) -> str | None:
        """Why a run looks like it trained past its budget (harness clock vs the baselines'), or None."""
        walls = [r.wall_seconds - (r.eval_seconds or 0.0) for r in self.book.baselines() if r.wall_seconds]
        return self.wall_limit.problem(result.train_wall_seconds, walls,
                                       reported_training_s=(result.summary or {}).get("training_seconds"),
                                       time_budget=self.cfg.time_budget)

    def _event(self, kind: EventKind, exp_id: str = "", message: str = "", **kw) -> None:
        best: Best | None = getattr(self, "best", None)
        self.s.on_event(LoopEvent(kind, exp_id, message, best_bpb=best.bpb if best else None, **kw))


def _baseline_decision(result) -> Decision:
    ok = result.val_bpb is not None
    return Decision("baseline" if ok else "crash", "baseline run" if ok else (result.error or "crashed"), 0.0)


def _repeat_judge(crew: ResearchCrew) -> object | None:
    """The memory's repeat judge (an LLM call), built once here rather than lazily in a preparing thread."""
    import logging

    from memory.judge import judge_for_crew

    try:
        return judge_for_crew(crew)
    except Exception as exc:  # a judge that cannot be built must not stop the run: the structure decides
        logging.getLogger("memory").warning("the repeat judge is unavailable (%s); ideas are judged by their "
                                            "structure alone", exc)
        return None
