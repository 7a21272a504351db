"""The noise-aware keep rule: boundaries, the simplicity tie-break, quarantine of implausible results, crashes."""

from __future__ import annotations

import math
import statistics

import pytest

from agents.bench.decide import (
    SIGMA_FLOOR,
    SIGMA_FLOOR_FRACTION,
    Decision,
    Plausibility,
    decide,
    estimate_sigma,
)

BEST = 1.0
SIGMA = 0.002  # threshold with sigma_k=2 and min_delta=0: 0.004; the re-run band starts at 1 sigma = 0.002
LOOSE = Plausibility(floor=0.0, max_gain=0.5)


def run(candidate, **kw) -> Decision:
    kw.setdefault("sigma", SIGMA)
    kw.setdefault("min_delta", 0.0)
    kw.setdefault("plausibility", LOOSE)
    return decide(candidate, BEST, **kw)


# ---------------------------------------------------------------- sigma


def test_sigma_is_the_sample_standard_deviation_of_the_baseline_runs():
    runs = [1.000, 1.010, 0.995, 1.004]
    mean = sum(runs) / len(runs)
    by_hand = math.sqrt(sum((r - mean) ** 2 for r in runs) / (len(runs) - 1))
    assert estimate_sigma(runs) == pytest.approx(by_hand)
    assert by_hand > SIGMA_FLOOR  # so the floor played no part


def test_one_run_or_agreeing_runs_give_the_floor():
    assert estimate_sigma([0.3]) == SIGMA_FLOOR  # the absolute floor wins at low val_bpb
    assert estimate_sigma([0.9979]) == pytest.approx(SIGMA_FLOOR_FRACTION * 0.9979)
    assert estimate_sigma([2.5, 2.5, 2.5]) == pytest.approx(SIGMA_FLOOR_FRACTION * 2.5)  # relative floor wins here
    assert estimate_sigma([1.0, 1.0001], floor=0.01) == 0.01


def test_sigma_rejects_no_runs_and_non_finite_values():
    with pytest.raises(ValueError, match="at least one baseline"):
        estimate_sigma([])
    with pytest.raises(ValueError, match="finite"):
        estimate_sigma([1.0, float("nan")])


# ---------------------------------------------------------------- keep / rerun / discard boundaries


@pytest.mark.parametrize(
    ("gain", "action"),
    [
        (0.0100, "keep"),
        (0.0041, "keep"),  # just above the threshold 2 sigma
        (0.0039, "rerun"),  # just below it: borderline
        (0.0021, "rerun"),  # just above 1 sigma: still borderline
        (0.0019, "discard"),  # within 1 sigma: noise
        (0.0, "discard"),
        (-0.003, "discard"),  # worse
    ],
)
def test_first_run_boundaries(gain, action):
    decision = run(BEST - gain)
    assert decision.action == action, decision.reason
    assert decision.threshold == pytest.approx(2 * SIGMA)


def test_min_delta_raises_the_threshold_and_the_band_below_it_reruns():
    assert run(BEST - 0.011, min_delta=0.01).action == "keep"
    borderline = run(BEST - 0.006, min_delta=0.01)  # 3 sigma, but under min_delta
    assert borderline.action == "rerun" and borderline.threshold == pytest.approx(0.01)


def test_sigma_k_scales_the_threshold():
    assert run(BEST - 0.005, sigma_k=3.0).action == "rerun"
    assert run(BEST - 0.007, sigma_k=3.0).action == "keep"


def test_confirmed_mean_is_judged_with_the_noise_of_a_mean_and_never_reruns():
    # two runs: threshold 2 sigma / sqrt(2) = 0.00283
    assert run(BEST - 0.0030, confirmed=True, runs=[BEST - 0.0031, BEST - 0.0029]).action == "keep"
    discarded = run(BEST - 0.0025, confirmed=True, runs=[BEST - 0.0035, BEST - 0.0015])
    assert discarded.action == "discard" and "after 2 runs" in discarded.reason
    # three runs: threshold 2 sigma / sqrt(3) = 0.00231
    three = run(BEST - 0.0024, confirmed=True, runs=[BEST - 0.0024] * 3)
    assert three.action == "keep" and three.threshold == pytest.approx(2 * SIGMA / math.sqrt(3))


def test_the_loop_protocol_first_run_then_mean_of_reruns():
    first = BEST - 0.003
    assert run(first).action == "rerun"
    runs = [first, BEST - 0.0032]
    assert run(statistics.fmean(runs), confirmed=True, runs=runs).action == "keep"
    unlucky = [first, BEST + 0.001]
    assert run(statistics.fmean(unlucky), confirmed=True, runs=unlucky).action == "discard"


