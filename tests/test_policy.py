"""The offline search policy against the real train.py: determinism, valid edits, no repeats, adaptation,
refusals, exhaustion, the reviewer and analyst, and a benchmark-style check that it beats random search."""

from __future__ import annotations

import importlib.util
import re
import statistics
import sys
from pathlib import Path

import pytest

from agents.bench.guard import check_edit
from agents.crew.edits import apply_edit
from agents.crew.policy import FEATURES, REMOVALS, OfflinePolicy, SearchExhausted, SearchSpace, UnknownIdea
from agents.crew.schemas import Idea
from agents.record.results import ExperimentRecord

REPO = Path(__file__).resolve().parents[1]
TRAIN_PY = (REPO / "train.py").read_text()
KNOB_TITLE = re.compile(r"^([A-Z][A-Z0-9_]*(?:\[\d\])?) (\S+) -> (\S+)$")


def record(n: int, title: str, status: str, delta: float | None = None, reason: str = "") -> ExperimentRecord:
    return ExperimentRecord(exp_id=f"{n:04d}", tag="test", status=status, description=title, delta=delta,
                            val_bpb=None if delta is None else 1.0 + delta, best_bpb_before=1.0,
                            decision_reason=reason)


def set_constant(text: str, name: str, value: str, device: str) -> str:
    """train.py with one constant's branch for `device` rewritten (independently of the policy's own editing)."""
    line = next(line for line in text.splitlines() if line.startswith(f"{name} = "))
    m = re.match(rf"{name} = (\S+) if CUDA else (\S+)(.*)$", line)
    if m:
        cuda, cpu, rest = m.groups()
        new = f"{name} = {value if device == 'cuda' else cuda} if CUDA else {value if device == 'cpu' else cpu}{rest}"
    else:
        new = re.sub(rf"^{name} = \S+", f"{name} = {value}", line)
    return text.replace(line, new, 1)


def simulate(policy: OfflinePolicy, device: str, steps: int, text: str = TRAIN_PY):
    """Propose and code `steps` times on a scripted outcome pattern; yields (idea, old text, new text, status)."""
    history: list[ExperimentRecord] = []
    pattern = ["discard", "keep", "discard", "discard", "crash", "discard", "veto", "keep"]
    for i in range(steps):
        idea = policy.propose(text, history, device)
        new = apply_edit(text, policy.code(idea, text))
        status = pattern[i % len(pattern)]
        history.append(record(i, idea.title, status, delta=-0.002 if status == "keep" else 0.003))
        yield idea, text, new, status
        if status == "keep":
            text = new


# ------------------------------------------------------------------------------------------ reading train.py


def test_reads_the_device_branch_of_each_constant():
    cpu, cuda = SearchSpace(TRAIN_PY, "cpu"), SearchSpace(TRAIN_PY, "cuda")
    assert cpu.knobs["DEPTH"].value == 2 and cuda.knobs["DEPTH"].value == 8
    assert cpu.knobs["MATRIX_LR"].kind == "log" and cpu.knobs["ADAM_BETAS[1]"].kind == "beta"
    assert cpu.knobs["TOTAL_BATCH_SIZE"].kind == "pow2"
    # the seed, the budget, evaluation and the timed-step gate are never tuned
    assert not any(name.startswith(("EVAL", "EXCLUDED", "SEED", "TIME")) for name in cpu.knobs)


