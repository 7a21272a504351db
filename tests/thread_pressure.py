"""Conditions that make thread races in CPython's AST code show: switch threads as often as possible, and keep
collectable garbage around whose finaliser yields the GIL, so that a collection in the middle of building a
syntax tree hands the interpreter to another thread exactly there (how CPython 3.11's "AST constructor recursion
depth mismatch", gh-106905, shows up in a threaded program). With these, 8 threads parsing 16 versions of
train.py with bare `ast.parse` hit the SystemError in every run tried here (benchmarks/parse_race.py).
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

SWITCH_INTERVAL_S = 1e-6
GC_THRESHOLDS = (50, 10, 10)  # collect often, mostly the young generation
GARBAGE_PACE_S = 0.0005  # one finalisable cycle per half millisecond: always some, never a flood


class _YieldingGarbage:
    """A reference cycle (only the collector frees it) whose finaliser lets another thread run."""

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        time.sleep(0)


@contextmanager
def thread_pressure() -> Iterator[None]:
    interval, thresholds = sys.getswitchinterval(), gc.get_threshold()
    stop = threading.Event()

    def make_garbage() -> None:
        while not stop.wait(GARBAGE_PACE_S):
            _YieldingGarbage()

    sys.setswitchinterval(SWITCH_INTERVAL_S)
    gc.set_threshold(*GC_THRESHOLDS)
    maker = threading.Thread(target=make_garbage, daemon=True)
    maker.start()
    try:
        yield
    finally:
        stop.set()
        maker.join()
        sys.setswitchinterval(interval)
        gc.set_threshold(*thresholds)


def run_threads(work: Callable[[int], Any], threads: int) -> tuple[list[Any], list[BaseException]]:
    """work(i) in `threads` threads started together; (results by i, exceptions raised)."""
    results: list[Any] = [None] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - every failure is the finding
            errors.append(exc)

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return results, errors