def test_reason_quotes_sigma_threshold_and_delta():
    reason = run(BEST - 0.0030).reason
    assert "sigma 0.002000" in reason
    assert "threshold 0.004000" in reason
    assert "delta -0.003000" in reason
    assert reason.startswith("rerun:")


# ---------------------------------------------------------------- simplicity


def test_a_shorter_train_py_is_kept_as_simpler_only_once_a_rerun_agrees_and_the_band_is_narrow():
    effects = 0.02  # the typical |delta| this run has seen: the band sigma/sqrt(2) = 0.0014 is narrow against it
    first = run(BEST + 0.0015, lines_delta=-12, effect_scale=effects)
    assert first.action == "rerun" and "a re-run agrees" in first.reason  # never kept on one run
    kept = run(BEST + 0.0010, lines_delta=-12, effect_scale=effects, confirmed=True, runs=[1.0015, 1.0005])
    assert kept.action == "keep" and kept.kept_as == "simpler"
    assert "kept as simpler, within noise (delta +0.001000)" in kept.reason and "12 line(s) shorter" in kept.reason
    assert run(BEST, lines_delta=-1, effect_scale=effects, confirmed=True, runs=[1.0, 1.0]).kept_as == "simpler"
    worse = run(BEST + 0.0025, lines_delta=-12, effect_scale=effects, confirmed=True, runs=[1.0025, 1.0025])
    assert worse.action == "discard"  # worse by more than the band of the mean: a real loss


def test_equal_means_nothing_where_the_noise_band_is_wide_against_the_effects_seen():
    # the noise band of a mean of two runs (0.0014) is more than half the typical effect (0.002): a deletion that
    # looks equal is as likely a loss the noise hides; and with no effects seen yet, equal means nothing at all
    for scale in (0.002, None):
        decision = run(BEST + 0.0005, lines_delta=-12, effect_scale=scale)
        assert decision.action == "discard" and "'equal' means nothing here" in decision.reason
        assert decision.kept_as == ""
    assert run(BEST + 0.0005, lines_delta=-12, effect_scale=0.002, confirmed=True,
               runs=[1.0005, 1.0005]).action == "discard"


def test_a_gain_is_kept_as_a_gain_even_when_the_code_got_shorter():
    decision = run(BEST - 0.01, lines_delta=-3)
    assert decision.action == "keep" and decision.kept_as == "gain"


def test_a_first_run_whose_step_count_left_the_baselines_range_is_rerun_before_it_is_kept():
    outside = "its 412 optimizer steps lie outside the baselines' range (301-309)"
    first = run(BEST - 0.01, steps_outside=outside)
    assert first.action == "rerun" and outside in first.reason
    confirmed = run(BEST - 0.01, steps_outside=outside, confirmed=True, runs=[0.99, 0.99])
    assert confirmed.action == "keep" and confirmed.kept_as == "gain"  # the mean of the re-runs decides
    assert run(BEST + 0.01, steps_outside=outside).action == "discard"  # only a keep waits for the re-run
    assert run(BEST - 0.01).action == "keep"  # inside the range: kept at once


def test_equal_score_without_a_deletion_is_discarded():
    assert run(BEST, lines_delta=0).action == "discard"
    assert run(BEST, lines_delta=8).action == "discard"
    assert run(BEST - 0.0015, lines_delta=8).action == "discard"


# ---------------------------------------------------------------- plausibility


def test_below_the_floor_is_quarantined_for_a_rerun():
    decision = decide(0.25, BEST, sigma=SIGMA, min_delta=0.0, plausibility=Plausibility(floor=0.3, max_gain=0.9))
    assert decision.action == "rerun"
    assert decision.reason.startswith("implausible:") and "floor 0.3" in decision.reason


def test_a_gain_beyond_the_bound_is_quarantined_even_when_it_would_be_kept():
    p = Plausibility(floor=0.3, max_gain=0.1)
    decision = decide(0.85, BEST, sigma=SIGMA, min_delta=0.0, plausibility=p)
    assert decision.action == "rerun" and decision.reason.startswith("implausible:")
    assert decide(0.95, BEST, sigma=SIGMA, min_delta=0.0, plausibility=p).action == "keep"  # 5 %: believable


