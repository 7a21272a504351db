"""The offline policy against random search on a synthetic val_bpb, through the real train.py edit path.

The objective is a cheap stand-in for training: a sum of bowls, one per constant the policy can tune (in grid
units, each with a random optimum and weight, some constants irrelevant, one learning rate coupled to the batch
size), a fixed random effect per structural variant, plus Gaussian seed noise. Every candidate is a real edit
of train.py (`agents.crew.edits.apply_edit`), and the objective reads the constants back out of the edited text.

The searchers get the same number of runs on the same objectives, with the same seeds:
  policy         OfflinePolicy proposing; keep/discard/re-run by the loop's own rule (agents.bench.decide, sigma_k 2 as
                 in crew.yaml: a 2-sigma gain, or fewer lines at equal val_bpb; a re-run counts as a run)
  tpe, cmaes     the samplers of the `tpe` and `cmaes` presets (agents.crew.hpo: Optuna's TPESampler and
                 CmaEsSampler over every constant at once, the `near` box), told each decided run as in the loop,
                 under the same keep rule (needs the extra: pip install 'autoresearch-crew[hpo]')
  random-moves   one uniformly random move of the same kinds each time, same keep rule (no adaptation)
  random-search  uniform random configurations inside a box, the best measured one wins (classic HPO baseline);
                 "near" uses the box the policy's local steps span, "full" the policy's outer bounds

Reported: the true (noise-free) val_bpb of each searcher's final choice, mean over objectives, and how much of
the starting gap to the optimum it closed. Run: python benchmarks/offline_policy.py [--steps 40 --seeds 10]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.bench.decide import decide  # noqa: E402
from agents.crew.edits import apply_edit, diff_stats  # noqa: E402
from agents.crew.policy import (  # noqa: E402
    FEATURES,
    REMOVALS,
    STEPS,
    OfflinePolicy,
    SearchExhausted,
    grid_bounds,
    grid_step,
    grid_units,
    read_train_py,
)
from agents.crew.schemas import CodeEdit  # noqa: E402
from agents.record.results import ExperimentRecord  # noqa: E402

TRAIN_PY = Path(__file__).resolve().parents[1] / "train.py"
NOISE = 0.002  # seed noise sigma of one run (val_bpb)
KEEP_SIGMAS = 2.0
SAMPLERS = ("tpe", "cmaes")
WIDTH = {"log": 4.0, "linear": 4.0, "beta": 4.0, "int": 1.0, "pow2": 1.0}  # a bowl's natural width, grid units


@dataclass
class Objective:
    """val_bpb as a function of train.py's text (None: train.py would refuse the configuration)."""

    base: str
    device: str
    optimum: dict[str, float]  # knob -> best offset from the start, grid units
    weight: dict[str, float]
    variant_effect: dict[tuple[str, str], float]
    removal_effect: dict[str, float]

    def true_value(self, text: str) -> float | None:
        start, now = read_train_py(self.base, self.device), read_train_py(text, self.device)
        value = 1.0
        offsets = {}
        if not now.accepts({}):
            return None  # train.py would exit at its divisibility check
        for name, knob in start.knobs.items():
            if name in now.knobs:
                offsets[name] = grid_units(knob.kind, knob.value, now.knobs[name].value)
        for name, offset in offsets.items():
            best = self.optimum[name]
            if name == "MATRIX_LR" and "TOTAL_BATCH_SIZE" in offsets:
                best += 2.0 * offsets["TOTAL_BATCH_SIZE"]  # larger batches want larger steps
            kind = start.knobs[name].kind
            value += self.weight[name] * ((offset - best) / WIDTH[kind]) ** 2
        for feature in FEATURES:
            state = now.features.get(feature.name)
            value += self.variant_effect.get((feature.name, state), 0.0)
        for removal in REMOVALS:
            if start.removals.get(removal.title) is not None and now.removals.get(removal.title) is None:
                value += self.removal_effect[removal.title]
        return value

    def measure(self, text: str, rng: random.Random) -> float | None:
        value = self.true_value(text)
        return None if value is None else value + rng.gauss(0.0, NOISE)

    def optimum_value(self) -> float:
        """A lower bound: every bowl at its bottom, every structural effect at its best."""
        best_variants = sum(min(0.0, *(self.variant_effect.get((f.name, v[0]), 0.0) for v in f.variants))
                            for f in FEATURES)
        return 1.0 + best_variants + sum(min(0.0, e) for e in self.removal_effect.values())


