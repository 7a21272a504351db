"""The novelty gate: normalised diff hashes, the labelled idea pairs, retries."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.crew.schemas import Idea
from agents.record.results import ExperimentRecord
from memory import DEFAULT_THRESHOLD, ExperimentMemory, normalised_diff_hash
from memory.embeddings import load_minilm
from memory.fingerprint import fingerprint

PAIRS = Path(__file__).parent / "data" / "judgement_pairs_tune.jsonl"

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


# ------------------------------------------------------------------------------------------ idea gate


def idea(title: str, rationale: str = "", retry_of: str | None = None) -> Idea:
    return Idea(title=title, rationale=rationale, expected_effect="", category="other", retry_of=retry_of)


def test_a_repeat_is_found_among_many_near_misses_on_the_same_knob(tmp_path, minilm):
    """Near-misses are closer in embedding than paraphrases: the structural lookup still finds the repeat."""
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        memory.add(ExperimentRecord(exp_id="0001", tag="old", status="discard", description="MATRIX_LR 0.04 -> 0.03",
                                    rationale="Loss spikes.", val_bpb=1.003, delta=0.002, lesson="0.03 is too low."))
        values = [0.01 * k for k in range(1, 9) if k != 3] + [0.045, 0.055, 0.035, 0.025]
        memory.add_many([ExperimentRecord(exp_id=f"{i + 2:04d}", tag="old", status="discard",
                                          description=f"MATRIX_LR 0.04 -> {v:g}", rationale="Tune the Muon LR.",
                                          val_bpb=1.0 + i / 1000) for i, v in enumerate(values)])
        verdict = memory.check_idea(idea("Lower the learning rate of the Muon-optimised matrices to three hundredths "
                                         "... i.e. 0.03, since the early loss spikes look like overshooting"))
        assert (verdict.novel, verdict.match.id) == (False, "old/0001"), verdict.message
        assert "0.03 is too low" in verdict.message and verdict.judged_by == "reading"
        near = memory.check_idea(idea("Muon learning rate 0.0375"))
        assert near.novel and near.related and "MATRIX_LR" in near.context


def test_vetoed_and_skipped_ideas_never_block(tmp_path, minilm):
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        memory.add(ExperimentRecord(exp_id="0001", tag="n", status="veto", description="DEPTH 8 -> 12",
                                    rationale="Deeper.", review_reasons="too slow"))
        memory.add(ExperimentRecord(exp_id="0002", tag="n", status="skipped", description="Use SwiGLU in the MLP",
                                    rationale="Gated.", error="no edit applies"))
        for title in ("DEPTH 8 -> 12", "DEPTH 8 -> 16", "Use SwiGLU in the MLP"):
            assert memory.check_idea(idea(title)).novel, title


def test_a_refused_repeat_sends_later_repeats_to_the_original(tmp_path, minilm):
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        memory.add(ExperimentRecord(exp_id="0001", tag="n", status="keep", description="WARMDOWN_RATIO 0.5 -> 0.6",
                                    rationale="Longer cooldown.", val_bpb=0.99, delta=-0.004))
        first = memory.check_idea(idea("Start decaying the LR at 40% of training"))
        assert not first.novel and first.match.id == "n/0001"
        memory.add(ExperimentRecord(exp_id="0002", tag="n", status="repeat", repeat_of="n/0001",
                                    description="Start decaying the LR at 40% of training", rationale=""))
        again = memory.check_idea(idea("cool down over the last 60 percent of the run"))
        assert not again.novel and again.match.id == "n/0001"


def test_a_coded_change_is_refused_by_its_fingerprint_whatever_its_title(tmp_path, minilm):
    base = (Path(__file__).resolve().parents[1] / "train.py").read_text()
    new = base.replace("MLP_RATIO = 4", "MLP_RATIO = 3")
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        memory.add(ExperimentRecord(exp_id="0001", tag="n", status="discard", description="Cheaper MLP",
                                    rationale="", val_bpb=1.01, fingerprint=fingerprint(base, new).to_json()))
        restyled = base.replace("MLP_RATIO = 4", "MLP_RATIO = 6 // 2  # three times the width")
        verdict = memory.check_change(base, restyled)
        assert (verdict.novel, verdict.kind, verdict.match.id) == (False, "exact", "n/0001")
        assert "MLP_RATIO 4 -> 3" in verdict.message
        assert memory.check_change(base, base.replace("MLP_RATIO = 4", "MLP_RATIO = 2")).novel
        # the reading of a past experiment is corrected by what its code did
        assert not memory.check_idea(idea("shrink the feed-forward expansion to three times the width")).novel


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
