"""Candidates prepared ahead of the workers, several at once.

With N workers the coordinator wants a reviewed candidate the moment a worker frees up. `CandidateSupply`
runs `prepare()` (idea → gates → edit → review, see candidates.py) in threads: it keeps `ready + preparing`
at the level the coordinator asks for, and the crew's own per-provider limits (`max_concurrent_calls`)
bound how many LLM calls those threads really make at once.

A preparation never raises into the coordinator: it ends as a `Prepared` outcome, which the coordinator
collects in its own thread (`outcomes()`) and records there; a candidate it accepts is handed back with
`put_ready`. Each preparation carries a serial number in start order, so the stall guard can tell the ones
started before a role was given up from those after.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from agents.crew.candidates import Candidate, Prepared


class CandidateSupply:
    def __init__(self, prepare: Callable[[], Prepared], max_parallel: int):
        self._prepare = prepare
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_parallel), thread_name_prefix="prepare")
        self._lock = threading.RLock()  # a future already done runs its callback (which locks) at once
        self._ready: deque[Candidate] = deque()
        self._preparing: dict[Future, float] = {}  # preparation -> when it started (until its outcome is taken)
        self._finished: deque[Prepared] = deque()
        self.started = 0  # new candidates started so far (re-work of an old one is not a new candidate)
        self.exhausted: str | None = None  # why the crew has nothing new left to propose
        self._closed = False

    @property
    def ready(self) -> int:
        with self._lock:
            return len(self._ready)

    @property
    def preparing(self) -> int:
        """Preparations running, or finished and not yet collected."""
        with self._lock:
            return len(self._preparing)

    @property
    def idle(self) -> bool:
        with self._lock:
            return not self._ready and not self._preparing

    def oldest_age(self) -> float:
        """Seconds the longest-running preparation has taken so far (0 when none runs): a lower bound on how
        long preparing takes, known before any preparation has finished."""
        with self._lock:
            started = min(self._preparing.values(), default=None)
        return 0.0 if started is None else time.monotonic() - started

    def add(self, candidate: Candidate) -> None:
        """A candidate from elsewhere (resumed from the journal) goes first."""
        with self._lock:
            self._ready.appendleft(candidate)

    def put_ready(self, candidate: Candidate) -> None:
        """A prepared candidate the coordinator has written ahead: ready to hand out."""
        with self._lock:
            self._ready.append(candidate)

    def top_up(self, wanted: int, limit: int | None = None) -> None:
        """Start preparations until ready + preparing reaches `wanted` (at most `limit` new ones; none once the
        search is exhausted or the supply is closed)."""
        with self._lock:
            while (self.exhausted is None and not self._closed and len(self._ready) + len(self._preparing) < wanted
                   and (limit is None or limit > 0)):
                self.started += 1
                self._submit(self._prepare, self.started)
                limit = None if limit is None else limit - 1

    def rework(self, job: Callable[[], Prepared]) -> None:
        """Run `job` (say, re-coding a candidate whose edit conflicts with a new best) in a preparing thread."""
        with self._lock:
            if not self._closed:
                self._submit(job, self.started)

    def take(self) -> Candidate | None:
        with self._lock:
            return self._ready.popleft() if self._ready else None

    def outcomes(self) -> list[Prepared]:
        """What the preparations that finished came to, in the order they finished (the coordinator's thread)."""
        with self._lock:
            done = list(self._finished)
            self._finished.clear()
            for future in [f for f in self._preparing if f.done()]:
                del self._preparing[future]
        return done

    def wait_for_one(self, timeout: float) -> None:
        """Block until a preparation finishes (or the timeout passes): for a loop with nothing else to do."""
        with self._lock:
            pending = [f for f in self._preparing if not f.done()]
            ready = bool(self._ready or self._finished)
        if pending and not ready:
            wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
        elif not pending and not ready:
            time.sleep(timeout)

    def leftovers(self) -> list[Candidate]:
        """Prepared and not handed out yet (at the end of a run, the journal keeps them for the next one)."""
        with self._lock:
            return list(self._ready)

    def close(self, wait: bool = True) -> None:
        """Start no new preparation. `wait`: let running ones finish (their outcomes are collected and recorded
        after); without it (a second Ctrl-C) they are abandoned: nothing of theirs is written."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def _submit(self, job: Callable[[], Prepared], serial: int) -> None:
        future = self._pool.submit(_numbered, job, serial)
        self._preparing[future] = time.monotonic()
        future.add_done_callback(self._done)

    def _done(self, future: Future) -> None:
        if future.cancelled():
            with self._lock:
                self._preparing.pop(future, None)
            return
        exc = future.exception()
        if exc is None:
            outcome = future.result()
        else:  # a preparation never raises (candidates.py); were it to, it is still that candidate's failure
            outcome = Prepared(error=f"{type(exc).__name__}: {exc}", trace="".join(traceback.format_exception(exc)))
        with self._lock:
            self._finished.append(outcome)


def _numbered(job: Callable[[], Prepared], serial: int) -> Prepared:
    prepared = job()
    prepared.serial = serial
    return prepared
