"""The novelty gate: normalised diff hashes, the labelled idea pairs, retries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.crew.schemas import Idea
from agents.record.results import ExperimentRecord
from memory import DEFAULT_THRESHOLD, ExperimentMemory, normalised_diff_hash
from memory.embeddings import embed_texts, load_minilm
from memory.novelty import calibrate_threshold, score_threshold, structural_mismatch
from memory.records import idea_text

PAIRS = Path(__file__).parent / "data" / "idea_pairs.jsonl"

TRAIN = """\
import math

MATRIX_LR = 0.04  # Muon learning rate
DEPTH = 8


def lr_at(step, total):
    if step < total // 2:
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * step / total))
"""


@pytest.fixture(scope="session")
def minilm():
    return load_minilm()


@pytest.fixture(scope="module")
def labelled_pairs(minilm) -> list[tuple[float, str, str, bool, str]]:
    rows = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]
    a = embed_texts([idea_text(r["a"]["title"], r["a"]["rationale"]) for r in rows])
    b = embed_texts([idea_text(r["b"]["title"], r["b"]["rationale"]) for r in rows])
    sims = (a * b).sum(axis=1)
    return [(float(s), r["a"]["title"], r["b"]["title"], r["label"] == "repeat", r["kind"]) for s, r in zip(sims, rows, strict=True)]


# ------------------------------------------------------------------------------------------ diff hash


def test_diff_hash_ignores_whitespace_and_comments():
    new = TRAIN.replace("MATRIX_LR = 0.04  # Muon learning rate", "MATRIX_LR = 0.03")
    restyled = TRAIN.replace("MATRIX_LR = 0.04  # Muon learning rate", "MATRIX_LR   =   0.03   # lowered\n# why: spikes\n")
    assert normalised_diff_hash(TRAIN, new) == normalised_diff_hash(TRAIN, restyled)
    assert normalised_diff_hash(TRAIN, new) != normalised_diff_hash(TRAIN, TRAIN.replace("0.04", "0.05"))


def test_diff_hash_of_comment_only_change_is_the_empty_change():
    assert normalised_diff_hash(TRAIN, TRAIN.replace("# Muon learning rate", "# the LR")) == \
        normalised_diff_hash(TRAIN, TRAIN)


def test_diff_hash_does_not_depend_on_where_the_edit_sits():
    moved_base = "EXTRA = 1\n" + TRAIN
    edit = ("DEPTH = 8", "DEPTH = 10")
    assert normalised_diff_hash(TRAIN, TRAIN.replace(*edit)) == normalised_diff_hash(moved_base, moved_base.replace(*edit))


def test_diff_hash_keeps_what_changes_meaning():
    in_string = TRAIN.replace("import math", "import math\nTAG = 'a # b'")
    other_string = TRAIN.replace("import math", "import math\nTAG = 'a # c'")
    assert normalised_diff_hash(TRAIN, in_string) != normalised_diff_hash(TRAIN, other_string)
    inside_if = TRAIN.replace("        return 1.0\n", "        return 1.0\n        x = 1\n")
    after_if = TRAIN.replace("        return 1.0\n", "        return 1.0\n    x = 1\n")
    compile(inside_if, "train.py", "exec"), compile(after_if, "train.py", "exec")
    assert normalised_diff_hash(TRAIN, inside_if) != normalised_diff_hash(TRAIN, after_if)


def test_diff_hash_survives_code_that_does_not_tokenise():
    broken = TRAIN + "def f(:\n  (\n"
    assert len(normalised_diff_hash(TRAIN, broken)) == 64


# ------------------------------------------------------------------------------------- semantic gate


@pytest.mark.parametrize("a, b", [
    ("lr 0.04 -> 0.03", "lr 0.04 -> 0.05"),
    ("MATRIX_LR 0.04 -> 0.03", "EMBEDDING_LR 0.04 -> 0.03"),
    ("Window pattern SSSL -> SSLL", "Window pattern SSSL -> SLSL"),
    ("Add weight decay to the embeddings", "Remove weight decay from the embeddings"),
    ("Replace ReLU squared with GELU in the MLP", "Replace ReLU squared with SwiGLU in the MLP"),
    ("Zero-initialise the attention output projections", "Zero-initialise the MLP output projections"),
])
def test_near_misses_differ_structurally(a, b):
    assert structural_mismatch(a, b)


@pytest.mark.parametrize("a, b", [
    ("MATRIX_LR 0.04 -> 0.03", "Lower the Muon matrix learning rate from 0.04 to 0.03"),
    ("WARMDOWN_RATIO 0.5 -> 0.7", "Lengthen the LR warmdown from 50% to 70% of training"),
    ("WEIGHT_DECAY 0.0 -> 0.1", "Add weight decay of 0.1 to the AdamW groups"),
    ("Replace RMSNorm with LayerNorm", "Use LayerNorm instead of RMSNorm in every block"),
])
def test_paraphrases_agree_structurally(a, b):
    assert structural_mismatch(a, b) == ""


def test_labelled_set_is_large_and_mixed(labelled_pairs):
    kinds = [kind for *_, kind in labelled_pairs]
    assert len(labelled_pairs) >= 60
    assert min(kinds.count(k) for k in ("paraphrase", "near_miss", "unrelated")) >= 20


def test_gate_precision_and_recall_on_the_labelled_set(labelled_pairs):
    score = score_threshold([p[:4] for p in labelled_pairs], DEFAULT_THRESHOLD)
    print(f"\nnovelty gate at {DEFAULT_THRESHOLD}: precision {score.precision:.3f}, recall {score.recall:.3f} "
          f"(tp {score.true_pos}, fp {score.false_pos}, fn {score.false_neg})")
    assert score.precision >= 0.9 and score.recall >= 0.9


def test_default_threshold_is_the_calibrated_one(labelled_pairs):
    calibrated = calibrate_threshold([p[:4] for p in labelled_pairs])
    assert abs(calibrated.threshold - DEFAULT_THRESHOLD) <= 0.03


def test_embeddings_alone_cannot_tell_near_misses_apart(labelled_pairs):
    """Why the structural check exists: near-misses are more similar than many true paraphrases."""
    near = sorted(s for s, *_, kind in labelled_pairs if kind == "near_miss")
    paraphrase = sorted(s for s, *_, kind in labelled_pairs if kind == "paraphrase")
    assert near[len(near) // 2] > paraphrase[len(paraphrase) // 2]


def test_gate_end_to_end_through_the_store(tmp_path, minilm):
    """Each pair alone in a fresh memory: the earlier idea stored as an experiment, the later one checked."""
    rows = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()][::3]
    tp = fp = fn = 0
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        for i, row in enumerate(rows):
            tag = f"pair{i}"
            memory.add(ExperimentRecord(exp_id="0001", tag=tag, status="discard", description=row["a"]["title"],
                                        rationale=row["a"]["rationale"], val_bpb=1.0))
            idea = Idea(title=row["b"]["title"], rationale=row["b"]["rationale"], expected_effect="",
                        category="other")
            verdict = memory.check_idea(idea, threshold=DEFAULT_THRESHOLD)
            memory.rebuild([])  # empty again for the next pair
            repeat = row["label"] == "repeat"
            tp += (not verdict.novel) and repeat
            fp += (not verdict.novel) and not repeat
            fn += verdict.novel and repeat
            if not verdict.novel:
                assert verdict.kind == "semantic" and verdict.match.id == f"{tag}/0001"
                assert f"exp {tag}/0001 (discard, val_bpb 1.0000)" in verdict.message
    assert tp / (tp + fp) >= 0.9 and tp / (tp + fn) >= 0.9


# --------------------------------------------------------------------------------------------- retries


@pytest.fixture
def memory_with_history(tmp_path, minilm):
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        memory.add(ExperimentRecord(exp_id="0004", tag="n1", status="crash", description="Replace ReLU squared with GELU",
                                    rationale="Smoother activation.", error="NameError: gelu", diff_hash="h-gelu"))
        memory.add(ExperimentRecord(exp_id="0005", tag="n1", status="discard", description="Increase depth from 8 to 10",
                                    rationale="More capacity.", val_bpb=1.01, lesson="Too slow per step.",
                                    diff_hash="h-depth"))
        yield memory


GELU_AGAIN = dict(title="Swap the squared ReLU for GELU", rationale="A smooth activation; fixed the missing import.",
                  expected_effect="", category="architecture")


def test_repeat_of_a_crash_is_refused_with_a_hint_to_retry(memory_with_history):
    verdict = memory_with_history.check_idea(Idea(**GELU_AGAIN), threshold=DEFAULT_THRESHOLD)
    assert (verdict.novel, verdict.kind, verdict.match.id) == (False, "semantic", "n1/0004")
    assert "retry_of='0004'" in verdict.message and "NameError" in verdict.message


def test_deliberate_retry_of_a_crash_is_admitted(memory_with_history):
    verdict = memory_with_history.check_idea(Idea(**GELU_AGAIN, retry_of="0004"), threshold=DEFAULT_THRESHOLD)
    assert (verdict.novel, verdict.kind, verdict.match.id) == (True, "retry", "n1/0004")
    assert "did not complete" in verdict.message


def test_retry_of_a_completed_experiment_is_refused(memory_with_history):
    idea = Idea(title="Make it deeper: 8 to 10 layers", rationale="More capacity.", expected_effect="",
                category="architecture", retry_of="0005")
    verdict = memory_with_history.check_idea(idea, threshold=DEFAULT_THRESHOLD)
    assert (verdict.novel, verdict.kind, verdict.match.id) == (False, "semantic", "n1/0005")
    assert "only crashed or skipped experiments are retried" in verdict.message
    assert "Too slow per step" in verdict.message


def test_exact_repeat_of_a_change_is_refused(memory_with_history):
    verdict = memory_with_history.check_diff("h-depth")
    assert (verdict.novel, verdict.kind, verdict.match.id) == (False, "exact", "n1/0005")
    assert memory_with_history.check_diff("h-new").novel


def test_same_change_as_a_crash_passes_only_as_a_deliberate_retry(memory_with_history):
    assert not memory_with_history.check_diff("h-gelu").novel
    verdict = memory_with_history.check_diff("h-gelu", retry_of="0004")
    assert (verdict.novel, verdict.kind) == (True, "retry")
