"""Scale-out: experiments per hour with N workers on a local Ray cluster, against the ideal.

Simulated workers: a local Ray instance with 16 logical GPUs; train.py sleeps through its budget and the toy
evaluator scores it (its constants do not move val_bpb, so every result is a plain discard and the figure
measures the engine, not lucky keeps). The crew is the offline policy behind an LLM stub that answers each
call after a fixed latency, with calls bounded per provider as configured (`max_concurrent_calls`).

For N = 1, 2, 4, 8, 16: `rounds * N` experiments after one baseline run. Reported per N:
  - experiments per hour in steady state: each worker's rate once it runs (its results after the first, over
    the time from its first result to its last), summed over the workers; this leaves out the start, when the
    crew's first candidates are not ready yet, but keeps every gap between one run and the next. The whole
    window (first start to last result, start-up included) is shown too;
  - ideal: N * 3600 / (budget + fixed per-run overhead), the overhead being what a run takes beyond its
    budget in the worker (process start, evaluation), measured from the runs themselves;
  - coordinator CPU seconds per experiment (this process, all its threads).

    python benchmarks/scale_out.py [--budget 60] [--latency 30] [--scale 1.0] [--rounds 3] [--workers 1,2,4,8,16]

`--scale` multiplies the budget and the latency alike (0.1: 6 s budget, 3 s per call), keeping their ratio;
fixed costs (process start, git, memory writes) do not shrink with it, so a scaled run is the harder test.
The last line reads `scale_out: <N> workers, <x> % of ideal` for the largest N.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.crewai_env import quiet_crewai  # noqa: E402

quiet_crewai()
from crewai import BaseLLM  # noqa: E402
from pydantic import PrivateAttr  # noqa: E402

from agents.assemble import Overrides, build_settings  # noqa: E402
from agents.config import ROLE_NAMES  # noqa: E402
from agents.crew.llm.offline import OfflineLLM  # noqa: E402
from agents.crew.policy import OfflinePolicy  # noqa: E402
from agents.crew.roles import OFFLINE, ResearchCrew, fill_template  # noqa: E402
from agents.loop import run_loop  # noqa: E402
from tests.toyrepo import make_toy_repo  # noqa: E402

KNOBS = 48  # constants the policy can move: enough distinct experiments for 3 rounds of 16

TRAIN_PY = '''"""Simulated training: sleep through the budget, then let the evaluator score the constants."""

import time

from prepare import TIME_BUDGET, Tokenizer, evaluate_bpb

CUDA = False
{knobs}

settings = ({names},)  # the constants a run would use; here they only name the experiment
tokenizer = Tokenizer.from_directory()
t0 = time.time()
step = 0
training_time = 0.0
while training_time < TIME_BUDGET:
    time.sleep(min(0.5, TIME_BUDGET - training_time))
    step += 1
    training_time = time.time() - t0
val_bpb = evaluate_bpb({{"DEPTH": 4}}, tokenizer, 1)
print("---")
print(f"val_bpb:          {{val_bpb:.6f}}")
print(f"training_seconds: {{training_time:.1f}}")
print(f"total_seconds:    {{training_time:.1f}}")
print(f"num_steps:        {{step}}")
'''


class LatencyLLM(BaseLLM):
    """The offline policy's answer, after `latency` seconds, as a slow provider would give it.

    Calls overlap, and CrewAI may make a call on another thread than the one that set its context, so each
    context is filed under its task description and found again in the prompt.
    """

    llm_type: str = "stub"
    provider: str = "stub"
    _policy: OfflinePolicy = PrivateAttr()
    _latency: float = PrivateAttr()
    _lock: Any = PrivateAttr()
    _contexts: dict = PrivateAttr(default_factory=dict)
    _describe: Any = PrivateAttr()

    def __init__(self, policy: OfflinePolicy, latency: float, lock: threading.Lock, describe, **fields: Any) -> None:
        fields.setdefault("model", "stub/latency")
        super().__init__(**fields)
        self._policy, self._latency, self._lock, self._describe = policy, latency, lock, describe

    def set_context(self, role: str, inputs: dict[str, Any]) -> None:
        with self._lock:
            self._contexts.setdefault(self._describe(role, inputs), []).append((role, dict(inputs)))

    def call(self, messages, tools=None, callbacks=None, available_functions=None, from_task=None, from_agent=None,
             response_model=None, **kwargs):
        prompt = messages if isinstance(messages, str) else "\n".join(str(m.get("content", "")) for m in messages)
        time.sleep(self._latency)
        with self._lock:  # the policy is one shared search
            key = next((k for k, waiting in self._contexts.items() if waiting and k in prompt), None)
            if key is None:
                raise RuntimeError("no context was set for this prompt")
            role, inputs = self._contexts[key].pop(0)
            answer = self._policy.answer(role, inputs)
        if response_model is None:
            return answer.model_dump_json()
        return answer if isinstance(answer, response_model) else response_model.model_validate(answer.model_dump())

    def supports_function_calling(self) -> bool:
        return False

    def supports_stop_words(self) -> bool:
        return False

    def get_input_tokens_count(self, messages: Any, tools: Any = None, response_model: Any = None) -> int:
        return 0


def one_size(workers: int, budget: float, latency: float, rounds: int, tmp: Path) -> dict:
    repo = tmp / f"repo{workers}"
    experiments = rounds * workers
    config = make_toy_repo(repo, loop={"time_budget": budget, "max_experiments": experiments,
                                       "noise": {"baseline_repeats": 1}, "max_candidates_per_experiment": 1000},
                           crew_extra={"max_concurrent_calls": {"stub": 8 * workers + 8}})
    knobs = "\n".join(f"KNOB_{i:02d}_LR = 0.01" for i in range(KNOBS))
    names = ", ".join(f"KNOB_{i:02d}_LR" for i in range(KNOBS))
    (repo / "train.py").write_text(TRAIN_PY.format(knobs=knobs, names=names))
    os.system(f"cd {repo} && git -c user.name=b -c user.email=b@l commit -qam 'simulated train.py'")
    settings = build_settings(repo, config, "bench", Overrides(workers=workers))
    policy, lock = OfflinePolicy(seed=settings.config.loop.seed), threading.Lock()
    def describe(role: str, inputs: dict) -> str:
        template = settings.config.role(role).task.description
        return fill_template(role, template, {"program": settings.program, **inputs}).strip()

    llms = {}
    for role in ROLE_NAMES:
        llms[role] = LatencyLLM(policy, latency, lock, describe)
        llms[role + OFFLINE] = OfflineLLM(policy)
    settings.crew = ResearchCrew(settings.config, settings.program, settings.ledger, llms)
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    worker_of: dict[str, str] = {}

    def on_event(event) -> None:
        now = time.monotonic()
        if event.kind == "phase" and event.message == "training":
            starts.setdefault(event.exp_id, now)
            worker_of[event.exp_id] = event.worker
        if event.kind == "record" and event.record is not None and event.record.status in ("keep", "discard", "crash"):
            ends[event.exp_id] = now

    settings.on_event = on_event
    cpu0 = time.process_time()
    try:
        outcome = run_loop(settings)
    finally:
        settings.memory.close()
    cpu = time.process_time() - cpu0
    trained = [r for r in outcome.records if r.status in ("keep", "discard", "crash")]
    window = max(ends.values()) - min(starts[r.exp_id] for r in trained)
    by_worker: dict[str, list[float]] = {}
    for r in trained:
        by_worker.setdefault(worker_of[r.exp_id], []).append(ends[r.exp_id])
    rates = [(len(t) - 1) * 3600 / (max(t) - min(t)) for t in by_worker.values() if len(t) > 1]
    steady = sum(rates) if rates else len(trained) * 3600 / window
    overhead = statistics.fmean((r.wall_seconds or budget) - budget for r in outcome.records
                                if r.wall_seconds is not None)
    per_hour = steady
    ideal = workers * 3600 / (budget + overhead)
    follow_ups = len(list((repo / "runs" / "bench" / "journal").glob("*.[rc]*.json")))
    return {"workers": workers, "experiments": len(trained), "window_s": window, "per_hour": per_hour,
            "whole_window_per_hour": len(trained) * 3600 / window,
            "ideal": ideal, "efficiency": 100 * per_hour / ideal, "overhead_s": overhead,
            "cpu_per_exp": cpu / max(1, len(outcome.records)), "crashes": sum(r.status == "crash" for r in trained),
            "follow_ups": follow_ups}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds per experiment")
    parser.add_argument("--latency", type=float, default=30.0, help="seconds per LLM call")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies budget and latency (keeps the ratio)")
    parser.add_argument("--rounds", type=int, default=3, help="experiments per worker")
    parser.add_argument("--workers", default="1,2,4,8,16")
    args = parser.parse_args()
    budget, latency = args.budget * args.scale, args.latency * args.scale
    sizes = [int(n) for n in args.workers.split(",")]

    import ray

    ray.init(num_cpus=os.cpu_count(), num_gpus=max(sizes), include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    print(f"budget {budget:g} s, {latency:g} s per LLM call (scale {args.scale:g} of {args.budget:g} s / "
          f"{args.latency:g} s), {args.rounds} experiments per worker, {os.cpu_count()} cores, "
          f"{max(sizes)} logical GPUs", flush=True)
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="scale-out-") as tmp:
            for n in sizes:
                r = one_size(n, budget, latency, args.rounds, Path(tmp))
                results.append(r)
                print(f"N={r['workers']:>2}: {r['experiments']:>3} experiments in {r['window_s']:7.1f} s "
                      f"({r['whole_window_per_hour']:.1f}/h over the whole window); steady state "
                      f"{r['per_hour']:7.1f}/h, ideal {r['ideal']:7.1f}/h (overhead {r['overhead_s']:.2f} s per run) "
                      f"= {r['efficiency']:5.1f} %; coordinator CPU {r['cpu_per_exp']:.2f} s per experiment; "
                      f"{r['crashes']} crashes, {r['follow_ups']} re-runs/confirmations", flush=True)
    finally:
        ray.shutdown()
    last = results[-1]
    print(f"scale_out: {last['workers']} workers, {last['efficiency']:.1f} % of ideal")


if __name__ == "__main__":
    main()
