"""agents.bench.noop: an edit that changes nothing on the device profile that runs is told apart, and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.bench.noop import noop_reason
from agents.crew.edits import apply_edit
from agents.crew.schemas import CodeEdit
from agents.crew.searchspace import read_train_py

TRAIN_PY = (Path(__file__).resolve().parents[1] / "train.py").read_text()

SMALL = '''
import torch
CUDA = torch.cuda.is_available()
CAP = 15.0 if CUDA else 0.0
LR = 0.04 if CUDA else 0.03


def forward(x):
    """Scores."""
    if CAP:
        x = CAP * torch.tanh(x / CAP)
    return x * LR


def setup():
    if CUDA:
        torch.backends.cuda.matmul.allow_tf32 = True
    dtype = torch.bfloat16 if CUDA else torch.float32
    return dtype


def shadow(CAP):
    if CAP:  # the argument, not the constant: decided at run time
        return 1
    return 0


def runtime(x):
    return x.half() if x.is_cuda else x
'''


def test_removing_the_logit_soft_cap_does_nothing_where_it_is_zero():
    blocks = read_train_py(TRAIN_PY, "cuda").removals["Remove the logit soft-cap"]
    new = apply_edit(TRAIN_PY, CodeEdit(path="train.py", blocks=blocks, summary=""))
    reason = noop_reason(TRAIN_PY, new, "cpu")
    assert reason is not None and reason.startswith("does nothing on this device (cpu, profile 'not CUDA')")
    assert "LOGIT_SOFTCAP 0 -> (absent) here, but no code that runs here reads it" in reason
    assert "GPT.forward" in reason and "neither trained nor kept" in reason
    assert noop_reason(TRAIN_PY, new, "cuda") is None  # on a GPU it removes a live feature


def test_a_constant_changed_for_the_other_device_only():
    new = SMALL.replace("LR = 0.04 if CUDA else 0.03", "LR = 0.08 if CUDA else 0.03")
    assert "LR changes only on another device: 0.04 -> 0.08 (CUDA)" in noop_reason(SMALL, new, "cpu")
    assert noop_reason(SMALL, new, "cuda") is None
    assert noop_reason(SMALL, SMALL.replace("else 0.03", "else 0.02"), "cpu") is None


def test_a_constant_that_turns_a_dead_branch_on_is_a_change():
    assert noop_reason(SMALL, SMALL.replace("CAP = 15.0 if CUDA else 0.0", "CAP = 15.0 if CUDA else 30.0"),
                       "cpu") is None


@pytest.mark.parametrize("old, new", [
    ("allow_tf32 = True", "allow_tf32 = False"),  # inside `if CUDA:`
    ("torch.bfloat16 if CUDA", "torch.float16 if CUDA"),  # the GPU side of a conditional expression
    ('    """Scores."""\n', '    """Scores, capped."""\n'),  # a docstring
    ("    return x * LR\n", "    return x * LR  # scaled\n"),  # a comment
])
def test_code_this_device_never_runs_is_no_change(old, new):
    assert old in SMALL
    assert noop_reason(SMALL, SMALL.replace(old, new), "cpu") is not None


@pytest.mark.parametrize("old, new", [
    ("        return 1\n", "        return 2\n"),  # behind a local name that shadows a constant: run-time branch
    ("x.half() if x.is_cuda", "x.float() if x.is_cuda"),  # a branch on a run-time value
    ("    return x * LR\n", "    return x * LR * 2\n"),  # live code
])
def test_what_cannot_be_told_from_constants_counts_as_a_change(old, new):
    assert old in SMALL
    assert noop_reason(SMALL, SMALL.replace(old, new), "cpu") is None


def test_text_that_does_not_parse_is_not_judged():
    assert noop_reason(SMALL, SMALL + "\ndef broken(:\n", "cpu") is None
