"""What MLflow tracking costs the research loop: the same offline toy run with tracking off, on a local
SQLite store, on a store that refuses connections, and on one that accepts them and never answers.

Printed per case: the loop's wall time, the time spent inside `Tracker.log` on the loop's thread (the only
tracking work the loop waits for while it runs), the wait at the end of the run (`Tracker.finish`), and how
many experiments reached the store. Target: tracking adds no more than the bounded end-of-run wait.

    python benchmarks/tracking_overhead.py [--experiments 4] [--budget 1]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.assemble import build_settings  # noqa: E402
from agents.loop import run_loop  # noqa: E402
from tests.toyrepo import make_toy_repo  # noqa: E402


class SilentServer:
    """Accepts TCP connections and never answers: a tracking server that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_case(name: str, tracking, experiments: int, budget: float) -> None:
    with tempfile.TemporaryDirectory(prefix="tracking-bench-") as tmp:
        repo = Path(tmp) / "repo"
        config = make_toy_repo(repo, loop={"max_experiments": experiments, "time_budget": budget},
                               crew_extra={"tracking": tracking})
        settings = build_settings(repo, config, "bench")
        tracker = settings.tracker
        spent = {"log": 0.0, "finish": 0.0}
        log, finish = tracker.log, tracker.finish

        def timed_log(record):
            t = time.perf_counter()
            log(record)
            spent["log"] += time.perf_counter() - t

        def timed_finish(records, interrupted=False):
            t = time.perf_counter()
            finish(records, interrupted)
            spent["finish"] += time.perf_counter() - t

        tracker.log, tracker.finish = timed_log, timed_finish
        started = time.perf_counter()
        try:
            outcome = run_loop(settings)
        finally:
            settings.memory.close()
        wall = time.perf_counter() - started
        logged = len(outcome.records) - tracker.pending if tracker.enabled else 0
        print(f"{name:<22} loop {wall:6.1f} s   in log() {spent['log'] * 1000:7.2f} ms   finish {spent['finish']:5.1f} s"
              f"   logged {logged}/{len(outcome.records)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=4)
    parser.add_argument("--budget", type=float, default=1.0, help="training seconds per toy experiment")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")  # the hanging store: each try gives up after 5 s
    silent = SilentServer()
    cases = [("off", False), ("local sqlite", {}),
             ("refused connections", {"uri": f"http://127.0.0.1:{closed_port()}"}),
             ("never answers", {"uri": f"http://127.0.0.1:{silent.port}"})]
    for name, tracking in cases:
        one_case(name, tracking, args.experiments, args.budget)


if __name__ == "__main__":
    main()
