"""Sandbox start-up overhead per run: what bwrap and Landlock add to starting train.py. Target: <= 0.5 s on CPU.

A trivial train.py (it writes the evaluator's record and exits) runs through `run_training` with each sandbox
that starts here and with none; the overhead is the difference of the medians of the harness's wall time per
run, so scratch set-up, hash checks and record handling (the same in every mode) cancel out. The one-time probe
that `auto` makes at the start of a run is reported too.

    python benchmarks/sandbox_overhead.py [--runs 15] [--torch]

--torch makes the trivial train.py import torch first, as the real one does (a bigger interpreter start).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.bench import sandbox  # noqa: E402
from agents.bench.runner import run_training  # noqa: E402
from tests.test_runner import FAKE_PREPARE  # noqa: E402

TARGET_S = 0.5


def measure(workdir: Path, runs_dir: Path, name: str, runs: int) -> list[float]:
    walls = []
    for i in range(runs):
        result = run_training(workdir, runs_dir, f"{name}-{i}", time_budget=1, seed=1, sandbox=name)
        if result.status != "ok":
            raise SystemExit(f"{name}: run {i} failed: {result.error}\n{result.log_tail}")
        walls.append(result.wall_seconds)
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--torch", action="store_true", help="the trivial train.py imports torch first")
    args = parser.parse_args()

    backends = []
    for name in sandbox.BACKENDS:
        started = time.perf_counter()
        reason = sandbox.probe(name)
        probe_s = time.perf_counter() - started
        print(f"probe {name:<8} {probe_s:6.3f} s  {'starts' if reason is None else 'unavailable: ' + reason}")
        if reason is None:
            backends.append(name)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "work"
        workdir.mkdir()
        (workdir / "prepare.py").write_text(textwrap.dedent(FAKE_PREPARE))
        (workdir / "train.py").write_text(("import torch\n" if args.torch else "") +
                                          "import prepare\nprepare.write_record(1.0)\n")
        medians = {}
        for name in ["none", *backends]:
            measure(workdir, Path(tmp) / "runs", name, 2)  # warm the page cache for this mode
            walls = measure(workdir, Path(tmp) / "runs", name, args.runs)
            medians[name] = statistics.median(walls)
            print(f"{name:<8} wall per run: median {medians[name]:.3f} s, min {min(walls):.3f} s, "
                  f"max {max(walls):.3f} s over {args.runs} runs")
    for name in backends:
        overhead = medians[name] - medians["none"]
        verdict = "within" if overhead <= TARGET_S else "OVER"
        print(f"{name:<8} start-up overhead per run: {overhead:+.3f} s ({verdict} the {TARGET_S} s target)")


if __name__ == "__main__":
    main()
