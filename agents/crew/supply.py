"""Candidates prepared ahead of the workers, several at once.

With N workers the coordinator wants a reviewed candidate the moment a worker frees up. `CandidateSupply`
runs `prepare()` (idea → gates → edit → review, see candidates.py) in threads: it keeps `ready + preparing`
at the level the coordinator asks for, and the crew's own per-provider limits (`max_concurrent_calls`)
bound how many LLM calls those threads really make at once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from agents.crew.candidates import Candidate
from agents.crew.policy import SearchExhausted


class CandidateSupply:
    def __init__(self, prepare: Callable[[], Candidate | None], max_parallel: int):
        self._prepare = prepare
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_parallel), thread_name_prefix="prepare")
        self._lock = threading.RLock()  # a future already done runs its callback (which locks) at once
        self._ready: deque[Candidate] = deque()
        self._preparing: dict[Future, float] = {}  # preparation -> when it started
        self._error: BaseException | None = None
        self.exhausted: str | None = None  # why the crew has nothing new left to propose

    @property
    def ready(self) -> int:
        return len(self._ready)

    @property
    def preparing(self) -> int:
        with self._lock:
            return len(self._preparing)

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

    def top_up(self, wanted: int) -> None:
        """Start preparations until ready + preparing reaches `wanted` (nothing once the search is exhausted)."""
        self._raise_error()
        with self._lock:
            while self.exhausted is None and len(self._ready) + len(self._preparing) < wanted:
                future = self._pool.submit(self._prepare)
                self._preparing[future] = time.monotonic()
                future.add_done_callback(self._done)

    def rework(self, job: Callable[[], Candidate | None]) -> None:
        """Run `job` (say, re-coding a candidate whose edit conflicts with a new best) in a preparing thread."""
        with self._lock:
            future = self._pool.submit(job)
            self._preparing[future] = time.monotonic()
            future.add_done_callback(self._done)

    def take(self) -> Candidate | None:
        self._raise_error()
        with self._lock:
            return self._ready.popleft() if self._ready else None

    def wait_for_one(self, timeout: float) -> None:
        """Block until a preparation finishes (or the timeout passes): for a loop with nothing else to do."""
        with self._lock:
            pending = list(self._preparing)
        if pending and not self._ready:
            from concurrent.futures import FIRST_COMPLETED, wait

            wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)

    def leftovers(self) -> list[Candidate]:
        """Prepared and not handed out yet (at the end of a run, the journal keeps them for the next one)."""
        with self._lock:
            return list(self._ready)

    def close(self) -> None:
        """Let running preparations finish (their results are journalled), start no new one."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _done(self, future: Future) -> None:
        with self._lock:
            self._preparing.pop(future, None)
            if future.cancelled():
                return
            exc = future.exception()
            if isinstance(exc, SearchExhausted):
                self.exhausted = str(exc)
            elif exc is not None:
                self._error = exc
            elif future.result() is not None:
                self._ready.append(future.result())

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
