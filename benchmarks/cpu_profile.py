"""Signal of train.py's profile on this machine: steps, training seconds, overrun, eval time and σ over seeds.

Runs the repository's train.py (or --train-py FILE) N times with different seeds, each through the harness's own
runner (scratch directory, scrubbed environment, the default sandbox), at a fixed budget, one after another, and
prints one line per run and a summary:

    steps          optimizer steps (min-max)         the CPU profile aims at >= 200 in 20 s on 2 cores
    training_s     training seconds train.py counted  at most the budget + 5 % (it stops before a step that
    overrun        max(training_s - budget, 0)        would end past the budget)
    eval_s         the evaluator's own seconds        paid by every run
    sigma          sample standard deviation of val_bpb over the seeds (the keep rule's noise)

Timings depend on what else the machine runs: the load average is printed before and after (a quiet machine
reads below the core count), and `--nice N` runs the measurement at that niceness where allowed.

    python benchmarks/cpu_profile.py [--seeds 5] [--budget 20] [--train-py FILE] [--nice -5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agents.bench.runner import run_training  # noqa: E402

OVERRUN_LIMIT = 0.05  # training seconds may exceed the budget by this fraction at most


@dataclass
class SeedRun:
    seed: int
    val_bpb: float | None
    steps: int | None
    training_seconds: float | None
    eval_seconds: float | None
    wall_seconds: float
    error: str = ""


def train_seeds(train_py: str, seeds: list[int], budget: float, *, prepare_py: str | None = None,
                label: str = "run", sandbox: str = "auto", on_run=None) -> list[SeedRun]:
    """Run `train_py` (text) once per seed at `budget` seconds through the harness's runner; in order."""
    prepare_py = prepare_py if prepare_py is not None else (REPO / "prepare.py").read_text()
    out = []
    with tempfile.TemporaryDirectory(prefix="autoresearch-bench-") as tmp:
        work, logs = Path(tmp) / "work", Path(tmp) / "logs"
        work.mkdir()
        (work / "train.py").write_text(train_py)
        (work / "prepare.py").write_text(prepare_py)
        for seed in seeds:
            result = run_training(work, logs, f"{label}-{seed}", time_budget=budget, seed=seed, sandbox=sandbox)
            summary = result.summary or {}
            steps = summary.get("num_steps")
            run = SeedRun(seed, result.val_bpb, int(steps) if steps is not None else None,
                          summary.get("training_seconds"), result.eval_seconds, result.wall_seconds,
                          "" if result.ok else result.error)
            out.append(run)
            if on_run is not None:
                on_run(run)
    return out


def describe(runs: list[SeedRun], budget: float) -> dict:
    """The figures of a set of runs (None where no run gave them)."""
    ok = [r for r in runs if r.val_bpb is not None]
    steps = [r.steps for r in ok if r.steps is not None]
    seconds = [r.training_seconds for r in ok if r.training_seconds is not None]
    evals = [r.eval_seconds for r in ok if r.eval_seconds is not None]
    values = [r.val_bpb for r in ok]
    return {
        "runs": len(runs), "ok": len(ok),
        "steps_min": min(steps, default=None), "steps_max": max(steps, default=None),
        "training_s_max": max(seconds, default=None),
        "overrun_s": max((s - budget for s in seconds), default=None),
        "eval_s_mean": statistics.fmean(evals) if evals else None,
        "mean": statistics.fmean(values) if values else None,
        "sigma": statistics.stdev(values) if len(values) > 1 else None,
    }


def _line(run: SeedRun) -> str:
    if run.val_bpb is None:
        return f"  seed {run.seed}: failed ({run.error})"
    return (f"  seed {run.seed}: val_bpb {run.val_bpb:.6f}  steps {run.steps}  training_s {run.training_seconds}  "
            f"eval_s {run.eval_seconds}  wall_s {run.wall_seconds:.1f}  load {os.getloadavg()[0]:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="runs, seeds 1..N (default 5)")
    parser.add_argument("--budget", type=float, default=20.0, help="training seconds per run (default 20)")
    parser.add_argument("--train-py", type=Path, default=REPO / "train.py", help="the train.py to measure")
    parser.add_argument("--nice", type=int, default=None, help="run at this niceness (negative needs privileges)")
    parser.add_argument("--sandbox", default="auto", help="auto | bwrap | landlock | none (default auto)")
    args = parser.parse_args(argv)
    if args.seeds < 2 or not args.budget > 0:
        parser.error("--seeds must be at least 2 (a spread needs two runs) and --budget positive")
    if args.nice is not None:
        try:
            os.nice(args.nice - os.nice(0))
        except OSError as exc:
            print(f"note: could not set niceness {args.nice} ({exc.strerror}); measuring at {os.nice(0)}")
    from prepare import NotPreparedError, ensure_prepared
    try:
        ensure_prepared()
    except NotPreparedError as exc:  # one line, before N runs fail the same way
        print(f"cpu_profile: {exc}")
        return 2
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    runs = train_seeds(args.train_py.read_text(), list(range(1, args.seeds + 1)), args.budget, sandbox=args.sandbox,
                       on_run=lambda run: print(_line(run), flush=True))
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    f = describe(runs, args.budget)
    if not f["ok"]:
        print("no run finished")
        return 1
    limit = args.budget * (1 + OVERRUN_LIMIT)
    print(f"steps:       {f['steps_min']}-{f['steps_max']} (min-max over {f['ok']} runs)")
    print(f"training_s:  max {f['training_s_max']:.1f} for a budget of {args.budget:g} (limit {limit:.1f}: "
          f"{'within' if f['training_s_max'] <= limit else 'OVER'})")
    print(f"overrun:     {max(f['overrun_s'], 0.0):.2f} s at most")
    print(f"eval_s:      {f['eval_s_mean']:.2f} s on average")
    print(f"val_bpb:     mean {f['mean']:.6f}")
    print(f"sigma:       {f['sigma']:.6f} over {f['ok']} seeds")
    return 0 if f["ok"] == f["runs"] else 1


if __name__ == "__main__":
    sys.exit(main())
