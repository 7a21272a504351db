"""Stopping a run when the user asks: Ctrl-C (SIGINT) or SIGTERM, once to stop soon, twice to stop now.

The first signal sets the switch and says one line at once. From then on no model call and no training starts:
`check()` raises `StopRequested` wherever one would (the crew before a role's call, the SDKs' HTTP transport
before every request, retries included; the coordinator before handing a run to a worker). What is in flight
finishes and is recorded or journalled, so the same command resumes it.

The second signal raises `KeyboardInterrupt` in the main thread (at the end of a `critical()` write if it lands
in one): the coordinator abandons the model calls in flight, stops train.py, releases the lock, and the command
ends the process (`exit_now`) without waiting for threads still blocked on a reply. A watchdog started with the
second signal ends the process after `HARD_EXIT_S` whatever the way out meets.

`StopRequested` is a `BaseException`: the `except Exception` of CrewAI, the SDKs and the crew's own retries
must never mistake a stop for a failed call (an interrupt is not a model failure and never a refusal).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

HANDLED = (signal.SIGINT, signal.SIGTERM)
HARD_EXIT_S = 4.0  # after the second signal, the process ends by this time at the latest
EXIT_CODE = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C


class StopRequested(BaseException):
    """Raised where a model call or a training run would start after the user asked the run to stop."""


class StopSwitch:
    """The process's stop switch (signals are per process). Thread-safe; `stopping` never goes back."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        self._lock = threading.RLock()  # the signal handler takes it too, in the main thread
        self._signals = 0
        self._critical = 0  # depth of `critical()` blocks in the main thread
        self._interrupt_pending = False
        self.reason = ""

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def check(self) -> None:
        """Raise `StopRequested` once a stop was asked for (call it just before starting a call or a run)."""
        if self._stopping.is_set():
            raise StopRequested(self.reason or "the run is stopping")

    def request(self, reason: str) -> bool:
        """Ask the run to stop soon; True the first time."""
        with self._lock:
            first = not self._stopping.is_set()
            if first:
                self.reason = reason
                self._stopping.set()
            return first

    def reset(self) -> None:
        with self._lock:
            self._stopping.clear()
            self._signals, self.reason = 0, ""
            self._critical, self._interrupt_pending = 0, False

    @contextmanager
    def critical(self) -> Iterator[None]:
        """A write that must not be cut in two (a record with its journal phase, a commit with its ref): a second
        Ctrl-C that lands inside takes effect when the block ends, a few milliseconds later. Main thread only
        (where signal handlers run); elsewhere the block just runs."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
            if self._critical == 0 and self._interrupt_pending:
                self._interrupt_pending = False
                raise KeyboardInterrupt

    @contextmanager
    def on_signals(self, say: Callable[[str], None], what: str = "the run") -> Iterator[StopSwitch]:
        """Handle SIGINT and SIGTERM in this block (main thread only; elsewhere the block just runs).

        `say(line)` is called from the handler with the one line the user sees after the first signal.
        """
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self.reset()

        def handle(signum: int, frame: object) -> None:
            with self._lock:
                self._signals += 1
                count = self._signals
            if count == 1:
                name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
                self.request(f"{name} pressed" if signum == signal.SIGINT else f"{name} received")
                try:
                    say(f"stopping: {name} — no new model call or training starts; what is in flight finishes and "
                        f"is kept, and the same command resumes {what}; press Ctrl-C again to stop now")
                except Exception:  # the display must never swallow the stop
                    pass
                return
            if count > 2:
                return  # already leaving; the watchdog ends the process if the way out is blocked
            # whatever the way out meets (a Ray shutdown, a store that hangs), the process ends within seconds
            watchdog = threading.Timer(HARD_EXIT_S, exit_now, args=(EXIT_CODE,))
            watchdog.daemon = True
            watchdog.start()
            if self._critical:
                self._interrupt_pending = True
                return
            raise KeyboardInterrupt

        previous = {sig: signal.signal(sig, handle) for sig in HANDLED}
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


SWITCH = StopSwitch()


def check() -> None:
    """`SWITCH.check()`: raise `StopRequested` once the run was asked to stop."""
    SWITCH.check()


def exit_now(code: int) -> None:
    """End the process at once (after a second Ctrl-C): flush what was said, skip joining threads that may be
    blocked on a model's reply for minutes. Everything that matters is already on disk (journal, results)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)
