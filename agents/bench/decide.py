"""Numbers decide: the noise-aware keep rule and the plausibility guard.

Noise: σ is the sample standard deviation of the baseline (the starting train.py run several times with
different seeds), never below a floor. A result `candidate` is compared with the best so far:

    gain = best - candidate                      (val_bpb: lower is better, so a positive gain is good)
    n    = runs averaged into candidate          (1 for a first run; a confirmation averages >= 2)
    se   = σ / √n                                (the noise of a mean of n runs)
    threshold = max(min_delta, sigma_k · se)

- gain > threshold                          → keep (kept_as "gain"); but a first run whose step count lies
                                              outside the baselines' own range (`steps_outside`) is re-run
                                              first: its number may follow the step count, not the change
- train.py got shorter (lines_delta < 0)
  and gain ≥ -tie, tie = max(min_delta, se) → kept as simpler, within noise (kept_as "simpler"), only where
                                              "equal" means something: a confirming re-run agrees (a first
                                              run is re-run) AND the band of the mean of two runs is narrow
                                              against the effects this run has seen (at most NARROW_FRACTION
                                              of `effect_scale`, the typical |delta| of its experiments);
                                              otherwise discarded as "within noise"
- first run, rerun_k·se < gain ≤ threshold  → rerun with another seed; the mean of the runs then decides
- otherwise                                 → discard
- no val_bpb (or NaN)                       → crash

A first run is re-run only when it looked good, so the mean of a confirmation leans a little optimistic;
sigma_k = 2 (rather than a one-sigma rule) leaves room for that.

Plausibility: a first result below `floor`, or gaining more than `max_gain` (a fraction of the best) in one
step, is quarantined ("rerun", reason "implausible: ..."). A confirmation is kept only if every run is
above the floor and the runs agree with each other (spread ≤ sigma_k·σ·√2, the spread of two honest runs);
otherwise it is discarded. A reproduced result below the floor is still discarded: the floor marks what this
setup cannot honestly reach, so a reproducible value below it points at a bug or a leak, not progress.

Budget stretch: the harness's wall time of a run, evaluation excluded, is compared with the slowest baseline's
(`WallTimeLimit`). A run over the limit (or one whose own printed training time exceeds the budget by as much)
may have trained past TIME_BUDGET in a way static rules cannot see (a clock started late, uncounted steps,
training after the loop): it is quarantined ("rerun", reason "budget stretch: ...") and kept only if a re-run
respects the budget; the stretched run's val_bpb never counts. A confirming run that stretches too is discarded.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

ACTIONS = ("keep", "discard", "rerun", "crash")
SIGMA_FLOOR = 0.001  # bpb: one baseline run, or a few that happen to agree, must not make noise look like zero
SIGMA_FLOOR_FRACTION = 0.002  # ... nor below 0.2 % of the baseline's own level (CPU runs sit far above 1 bpb)
# "Equal within noise" means something only when the noise band is at most this fraction of the effects seen:
# with a band as wide as the effects, every deletion would look equal and the simplicity rule would ratchet.
NARROW_FRACTION = 0.5


@dataclass(frozen=True)
class Plausibility:
    floor: float = 0.3  # val_bpb below this is not believed
    max_gain: float = 0.1  # the largest believable one-step gain, as a fraction of the best

    def __post_init__(self) -> None:
        if not (self.floor >= 0 and self.max_gain > 0):
            raise ValueError(f"plausibility needs floor >= 0 and max_gain > 0, got {self.floor} and {self.max_gain}")

    def problem(self, value: float, best: float) -> str | None:
        """Why `value` is implausible next to `best`, or None."""
        if value < self.floor:
            return f"val_bpb {value:.6f} is below the floor {self.floor:g}"
        gain = best - value
        if gain > self.max_gain * best:
            return (f"a gain of {gain:.6f} in one step is more than {self.max_gain:.0%} of the best "
                    f"{best:.6f} ({self.max_gain * best:.6f})")
        return None


DEFAULT_PLAUSIBILITY = Plausibility()


@dataclass(frozen=True)
class WallTimeLimit:
    """How much longer than the baselines a run may take before it counts as a possible budget stretch."""

    tolerance: float = 0.25  # a fraction of the slowest baseline's wall time (evaluation excluded)
    slack_s: float = 10.0  # plus these seconds: start-up jitter on a loaded machine

    def __post_init__(self) -> None:
        if not (self.tolerance >= 0 and self.slack_s >= 0):
            raise ValueError(f"wall-time limit needs tolerance >= 0 and slack_s >= 0, got {self.tolerance} and "
                             f"{self.slack_s}")

    def allowed(self, baseline_walls: Sequence[float]) -> float | None:
        walls = [float(w) for w in baseline_walls if w is not None and math.isfinite(w) and w > 0]
        return max(walls) * (1 + self.tolerance) + self.slack_s if walls else None

    def problem(self, train_wall: float, baseline_walls: Sequence[float], *, reported_training_s: float | None = None,
                time_budget: float | None = None) -> str | None:
        """Why a run looks like it trained past its budget, or None.

        `train_wall`: the harness's wall time of the run less its evaluation; `baseline_walls`: the same for the
        baseline runs; `reported_training_s`: the training seconds train.py printed, checked against `time_budget`.
        """
        limit = self.allowed(baseline_walls)
        if limit is not None and train_wall > limit:
            return (f"the run took {train_wall:.1f} s outside evaluation, more than the slowest baseline "
                    f"{max(w for w in baseline_walls if w):.1f} s allows ({limit:.1f} s = x{1 + self.tolerance:g} "
                    f"+ {self.slack_s:g} s)")
        if reported_training_s is not None and time_budget:
            budget_limit = time_budget * (1 + self.tolerance) + self.slack_s
            if reported_training_s > budget_limit:
                return (f"train.py reports {reported_training_s:.1f} training seconds against a budget of "
                        f"{time_budget:g} s (limit {budget_limit:.1f} s)")
        return None


@dataclass(frozen=True)
class Decision:
    action: str  # one of ACTIONS (the loop also records "baseline" runs with this type)
    reason: str
    threshold: float  # the gain a result had to beat to be kept
    kept_as: str = ""  # for a keep: "gain" (better beyond the noise) or "simpler" (shorter, equal within noise)


def effect_scale(deltas: Sequence[float | None]) -> float | None:
    """The typical size of the effects a run has measured: the median |delta| of its trained experiments, None
    before two (what "equal within noise" is judged against, `decide(effect_scale=...)`)."""
    sizes = [abs(d) for d in deltas if d is not None and math.isfinite(d)]
    return statistics.median(sizes) if len(sizes) >= 2 else None


def estimate_sigma(baseline_bpbs: Sequence[float], *, floor: float | None = None) -> float:
    """Run-to-run noise of val_bpb: the sample standard deviation of the baseline runs, at least a floor.

    The floor (default: SIGMA_FLOOR or SIGMA_FLOOR_FRACTION of the mean, whichever is larger) stands in for σ
    when there is a single run, and keeps two runs that happen to agree from declaring the noise zero.
    """
    values = [float(v) for v in baseline_bpbs]
    if not values:
        raise ValueError("estimate_sigma needs at least one baseline val_bpb; none were given")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"baseline val_bpb values must be finite numbers, got {bad}")
    if floor is None:
        floor = max(SIGMA_FLOOR, SIGMA_FLOOR_FRACTION * statistics.fmean(values))
    if len(values) == 1:
        return floor
    return max(statistics.stdev(values), floor)


def decide(
    candidate: float | None,
    best: float,
    *,
    sigma: float,
    min_delta: float,
    sigma_k: float = 2.0,
    lines_delta: int = 0,
    confirmed: bool = False,
    plausibility: Plausibility = DEFAULT_PLAUSIBILITY,
    runs: Sequence[float] = (),
    rerun_k: float = 1.0,
    stretch: str | None = None,
    effect_scale: float | None = None,
    steps_outside: str | None = None,
) -> Decision:
    """Keep, discard, re-run or crash for a result `candidate` against the best val_bpb so far.

    `confirmed=True` means candidate is the mean of a first run and its re-run(s); pass those runs as `runs`
    so their agreement can be checked (a confirmed implausible result without them is discarded; without them
    the mean counts as one of 2 runs). `lines_delta` is train.py's line count change (negative: shorter).
    `rerun_k` is where the re-run band starts, in sigmas. `stretch` is why the run looks like it trained past its
    budget (`WallTimeLimit.problem`): a first run is quarantined, a confirming run discarded. `effect_scale` is the
    typical |delta| of the experiments this run has trained (None: none yet), against which a simplicity tie must
    be narrow. `steps_outside` says how a first run's step count lies outside the baselines' range: a keep is then
    re-run first.
    """
    _check_arguments(best, sigma, min_delta, sigma_k, rerun_k)
    if runs and not confirmed:
        raise ValueError("runs are the results of a confirmation: pass them with confirmed=True")
    if runs and candidate is not None and not math.isclose(candidate, statistics.fmean(runs), abs_tol=1e-9):
        raise ValueError(f"candidate {candidate} is not the mean of runs {list(runs)}")
    if candidate is None:
        return Decision("crash", "crash: the run produced no val_bpb", 0.0)
    if not math.isfinite(candidate):
        return Decision("crash", f"crash: val_bpb is {candidate}", 0.0)
    if stretch is not None:
        if confirmed:
            return Decision("discard", f"budget stretch on the confirming run too: {stretch}; not kept", 0.0)
        return Decision("rerun", f"budget stretch: {stretch}; quarantined until a re-run respects the budget "
                                 f"(its val_bpb {candidate:.6f} does not count)", 0.0)

    n = len(runs) if runs else (2 if confirmed else 1)
    se = sigma / math.sqrt(n)
    threshold = max(min_delta, sigma_k * se)
    gain = best - candidate
    numbers = (f"val_bpb {candidate:.6f} vs best {best:.6f} (delta {-gain:+.6f}); threshold {threshold:.6f} = "
               f"max(min_delta {min_delta:g}, {sigma_k:g} x sigma {sigma:.6f}{f' / sqrt({n})' if n > 1 else ''})")

    implausible = _implausibility(candidate, best, plausibility, confirmed, runs, sigma, sigma_k)
    if implausible is not None:
        action, why = implausible
        return Decision(action, f"implausible: {why}; {numbers}", threshold)

    if gain > threshold:
        if steps_outside and not confirmed:
            return Decision("rerun", f"rerun: better by more than the threshold, but {steps_outside}; a re-run "
                                     f"confirms it before it is kept; {numbers}", threshold)
        confirmed_by = f" (confirmed over {n} runs)" if confirmed else ""
        return Decision("keep", f"keep: better by more than the threshold{confirmed_by}; {numbers}", threshold,
                        kept_as="gain")
    tie = max(min_delta, se)
    if lines_delta < 0 and gain >= -tie:
        return _simpler(-lines_delta, gain, tie, sigma, min_delta, effect_scale, confirmed, numbers, threshold)
    if not confirmed and gain > rerun_k * se:
        return Decision("rerun", f"rerun: borderline gain, above {rerun_k:g} sigma ({rerun_k * se:.6f}) but not the "
                                 f"threshold; another seed, then the mean decides; {numbers}", threshold)
    verdict = "within noise" if gain > 0 else "no better"
    confirmed_by = f" after {n} runs" if confirmed else ""
    return Decision("discard", f"discard: {verdict}{confirmed_by}; {numbers}", threshold)


def _simpler(shorter_by: int, gain: float, tie: float, sigma: float, min_delta: float, effect_scale: float | None,
             confirmed: bool, numbers: str, threshold: float) -> Decision:
    """A shorter train.py within the noise band: kept as simpler only where "equal" means something."""
    band = max(min_delta, sigma / math.sqrt(2)) if not confirmed else tie  # the band once a re-run agrees
    if effect_scale is None or band > NARROW_FRACTION * effect_scale:
        seen = f"the typical effect seen so far is {effect_scale:.6f}" if effect_scale is not None else \
            "no effects have been seen yet in this run"
        return Decision("discard", f"discard: {shorter_by} line(s) shorter and within noise (delta {-gain:+.6f}), but "
                                   f"'equal' means nothing here: the noise band {band:.6f} is wide against the "
                                   f"effects ({seen}; it must be at most {NARROW_FRACTION:g} of it); {numbers}",
                        threshold)
    if not confirmed:
        return Decision("rerun", f"rerun: {shorter_by} line(s) shorter and within noise (delta {-gain:+.6f}); a "
                                 f"simplification is kept only once a re-run agrees; {numbers}", threshold)
    return Decision("keep", f"keep: kept as simpler, within noise (delta {-gain:+.6f}): {shorter_by} line(s) "
                            f"shorter, not worse than the band {tie:.6f}, narrow against the typical effect "
                            f"{effect_scale:.6f}; {numbers}", threshold, kept_as="simpler")


def _implausibility(candidate: float, best: float, plausibility: Plausibility, confirmed: bool,
                    runs: Sequence[float], sigma: float, sigma_k: float) -> tuple[str, str] | None:
    """(action, why) when the result cannot be believed as it stands; None when it can."""
    values = list(runs) if runs else [candidate]
    problem = next((p for v in [candidate, *values] if (p := plausibility.problem(v, best)) is not None), None)
    if problem is None:
        return None
    if not confirmed:
        return "rerun", f"{problem}; quarantined until a re-run with another seed reproduces it"
    below_floor = [v for v in values if v < plausibility.floor]
    if below_floor:
        return "discard", (f"{len(below_floor)} of {len(values)} run(s) below the floor {plausibility.floor:g} "
                           "even on re-run: a value this setup cannot honestly reach points at a bug or a leak")
    if len(values) < 2:
        return "discard", f"{problem}; no individual re-run results were given to check that the runs agree"
    spread, allowed = max(values) - min(values), sigma_k * sigma * math.sqrt(2)
    if spread > allowed:
        return "discard", (f"{problem}; the re-run did not reproduce it: runs {', '.join(f'{v:.6f}' for v in values)} "
                           f"spread {spread:.6f} > {allowed:.6f} ({sigma_k:g} x sigma x sqrt(2))")
    return None  # reproduced: judged by the ordinary rule on the mean


def _check_arguments(best: float, sigma: float, min_delta: float, sigma_k: float, rerun_k: float) -> None:
    if best is None or not math.isfinite(best):
        raise ValueError(f"decide needs a finite best val_bpb to compare with, got {best!r}")
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma!r}")
    if not min_delta >= 0:
        raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
    if not (sigma_k > 0 and rerun_k >= 0):
        raise ValueError(f"sigma_k must be > 0 and rerun_k >= 0, got {sigma_k!r} and {rerun_k!r}")