def make_objective(seed: int, base: str, device: str = "cpu") -> Objective:
    rng = random.Random(seed)
    space = read_train_py(base, device)
    optimum, weight = {}, {}
    for name, knob in space.knobs.items():
        width = WIDTH[knob.kind]
        optimum[name] = round(rng.uniform(-1.5, 1.5) * width) if knob.kind in ("int", "pow2") \
            else rng.uniform(-1.5, 1.5) * width
        weight[name] = 0.0 if rng.random() < 0.3 else 0.01 * rng.uniform(0.2, 1.0)
    variants = {(f.name, label): rng.gauss(0.002, 0.006) for f in FEATURES for label, _, _ in f.variants
                if label != space.features.get(f.name)}
    removals = {r.title: rng.gauss(0.001, 0.003) for r in REMOVALS}
    return Objective(base, device, optimum, weight, variants, removals)


def run_policy(objective: Objective, steps: int, seed: int) -> float:
    return _hill_climb(objective, steps, seed, OfflinePolicy(seed=seed))


def run_random_moves(objective: Objective, steps: int, seed: int) -> float:
    return _hill_climb(objective, steps, seed, RandomMoves(seed))


def run_sampler(objective: Objective, steps: int, seed: int, method: str) -> float:
    from agents.crew.hpo import Sampler

    return _hill_climb(objective, steps, seed, Sampler(method, seed=seed, device=objective.device))


class RandomMoves:
    """The policy's moves, each chosen uniformly at random among those not yet tried: no adaptation at all."""

    def __init__(self, seed: int):
        self.rng, self.policy = random.Random(seed), OfflinePolicy(seed=seed)

    def propose(self, text: str, history: list[ExperimentRecord], device: str):
        options = self.policy.options(text, history, device)
        if not options:
            raise SearchExhausted("every move tried")
        return self.policy.adopt(self.rng.choice(options))

    def code(self, idea, text: str) -> CodeEdit:
        return self.policy.code(idea, text)


def _hill_climb(objective: Objective, steps: int, seed: int, searcher) -> float:
    """Propose, edit, train (measure), decide with the loop's own rule; the true value of the final train.py.

    Every measurement counts against `steps`, the re-runs of borderline results included."""
    rng = random.Random(seed + 10_000)
    text = objective.base
    best = objective.measure(text, rng)
    history = [ExperimentRecord(exp_id="0000", tag="bench", status="baseline", description="baseline", val_bpb=best)]
    observe = getattr(searcher, "observe", None)  # a sampler's study is told every decided run
    runs = 0
    while runs < steps:
        try:
            idea = searcher.propose(text, history, objective.device)
        except SearchExhausted:
            break
        new = apply_edit(text, searcher.code(idea, text))
        added, removed = diff_stats(text, new)
        value = objective.measure(new, rng)
        runs += 1
        decision = decide(value, best, sigma=NOISE, min_delta=0.0, sigma_k=KEEP_SIGMAS, lines_delta=added - removed)
        if decision.action == "rerun" and runs < steps:  # borderline: another seed, then the mean decides
            both = [value, objective.measure(new, rng)]
            runs += 1
            value = statistics.fmean(both)
            decision = decide(value, best, sigma=NOISE, min_delta=0.0, sigma_k=KEEP_SIGMAS, lines_delta=added - removed,
                              confirmed=True, runs=both)
        status = "discard" if decision.action == "rerun" else decision.action
        delta = None if value is None else value - best
        history.append(ExperimentRecord(exp_id=f"{runs:04d}", tag="bench", status=status, description=idea.title,
                                        val_bpb=value, best_bpb_before=best, delta=delta, category=idea.category,
                                        decision_reason=decision.reason))
        if observe is not None:
            observe(history[-1])
        if status == "keep":
            text, best = new, value
    return objective.true_value(text)