def test_a_reproduced_large_gain_is_kept_and_one_that_does_not_reproduce_is_discarded():
    p = Plausibility(floor=0.3, max_gain=0.1)
    agreeing = [0.850, 0.852]
    kept = decide(statistics.fmean(agreeing), BEST, sigma=SIGMA, min_delta=0.0, plausibility=p, confirmed=True,
                  runs=agreeing)
    assert kept.action == "keep", kept.reason
    disagreeing = [0.850, 0.990]
    dropped = decide(statistics.fmean(disagreeing), BEST, sigma=SIGMA, min_delta=0.0, plausibility=p,
                     confirmed=True, runs=disagreeing)
    assert dropped.action == "discard" and "did not reproduce" in dropped.reason


def test_a_confirmed_implausible_result_without_its_runs_is_not_kept():
    decision = decide(0.85, BEST, sigma=SIGMA, min_delta=0.0, plausibility=Plausibility(), confirmed=True)
    assert decision.action == "discard" and "no individual re-run results" in decision.reason


def test_below_the_floor_stays_discarded_even_when_reproduced():
    p = Plausibility(floor=0.3, max_gain=0.9)
    decision = decide(0.2, BEST, sigma=SIGMA, min_delta=0.0, plausibility=p, confirmed=True, runs=[0.2, 0.2])
    assert decision.action == "discard" and "below the floor" in decision.reason


def test_one_implausible_run_taints_a_plausible_mean():
    p = Plausibility(floor=0.3, max_gain=0.1)
    runs = [0.85, 1.05]  # the first gained 15 %, the mean only 5 %
    decision = decide(statistics.fmean(runs), BEST, sigma=SIGMA, min_delta=0.0, plausibility=p, confirmed=True,
                      runs=runs)
    assert decision.action == "discard" and "did not reproduce" in decision.reason


def test_plausibility_settings_are_validated():
    with pytest.raises(ValueError, match="max_gain"):
        Plausibility(floor=0.3, max_gain=0.0)


# ---------------------------------------------------------------- crashes and bad input


@pytest.mark.parametrize("value", [None, float("nan"), float("inf")])
def test_no_usable_val_bpb_is_a_crash(value):
    decision = run(value)
    assert decision.action == "crash"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sigma": -0.1}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"min_delta": -1.0}, "min_delta"),
        ({"sigma_k": 0.0}, "sigma_k"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run(0.99, **kwargs)


def test_runs_must_belong_to_a_confirmation_and_average_to_the_candidate():
    with pytest.raises(ValueError, match="confirmed=True"):
        run(0.99, runs=[0.99, 0.99])
    with pytest.raises(ValueError, match="not the mean"):
        run(0.99, confirmed=True, runs=[0.98, 0.97])


def test_no_best_to_compare_with_is_refused():
    with pytest.raises(ValueError, match="best"):
        decide(0.99, None, sigma=SIGMA, min_delta=0.0)  # type: ignore[arg-type]


# ---------------------------------------------------------------- budget stretch (the harness's clock)


def test_a_run_slower_than_the_baselines_is_a_possible_budget_stretch():
    from agents.bench.decide import WallTimeLimit

    limit = WallTimeLimit(tolerance=0.25, slack_s=10.0)
    baselines = [300.0, 320.0, 310.0]
    assert limit.allowed(baselines) == pytest.approx(320 * 1.25 + 10)
    assert limit.problem(405.0, baselines) is None
    problem = limit.problem(415.0, baselines)
    assert problem is not None and "415.0 s" in problem and "320.0 s" in problem and "410.0 s" in problem
    assert limit.problem(5000.0, []) is None  # no baseline yet: nothing to compare with
    # train.py's own printed clock over the budget is a stretch too, whatever the wall time says
    assert "reports 500.0 training seconds" in limit.problem(100.0, baselines, reported_training_s=500.0,
                                                             time_budget=300.0)
    assert limit.problem(100.0, baselines, reported_training_s=300.4, time_budget=300.0) is None
    with pytest.raises(ValueError, match="tolerance >= 0"):
        WallTimeLimit(tolerance=-0.1)


def test_a_stretched_first_run_is_quarantined_whatever_its_score():
    great = run(BEST - 0.05, stretch="the run took 900 s")
    assert great.action == "rerun"
    assert great.reason.startswith("budget stretch: the run took 900 s") and "does not count" in great.reason
    confirmed = run(BEST - 0.05, confirmed=True, runs=[BEST - 0.05], stretch="the re-run took 900 s too")
    assert confirmed.action == "discard" and "confirming run too" in confirmed.reason
    assert run(None, stretch="x").action == "crash"  # no score: a crash stays a crash