def test_batch_sizes_keep_train_py_divisibility_check():
    space = SearchSpace(TRAIN_PY, "cpu")  # TOTAL_BATCH_SIZE must be a multiple of DEVICE_BATCH_SIZE * MAX_SEQ_LEN
    total, per_pass = space.knobs["TOTAL_BATCH_SIZE"], space.knobs["DEVICE_BATCH_SIZE"]
    tokens_per_pass = per_pass.value * 256  # MAX_SEQ_LEN on CPU
    assert space.allows(total, 2 * tokens_per_pass) and not space.allows(total, tokens_per_pass // 2)
    assert space.allows(per_pass, per_pass.value // 2) and not space.allows(per_pass, per_pass.value * 4)


def test_catalogue_recognises_the_real_train_py():
    space = SearchSpace(TRAIN_PY, "cpu")
    missing = [f.name for f in FEATURES if f.name not in space.features] + \
              [r.title for r in REMOVALS if r.title not in space.removals]
    assert len(missing) <= 2, f"the structural catalogue no longer matches train.py: {missing}"


def test_edit_changes_only_the_device_branch_and_keeps_power_notation():
    space = SearchSpace(TRAIN_PY, "cpu")
    block = space.knob_edit(space.knobs["TOTAL_BATCH_SIZE"], 8192)
    assert "2**19 if CUDA else 2**13" in block.replace and TRAIN_PY.count(block.search) == 1
    block = space.knob_edit(space.knobs["MATRIX_LR"], 0.035)
    assert block.replace.startswith("MATRIX_LR = 0.04 if CUDA else 0.035")


# ------------------------------------------------------------------------------------------ proposing


def test_same_inputs_give_the_same_ideas():
    def run(seed: int) -> list[str]:
        return [idea.title for idea, *_ in simulate(OfflinePolicy(seed=seed), "cpu", 12)]

    assert run(3) == run(3)
    assert run(3) != run(4)  # the seed only breaks ties, but it does break them


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_every_edit_applies_uniquely_compiles_and_passes_the_guard(device):
    policy = OfflinePolicy(seed=1)
    for idea, old, new, _ in simulate(policy, device, 30):
        edit = policy.code(idea, old)
        text = old
        for block in edit.blocks:  # apply_edit accepts near matches; ours must be exact and unique
            assert text.count(block.search) == 1, f"{idea.title}: block not unique"
            text = text.replace(block.search, block.replace, 1)
        assert text == new != old
        compile(new, "train.py", "exec")
        report = check_edit(old, new, ["train.py"])
        assert report.ok, f"{idea.title}: {report.text()}"


def test_no_idea_or_value_is_proposed_twice_over_a_long_run():
    titles, values = [], {}
    for idea, *_ in simulate(OfflinePolicy(seed=2), "cpu", 40):
        titles.append(idea.title)
        m = KNOB_TITLE.match(idea.title)
        if m:
            name, old, new = m.groups()
            seen = values.setdefault(name, set())
            assert new not in seen, f"{idea.title}: {name}={new} was tried before"
            seen.update({old, new})
    assert len(titles) == len(set(titles)) == 40
    assert len(values) >= 8  # it explores many constants, not one


def test_a_kept_step_is_continued_further_the_same_way():
    text = set_constant(TRAIN_PY, "MATRIX_LR", "0.028", "cuda")
    history = [record(0, "MATRIX_LR 0.04 -> 0.028", "keep", -0.004)]
    idea = OfflinePolicy(seed=0).propose(text, history, "cuda")
    name, old, new = KNOB_TITLE.match(idea.title).groups()
    assert (name, old) == ("MATRIX_LR", "0.028") and float(new) < 0.028 * 0.75  # a longer step down


def test_a_discarded_step_is_reversed():
    history = [record(0, "MATRIX_LR 0.04 -> 0.028", "discard", +0.003)]
    policy = OfflinePolicy(seed=0)
    for _ in range(60):
        idea = policy.propose(TRAIN_PY, history, "cuda")
        if idea.title.startswith("MATRIX_LR "):
            break
    assert KNOB_TITLE.match(idea.title).groups()[1:] == ("0.04", "0.057")


def test_both_directions_failed_halves_the_step():
    history = [record(0, "MATRIX_LR 0.04 -> 0.028", "discard", 0.003),
               record(1, "MATRIX_LR 0.04 -> 0.057", "discard", 0.002)]
    policy = OfflinePolicy(seed=0)
    moves = [i.title for i in (policy.propose(TRAIN_PY, history, "cuda") for _ in range(60))]
    on_lr = [t for t in moves if t.startswith("MATRIX_LR ")]
    assert on_lr and on_lr[0] in ("MATRIX_LR 0.04 -> 0.048", "MATRIX_LR 0.04 -> 0.034")


def test_no_step_goes_past_a_value_that_crashed():
    history = [record(0, "DEVICE_BATCH_SIZE 128 -> 256", "crash")]  # out of memory, say
    policy = OfflinePolicy(seed=0)
    sizes = [int(m.group(3)) for m in (KNOB_TITLE.match(policy.propose(TRAIN_PY, history, "cuda").title)
                                       for _ in range(120)) if m and m.group(1) == "DEVICE_BATCH_SIZE"]
    assert sizes and max(sizes) < 256


def test_refused_titles_are_never_proposed_again():
    first = OfflinePolicy(seed=5).propose(TRAIN_PY, [], "cpu")
    policy = OfflinePolicy(seed=5)
    feedback = f"0001 '{first.title}' was refused (repeat): too similar to 0000"
    ideas = [policy.propose(TRAIN_PY, [], "cpu", feedback=feedback if i == 0 else "") for i in range(30)]
    assert first.title not in [i.title for i in ideas]
    assert first.title in policy.refused_titles


def test_experiments_recalled_from_earlier_runs_count_as_tried():
    first = OfflinePolicy(seed=5).propose(TRAIN_PY, [], "cpu")
    recall = f"Recent failures and their lessons (newest first):\n- [discard] old/0003 {first.title} -> val_bpb 1.0123"
    ideas = [OfflinePolicy(seed=5).propose(TRAIN_PY, [], "cpu", recall=recall).title for _ in range(3)]
    assert first.title not in ideas


def test_unquoted_feedback_refuses_the_last_proposal():
    policy = OfflinePolicy(seed=5)
    first = policy.propose(TRAIN_PY, [], "cpu")
    policy.propose(TRAIN_PY, [], "cpu", feedback="the reviewer vetoed it")
    assert first.title in policy.refused_titles


def test_exhaustion_raises_instead_of_hanging():
    text = "CUDA = False\nDEPTH = 8 if CUDA else 2\nprint(DEPTH)\n"  # one knob, depth 1..6 on cpu
    policy = OfflinePolicy(seed=0)
    proposed = []
    with pytest.raises(SearchExhausted, match="tried or refused"):
        for _ in range(20):
            proposed.append(policy.propose(text, [], "cpu").title)
    assert sorted(proposed) == [f"DEPTH 2 -> {v}" for v in (1, 3, 4, 5, 6)]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="device"):
        OfflinePolicy().propose(TRAIN_PY, [], "tpu")
    with pytest.raises(ValueError, match="does not parse"):
        OfflinePolicy().propose("def (:\n", [], "cpu")


# ------------------------------------------------------------------------------------------ coder


def test_coder_rebuilds_the_edit_on_a_train_py_that_moved_on():
    policy = OfflinePolicy(seed=0)
    idea = policy.propose(TRAIN_PY, [], "cpu")
    while not KNOB_TITLE.match(idea.title) or idea.title.startswith("DEPTH"):
        idea = policy.propose(TRAIN_PY, [], "cpu")
    moved_on = set_constant(TRAIN_PY, "DEPTH", "3", "cpu")  # another experiment was kept in between
    new = apply_edit(moved_on, policy.code(idea, moved_on))
    name, _, value = KNOB_TITLE.match(idea.title).groups()
    assert SearchSpace(new, "cpu").knobs["DEPTH"].value == 3
    assert SearchSpace(new, "cpu").knobs[name].value == float(value)


def test_coder_refuses_an_idea_it_did_not_propose():
    idea = Idea(title="Use a mixture of experts", rationale="r", expected_effect="e", category="architecture")
    with pytest.raises(UnknownIdea, match="only implements ideas the offline policy proposed"):
        OfflinePolicy().code(idea, TRAIN_PY)


# ------------------------------------------------------------------------------------------ reviewer, analyst

IDEA = Idea(title="MATRIX_LR 0.04 -> 0.028", rationale="r", expected_effect="e", category="learning_rate")


def test_reviewer_rejects_with_the_guard_report_and_approves_a_clean_diff():
    report = "no-metric-forgery line 12: reads the environment\nallowed-imports line 3: imports requests"
    review = OfflinePolicy().review(IDEA, "-a\n+b", guard_ok=False, guard_report=report)
    assert review.verdict == "reject" and review.reasons == report.splitlines()
    diff = "--- a/train.py\n+++ b/train.py\n-MATRIX_LR = 0.04 if CUDA else 0.05\n+MATRIX_LR = 0.028 if CUDA else 0.05"
    assert OfflinePolicy().review(IDEA, diff, guard_ok=True).verdict == "approve"


def test_reviewer_rejects_a_seed_or_data_order_only_edit():
    diff = "--- a/train.py\n+++ b/train.py\n-    torch.manual_seed(SEED)\n+    torch.manual_seed(SEED + 1)"
    review = OfflinePolicy().review(IDEA, diff, guard_ok=True)
    assert review.verdict == "reject" and "seed" in review.reasons[0]


def test_analyst_states_the_numbers_and_a_lesson_for_recall():
    reason = ("keep: better by more than the threshold; val_bpb 0.996000 vs best 1.000000 (delta -0.004000); "
              "threshold 0.002000 = max(min_delta 0, 2 x sigma 0.001000)")
    r = record(7, IDEA.title, "keep", -0.004, reason)
    analysis = OfflinePolicy().analyse(IDEA, r)
    assert "-4.0 sigma" in analysis.explanation and "0.996000" in analysis.explanation
    assert analysis.lesson == ("Lowering MATRIX_LR from 0.04 to 0.028 improved val_bpb by 0.0040 (keep); "
                               "try 0.014 next.")
    assert not analysis.rerun  # 4 sigma is not borderline
    discard = OfflinePolicy().analyse(IDEA, record(8, IDEA.title, "discard", 0.001))
    assert discard.lesson.endswith("(discard); try 0.057 next.")  # the other way
    within_noise = OfflinePolicy().analyse(IDEA, record(8, IDEA.title, "discard", -0.001))
    assert within_noise.lesson.endswith("the gain is within noise: try 0.02 next.")  # further the same way
    crash = record(9, IDEA.title, "crash")
    crash.error = "RuntimeError: CUDA out of memory"
    assert "out of memory" in OfflinePolicy().analyse(IDEA, crash).explanation


# ------------------------------------------------------------------------------------------ benchmark-style


def _benchmark():
    spec = importlib.util.spec_from_file_location("offline_policy_bench", REPO / "benchmarks" / "offline_policy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_policy_beats_uniform_random_search_on_a_synthetic_objective():
    bench = _benchmark()
    steps, seeds = 30, 4
    start, policy, random_search = [], [], []
    for seed in range(seeds):
        objective = bench.make_objective(seed, TRAIN_PY, "cpu")
        start.append(objective.true_value(TRAIN_PY))
        policy.append(bench.run_policy(objective, steps, seed))
        random_search.append(bench.run_random_search(objective, steps, seed, near=True))
    gain_policy = statistics.fmean(s - p for s, p in zip(start, policy, strict=True))
    gain_random = statistics.fmean(s - r for s, r in zip(start, random_search, strict=True))
    print(f"\n{steps} runs x {seeds} objectives: start {statistics.fmean(start):.5f}, policy "
          f"{statistics.fmean(policy):.5f}, random search {statistics.fmean(random_search):.5f}")
    # each objective's noise sigma is 0.002: the policy must gain at least 5 sigma more than random search
    assert gain_policy - gain_random > 5 * bench.NOISE
    assert all(p < s for p, s in zip(policy, start, strict=True))  # and improve on every objective