def run_random_search(objective: Objective, steps: int, seed: int, near: bool) -> float:
    """Uniform random configurations in a box; the best measured one is the answer (its true value returned)."""
    rng = random.Random(seed + 20_000)
    best_measured, best_text = objective.measure(objective.base, rng), objective.base
    for _ in range(steps):
        text = _random_config(objective, rng, near)
        value = objective.measure(text, rng)
        if value is not None and value < best_measured:
            best_measured, best_text = value, text
    return objective.true_value(best_text)


def _random_config(objective: Objective, rng: random.Random, near: bool) -> str:
    """Each deletion with probability 1/2, every variant uniform, every knob uniform on its grid within the box
    (resampled until train.py's divisibility checks accept the whole configuration)."""
    start = read_train_py(objective.base, objective.device)
    text = objective.base
    for removal in REMOVALS:  # sites of different removals never overlap, so blocks from the start text apply
        if removal.title in start.removals and rng.random() < 0.5:
            text = apply_edit(text, CodeEdit(blocks=start.removals[removal.title]))
    for feature in FEATURES:
        if feature.name in start.features:
            codes = {label: code for label, code, _ in feature.variants}
            text = text.replace(codes[start.features[feature.name]], codes[rng.choice(list(codes))], 1)
    space = read_train_py(text, objective.device)
    grids = {}
    for name, knob in space.knobs.items():
        _, local, widest = STEPS[knob.kind]
        reach = local if near else widest
        low, high = grid_bounds(knob, float(knob.value))
        grids[name] = sorted({v for u in range(-reach, reach + 1)
                              if low <= (v := grid_step(knob.kind, knob.value, u)) <= high})
    for _ in range(1000):
        values = {name: rng.choice(grid) for name, grid in grids.items()}
        if space.accepts(values):
            return space.with_knobs(values)
    return text


def compare(steps: int, seeds: int, device: str = "cpu", samplers: tuple[str, ...] = SAMPLERS) -> dict[str, list[float]]:
    """True final val_bpb per searcher, one entry per objective seed."""
    base = TRAIN_PY.read_text()
    results: dict[str, list[float]] = {"start": [], "optimum": [], "policy": [], **{m: [] for m in samplers},
                                       "random-moves": [], "random-search near": [], "random-search full": []}
    for seed in range(seeds):
        objective = make_objective(seed, base, device)
        results["start"].append(objective.true_value(base))
        results["optimum"].append(objective.optimum_value())
        results["policy"].append(run_policy(objective, steps, seed))
        for method in samplers:
            results[method].append(run_sampler(objective, steps, seed, method))
        results["random-moves"].append(run_random_moves(objective, steps, seed))
        results["random-search near"].append(run_random_search(objective, steps, seed, near=True))
        results["random-search full"].append(run_random_search(objective, steps, seed, near=False))
    return results


def available_samplers() -> tuple[str, ...]:
    """The samplers that can run here; each one that cannot is named, with why, and left out."""
    from agents.crew.hpo import SamplerUnavailable, require

    found = []
    for method in SAMPLERS:
        try:
            require(method)
            found.append(method)
        except SamplerUnavailable as exc:
            print(f"left out: {exc}")
    return tuple(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 40, 80])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    print(f"synthetic val_bpb, noise sigma {NOISE}, {args.seeds} objectives, train.py constants for {args.device}")
    samplers = available_samplers()
    for steps in args.steps:
        r = compare(steps, args.seeds, args.device, samplers)
        gap = [s - o for s, o in zip(r["start"], r["optimum"], strict=True)]
        print(f"\n{steps} runs each: true val_bpb of the final choice (mean ± sd over objectives), gap closed")
        for name in ("start", "policy", *samplers, "random-moves", "random-search near", "random-search full"):
            values = r[name]
            closed = statistics.fmean((s - v) / g for s, v, g in zip(r["start"], values, gap, strict=True))
            print(f"  {name:<20} {statistics.fmean(values):.5f} ± {statistics.pstdev(values):.5f}   "
                  f"{100 * closed:5.1f} %")


if __name__ == "__main__":
    main()
