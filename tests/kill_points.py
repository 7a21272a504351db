"""Run the loop in this process and SIGKILL it at a named point, as a power cut would (tests only).

    python -m tests.kill_points REPO CONFIG [POINT@N] [RAY_ADDRESS]

The points are hooks this module installs on the loop's public seams (the crew's roles, the journal, git, the
memory), so the production loop carries no test code. N counts passes from the process start (a 3rd pass is
the first experiment after two baseline runs). Without a point the loop runs to its end and prints
`STOP: <reason>`. `TEST_RUN_MARKER` in the environment is passed on to every train.py, so a test can tell its
own runs from others'.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from agents.assemble import Overrides, build_settings
from agents.crew.roles import ResearchCrew
from agents.loop import run_loop
from agents.record.gitops import ExperimentRepo
from agents.record.journal import Journal, JournalEntry, Phase
from agents.record.results import ResultsStore

POINTS = {
    "propose": "the crew is proposing: nothing is written yet",
    "reviewed": "coded and reviewed, written ahead, not committed",
    "commit": "about to write train.py and commit",
    "training": "train.py is running (left as an orphan), its pid journalled",
    "trained": "the evaluator's record is in, nothing decided",
    "memory": "results written; memory and the record's observers (a sampler's study) not yet",
    "analyse": "recorded, the analyst is explaining it",
}


class KillAt:
    """Dies at the n-th pass of `point`."""

    def __init__(self, point: str, nth: int):
        if point not in POINTS:
            raise SystemExit(f"unknown kill point {point!r}; one of {', '.join(POINTS)}")
        self.point, self.nth, self.seen = point, nth, 0
        self._lock = threading.Lock()

    def passing(self, point: str) -> None:
        if point != self.point:
            return
        with self._lock:
            self.seen += 1
            if self.seen == self.nth:
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)

    def install(self) -> None:
        before, after = self._before, self._after

        before(ResearchCrew, "propose", "propose")
        before(ResearchCrew, "analyse", "analyse")
        before(ExperimentRepo, "commit_text", "commit")
        after(ResultsStore, "append", "memory")
        write = Journal.write
        trained: set[str] = set()
        started: set[tuple[str, float]] = set()

        def journal_write(journal: Journal, entry: JournalEntry) -> None:
            write(journal, entry)
            if entry.phase == Phase.REVIEWED:
                self.passing("reviewed")
            if entry.phase == Phase.TRAINED and entry.exp_id not in trained:
                trained.add(entry.exp_id)
                self.passing("trained")
            if entry.phase == Phase.COMMITTED and entry.started and (entry.exp_id, entry.started) not in started:
                started.add((entry.exp_id, entry.started))  # handed to a worker: its pid is in the journal now
                self.passing("training")

        Journal.write = journal_write  # type: ignore[method-assign]

    def _before(self, cls: type, name: str, point: str) -> None:
        original: Callable = getattr(cls, name)

        def hooked(*args, **kwargs):
            self.passing(point)
            return original(*args, **kwargs)

        setattr(cls, name, hooked)

    def _after(self, cls: type, name: str, point: str) -> None:
        original: Callable = getattr(cls, name)

        def hooked(*args, **kwargs):
            result = original(*args, **kwargs)
            self.passing(point)
            return result

        setattr(cls, name, hooked)


def main(argv: list[str]) -> None:
    repo, config = Path(argv[0]), Path(argv[1])
    if len(argv) > 2 and argv[2]:
        point, _, nth = argv[2].partition("@")
        KillAt(point, int(nth or 1)).install()
    address = argv[3] if len(argv) > 3 else None
    settings = build_settings(repo, config, "t1", Overrides(address=address) if address else None)
    if os.environ.get("TEST_RUN_MARKER"):  # lets a test find this run's train.py processes (on Ray workers too)
        settings.extra_env = {"TEST_RUN_MARKER": os.environ["TEST_RUN_MARKER"]}
    try:
        outcome = run_loop(settings)
    finally:
        settings.memory.close()
    print("STOP:", outcome.stop_reason)


if __name__ == "__main__":
    main(sys.argv[1:])
