"""The novelty gate: structured changes decide (by value, per device profile), the fingerprint after coding,
normalised diff hashes for old records, retries, and changes held by prepared candidates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.crew.schemas import Idea
from agents.record.results import ExperimentRecord
from memory import ExperimentMemory, normalised_diff_hash
from memory.embeddings import load_minilm
from memory.fingerprint import fingerprint

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


REPO_TRAIN = (Path(__file__).resolve().parents[1] / "train.py").read_text()


def idea(title: str, *changes: dict, rationale: str = "", retry_of: str | None = None) -> Idea:
    return Idea(title=title, rationale=rationale, expected_effect="", category="other", changes=list(changes),
                retry_of=retry_of)


def ran(exp_id: str, title: str, *changes: dict, status: str = "discard", new_text: str | None = None,
        **fields) -> ExperimentRecord:
    """A past experiment as the loop stores it: its declared changes and, when coded, its fingerprint."""
    fp = fingerprint(REPO_TRAIN, new_text).to_json() if new_text is not None else ""
    return ExperimentRecord(exp_id=exp_id, tag="n", status=status, description=title, changes=json.dumps(changes),
                            fingerprint=fp, val_bpb=None if status == "crash" else 1.0, **fields)


def const(name: str, value: str) -> dict:
    return {"constant": name, "value": value}


def part(name: str, technique: str) -> dict:
    return {"part": name, "technique": technique}


def test_a_repeat_under_another_title_is_found_among_many_near_misses(tmp_path, minilm):
    with ExperimentMemory.open(tmp_path / "mem", device="cuda") as memory:
        memory.add(ran("0001", "MATRIX_LR 0.04 -> 0.03", const("MATRIX_LR", "0.03 if CUDA else 0.05"),
                       lesson="0.03 is too low."))
        values = [0.01 * k for k in range(1, 9) if k != 3] + [0.045, 0.055, 0.035, 0.025]
        memory.add_many([ran(f"{i + 2:04d}", f"MATRIX_LR 0.04 -> {v:g}", const("MATRIX_LR", f"{v:g} if CUDA else 0.05"))
                         for i, v in enumerate(values)])
        again = memory.check_idea(idea("Calmer Muon steps against the early loss spikes",
                                       const("MATRIX_LR", "0.6 * 0.05 if CUDA else 0.05")))
        assert (again.novel, again.kind, again.match.id, again.judged_by) == (False, "semantic", "n/0001", "structure")
        assert "0.03 is too low" in again.message
        near = memory.check_idea(idea("Calmer Muon steps", const("MATRIX_LR", "0.032 if CUDA else 0.05")))
        assert near.novel and "MATRIX_LR: 0.032 vs" in near.message
        assert len(near.related) == 3, "the experiments on the same constant go to the coder as context"
        assert memory.check_idea(idea("Calmer Muon steps", const("EMBEDDING_LR", "0.03"))).novel
        both = memory.check_idea(idea("x", const("MATRIX_LR", "0.03 if CUDA else 0.05"), part("MLP", "SwiGLU")))
        assert both.novel, "a change to code besides is another experiment"


def test_values_are_compared_on_the_device_profile_the_run_uses(tmp_path, minilm):
    new = REPO_TRAIN.replace("DEPTH = 8 if CUDA else 2", "DEPTH = 8 if CUDA else 3")
    with ExperimentMemory.open(tmp_path / "mem") as memory:  # a CPU run: DEPTH 2 -> 3 on the CPU profile
        memory.add(ran("0001", "DEPTH 2 -> 3", const("DEPTH", "8 if CUDA else 3"), new_text=new))
        plain = idea("Three blocks", const("DEPTH", "3"))  # 3 on every profile: on this CPU the same experiment
        assert not memory.check_idea(plain, device="cpu").novel
        assert memory.check_idea(plain, device="cuda").novel  # on a GPU DEPTH 8 -> 3 never ran
        assert memory.check_idea(idea("Deeper on the GPU", const("DEPTH", "10 if CUDA else 2")), device="cpu").novel


def test_vetoed_and_skipped_ideas_never_block(tmp_path, minilm):
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        memory.add(ran("0001", "DEPTH 8 -> 12", const("DEPTH", "12"), status="veto", review_reasons="too slow"))
        memory.add(ran("0002", "Use SwiGLU in the MLP", part("MLP.forward", "SwiGLU"), status="skipped",
                       error="no edit applies"))
        for proposal in (idea("a", const("DEPTH", "12")), idea("b", part("MLP.forward", "swiglu")),
                         idea("DEPTH 8 -> 12")):
            assert memory.check_idea(proposal).novel, proposal.title


def test_a_refused_repeat_sends_later_repeats_to_the_original(tmp_path, minilm):
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        memory.add(ran("0001", "Longer cooldown", const("WARMDOWN_RATIO", "0.6"), status="keep", delta=-0.004))
        memory.add(ExperimentRecord(exp_id="0002", tag="n", status="repeat", repeat_of="n/0001",
                                    description="Start decaying the LR at 40% of training",
                                    changes=json.dumps([const("WARMDOWN_RATIO", "0.6")])))
        again = memory.check_idea(idea("cool down over the last 60 percent", const("WARMDOWN_RATIO", "3 / 5")))
        assert not again.novel and again.match.id == "n/0001"


def test_the_code_decides_what_a_past_experiment_changed(tmp_path, minilm):
    new = REPO_TRAIN.replace("MLP_RATIO = 4", "MLP_RATIO = 3")
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        # its idea declared DEPTH, its code changed MLP_RATIO: the fingerprint is the authority
        memory.add(ran("0001", "Cheaper MLP", const("DEPTH", "10"), new_text=new))
        restyled = REPO_TRAIN.replace("MLP_RATIO = 4", "MLP_RATIO = 6 // 2  # three times the width")
        verdict = memory.check_change(REPO_TRAIN, restyled)
        assert (verdict.novel, verdict.kind, verdict.match.id) == (False, "exact", "n/0001")
        assert "MLP_RATIO 4 -> 3" in verdict.message
        assert memory.check_change(REPO_TRAIN, REPO_TRAIN.replace("MLP_RATIO = 4", "MLP_RATIO = 2")).novel
        assert not memory.check_idea(idea("Narrow the feed-forward block", const("MLP_RATIO", "3"))).novel
        assert memory.check_idea(idea("Deeper", const("DEPTH", "10"))).novel


def test_parts_offline_same_part_and_technique_name_decide(tmp_path, minilm):
    gelu = REPO_TRAIN.replace("F.relu(self.c_fc(x)).square()", "F.gelu(self.c_fc(x))")
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        memory.add(ran("0001", "MLP activation: ReLU^2 -> GELU", part("MLP.forward", "MLP activation GELU"),
                       new_text=gelu))
        memory.add(ran("0002", "Attention sinks", new_text=REPO_TRAIN.replace("y = F.scaled_dot_product_attention",
                                                                              "y = 1.0 * F.scaled_dot_product_attention")))
        same = memory.check_idea(idea("Smoother non-linearity", part("MLP.forward", "mlp activation: gelu")))
        assert (same.novel, same.match.id) == (False, "n/0001")
        assert memory.check_idea(idea("Smoother non-linearity", part("MLP.forward", "MLP activation SiLU"))).novel
        assert memory.check_idea(idea("GELU in attention", part("CausalSelfAttention.forward", "GELU"))).novel
        unnamed = memory.check_idea(idea("Sinks", part("CausalSelfAttention.forward", "attention sinks")))
        assert unnamed.novel and [h.id for h in unnamed.related] == ["n/0002"], "unsure admits, with context"


def test_english_without_changes_is_read_and_unsure_admits(tmp_path, minilm):
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        memory.add(ran("0001", "QK-norm: on -> off", part("CausalSelfAttention.forward", "QK-norm off")))
        memory.add(ran("0002", "embedding norm: on -> off", part("GPT.forward", "embedding norm off")))
        memory.add(ran("0003", "WARMDOWN_RATIO 0.5 -> 0.7", const("WARMDOWN_RATIO", "0.7")))
        off = memory.check_idea(idea("turn QK-norm off"))
        assert (off.novel, off.match.id, off.judged_by) == (False, "n/0001", "reading")
        assert memory.check_idea(idea("turn QK-norm on")).novel
        assert not memory.check_idea(idea("set the warmdown ratio to 0.7")).novel
        assert memory.check_idea(idea("set the warmdown ratio to 0.7 and add dropout")).novel
        words = memory.check_idea(idea("stop normalizing the token embeddings"))
        assert words.novel and "n/0002" in [h.id for h in words.related], "the related experiment goes to the coder"
        named = memory.check_idea(idea("stop normalizing the token embeddings", part("GPT.forward", "embedding norm off")))
        assert not named.novel and named.match.id == "n/0002"


# --------------------------------------------------------------------------------------------- retries


@pytest.fixture
def memory_with_history(tmp_path, minilm):
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        memory.add(ran("0004", "Replace ReLU squared with GELU", part("MLP.forward", "GELU"), status="crash",
                       error="NameError: gelu", diff_hash="h-gelu"))
        memory.add(ran("0005", "Increase depth from 8 to 10", const("DEPTH", "10 if CUDA else 2"),
                       lesson="Too slow per step.", diff_hash="h-depth"))
        yield memory


GELU_AGAIN = part("MLP.forward", "gelu")


def test_repeat_of_a_crash_is_refused_with_a_hint_to_retry(memory_with_history):
    verdict = memory_with_history.check_idea(idea("Swap the squared ReLU for GELU", GELU_AGAIN))
    assert (verdict.novel, verdict.kind, verdict.match.id) == (False, "semantic", "n/0004")
    assert "retry_of='0004'" in verdict.message and "NameError" in verdict.message


def test_deliberate_retry_of_a_crash_is_admitted(memory_with_history):
    verdict = memory_with_history.check_idea(idea("Swap the squared ReLU for GELU", GELU_AGAIN, retry_of="0004"))
    assert (verdict.novel, verdict.kind, verdict.match.id) == (True, "retry", "n/0004")
    assert "did not complete" in verdict.message


def test_retry_of_a_completed_experiment_is_refused(memory_with_history):
    verdict = memory_with_history.check_idea(idea("Make it deeper", const("DEPTH", "10 if CUDA else 2"),
                                                  retry_of="0005"), device="cuda")
    assert (verdict.novel, verdict.kind, verdict.match.id) == (False, "semantic", "n/0005")
    assert "only crashed or skipped experiments are retried" in verdict.message
    assert "Too slow per step" in verdict.message


def test_exact_repeat_of_a_change_is_refused(memory_with_history):
    verdict = memory_with_history.check_diff("h-depth")
    assert (verdict.novel, verdict.kind, verdict.match.id) == (False, "exact", "n/0005")
    assert memory_with_history.check_diff("h-new").novel


def test_same_change_as_a_crash_passes_only_as_a_deliberate_retry(memory_with_history):
    assert not memory_with_history.check_diff("h-gelu").novel
    verdict = memory_with_history.check_diff("h-gelu", retry_of="0004")
    assert (verdict.novel, verdict.kind) == (True, "retry")


# ------------------------------------------------------------------------------------ prepared candidates


def test_a_change_held_by_a_prepared_candidate_is_refused_until_its_record_is_in(tmp_path, minilm):
    new = REPO_TRAIN.replace("MLP_RATIO = 4", "MLP_RATIO = 3")
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        assert memory.claim("run/0001", REPO_TRAIN, new, "MLP_RATIO 4 -> 3").novel
        held = memory.check_change(REPO_TRAIN, new, claimant="run/0002")
        assert (held.novel, held.match.id, held.match.status) == (False, "run/0001", "prepared")
        assert not memory.claim("run/0002", REPO_TRAIN, new, "Narrower MLP").novel
        assert memory.check_change(REPO_TRAIN, new, claimant="run/0001").novel  # its own claim is no repeat
        memory.add(ExperimentRecord(exp_id="0001", tag="run", status="veto", description="MLP_RATIO 4 -> 3"))
        assert memory.check_change(REPO_TRAIN, new, claimant="run/0002").novel  # vetoed: it never ran
