"""Loop overhead and trainer duty cycle.

1. Offline crew: wall time per experiment spent outside training (proposal, gates, git, results, memory,
   analysis, process start-up), as a fraction of upstream's 300 s budget. Target: <= 1 %.
2. LLM crew over the scripted local server, each call answered after an injected delay: trainer duty
   cycle (training seconds / wall seconds, after the baseline runs) with pipelining on and off.
   Target: >= 95 % with pipelining.

Both use the toy experiment repository from tests/ (train.py sleeps through its budget), so the
figures measure the loop, not the model.

    python benchmarks/loop_overhead.py [--experiments 4] [--budget 20] [--delay 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.assemble import build_settings  # noqa: E402
from agents.loop import run_loop  # noqa: E402
from tests.llm_server import Reply, ScriptedLLMServer  # noqa: E402
from tests.test_loop_llm import ScriptedCrew  # noqa: E402
from tests.toyrepo import make_toy_repo  # noqa: E402

UPSTREAM_BUDGET = 300.0


def _trained_after_baselines(records):
    return [r for r in records if r.status in ("keep", "discard", "crash")]


def offline_overhead(experiments: int, budget: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        config = make_toy_repo(repo, loop={"max_experiments": experiments, "time_budget": budget,
                                           "pipelining": False, "noise": {"baseline_repeats": 1}})
        settings = build_settings(repo, config, "bench")
        phases: dict[str, float] = {}
        started = time.monotonic()

        def on_event(event):
            if event.kind == "record" and event.record is not None and event.record.status != "baseline":
                phases[event.exp_id] = time.monotonic()
            if event.kind == "record" and event.record is not None and event.record.status == "baseline":
                phases["baseline"] = time.monotonic()

        settings.on_event = on_event
        outcome = run_loop(settings)
        settings.memory.close()
        wall = time.monotonic() - phases.get("baseline", started)
        trained = _trained_after_baselines(outcome.records)
        training = sum(r.training_seconds or 0.0 for r in trained)
        per_exp = (wall - training) / max(1, len(trained))
        print(f"offline crew: {len(trained)} experiments, {wall:.1f} s wall after the baseline, "
              f"{training:.1f} s training")
        print(f"  overhead outside training: {per_exp:.2f} s per experiment = "
              f"{100 * per_exp / UPSTREAM_BUDGET:.2f} % of a {UPSTREAM_BUDGET:.0f} s budget "
              f"(includes ~{0.1:.1f} s python start-up of the toy train.py)")


def duty_cycle(experiments: int, budget: float, delay: float, pipelining: bool) -> float:
    # one idea per constant: ideas that edit the same line conflict after a keep and must be re-coded
    titles = ["DEPTH 2 -> 3", "EMBEDDING_LR 0.6 -> 0.5", "MATRIX_LR 0.01 -> 0.02", "WARMDOWN_RATIO 0.5 -> 0.4"]
    experiments = min(experiments, len(titles))

    class DelayedCrew(ScriptedCrew):
        def __call__(self, request):
            reply = super().__call__(request)
            return reply.after(delay) if isinstance(reply, Reply) else reply

    with tempfile.TemporaryDirectory() as tmp, ScriptedLLMServer(DelayedCrew(titles), lifetime_s=3600) as server:
        os.environ["ANTHROPIC_API_KEY"] = "bench-key"
        os.environ["ANTHROPIC_BASE_URL"] = server.base_url_anthropic
        repo = Path(tmp) / "repo"
        role = {"model": "anthropic/claude-sonnet-4-5", "timeout_s": delay * 4, "max_retries": 0}
        config = make_toy_repo(repo, preset="full", roles={r: dict(role) for r in
                                                           ("hypothesis", "coder", "reviewer", "analyst")},
                               loop={"max_experiments": experiments, "time_budget": budget, "pipelining": pipelining,
                                     "noise": {"baseline_repeats": 1}, "plausibility": {"max_gain": 0.5}})
        settings = build_settings(repo, config, "bench")
        marks: dict[str, float] = {}
        training_started: dict[str, float] = {}
        finished: dict[str, float] = {}

        def on_event(event):
            now = time.monotonic()
            if event.kind == "phase" and event.message == "training":
                training_started.setdefault(event.exp_id, now)
            if event.kind == "record" and event.record is not None:
                if event.record.status == "baseline":
                    marks["start"] = now
                elif event.record.status in ("keep", "discard", "crash"):
                    finished[event.exp_id] = now

        settings.on_event = on_event
        outcome = run_loop(settings)
        settings.memory.close()
        wall = time.monotonic() - marks["start"]
        trained = _trained_after_baselines(outcome.records)
        training = sum(r.training_seconds or 0.0 for r in trained)
        duty = training / wall
        # steady state: from the first experiment's training start to the last one's result
        window = max(finished.values()) - min(training_started[r.exp_id] for r in trained)
        print(f"LLM crew, {delay:.0f} s per call, {budget:.0f} s budget, pipelining {'on ' if pipelining else 'off'}: "
              f"{len(trained)} experiments, {training:.1f} s training in {wall:.1f} s wall after the baseline -> "
              f"duty cycle {100 * duty:.1f} % ({100 * training / window:.1f} % from the first experiment's start "
              f"to the last one's result)")
        return duty


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", type=int, default=4)
    parser.add_argument("--budget", type=float, default=20.0, help="training seconds per experiment (duty cycle)")
    parser.add_argument("--delay", type=float, default=5.0, help="seconds before the LLM server answers each call")
    parser.add_argument("--offline-budget", type=float, default=2.0)
    args = parser.parse_args()
    offline_overhead(args.experiments, args.offline_budget)
    duty_cycle(args.experiments, args.budget, args.delay, pipelining=True)
    duty_cycle(args.experiments, args.budget, args.delay, pipelining=False)


if __name__ == "__main__":
    main()
