"""Change fingerprints: constants compared by value per device profile, code units by normalised code."""

from __future__ import annotations

from pathlib import Path

import pytest

from memory.fingerprint import ChangeFingerprint, fingerprint, fingerprint_or_none

TRAIN = (Path(__file__).resolve().parents[1] / "train.py").read_text()

SMALL = '''\
import torch
CUDA = torch.cuda.is_available()
LR = 0.04 if CUDA else 0.05  # learning rate
WIDTH = 64
DIM = WIDTH * 2


def step(x):
    """Docstring."""
    return x * LR


class Net:
    def forward(self, x):
        return x + 1
'''


def test_equal_values_written_differently_are_the_same_change():
    a = fingerprint(SMALL, SMALL.replace("LR = 0.04 if CUDA", "LR = 0.6 * 0.1 if CUDA"))
    b = fingerprint(SMALL, SMALL.replace("LR = 0.04 if CUDA", "LR = 0.06 if CUDA"))
    assert a.key == b.key
    assert a.constants == {"LR": {"CUDA": ["0.04", "0.06"], "not CUDA": ["0.05", "0.05"]}}
    assert a.describe() == "LR 0.04 -> 0.06 (CUDA)"


def test_other_value_or_other_profile_is_another_change():
    cuda = fingerprint(SMALL, SMALL.replace("0.04 if CUDA", "0.03 if CUDA"))
    cpu = fingerprint(SMALL, SMALL.replace("else 0.05", "else 0.03"))
    other = fingerprint(SMALL, SMALL.replace("0.04 if CUDA", "0.02 if CUDA"))
    assert len({cuda.key, cpu.key, other.key}) == 3


def test_derived_constants_follow_their_inputs():
    fp = fingerprint(SMALL, SMALL.replace("WIDTH = 64", "WIDTH = 80"))
    assert set(fp.constants) == {"WIDTH", "DIM"}
    inlined = fingerprint(SMALL, SMALL.replace("WIDTH = 64", "WIDTH = 80").replace("DIM = WIDTH * 2", "DIM = 160"))
    assert inlined.key == fp.key  # the same values, whichever way they are written


def test_comments_docstrings_and_formatting_do_not_count():
    restyled = SMALL.replace('"""Docstring."""', '"""Another docstring."""').replace(
        "return x * LR", "return (x *   LR)  # scaled")
    assert fingerprint(SMALL, restyled).empty
    assert fingerprint(SMALL, restyled).describe() == "no change to the code"


def test_changed_code_units_are_named():
    fp = fingerprint(SMALL, SMALL.replace("return x + 1", "return x + 2"))
    assert set(fp.units) == {"Net.forward"} and not fp.constants
    moved = "EXTRA = 1\n" + SMALL
    assert fingerprint(moved, moved.replace("return x + 1", "return x + 2")).units.keys() == {"Net.forward"}


def test_fingerprint_round_trips_through_json():
    fp = fingerprint(TRAIN, TRAIN.replace("MLP_RATIO = 4", "MLP_RATIO = 3").replace(
        "F.relu(self.c_fc(x)).square()", "F.gelu(self.c_fc(x))"))
    again = ChangeFingerprint.from_json(fp.to_json())
    assert again is not None and again.key == fp.key
    assert again.describe() == "MLP_RATIO 4 -> 3; code: MLP.forward changed"
    assert ChangeFingerprint.from_json("not json") is None and ChangeFingerprint.from_json("") is None


def test_the_real_train_py_has_two_device_profiles():
    fp = fingerprint(TRAIN, TRAIN.replace("DEPTH = 8 if CUDA else 2", "DEPTH = 10 if CUDA else 2"))
    assert fp.constants == {"DEPTH": {"CUDA": ["8", "10"], "not CUDA": ["2", "2"]}}
    batch = fingerprint(TRAIN, TRAIN.replace("2**19 if CUDA", "524288 * 2 if CUDA"))
    assert batch.constants["TOTAL_BATCH_SIZE"]["CUDA"] == ["524288", "1048576"]


@pytest.mark.parametrize("broken", ["def f(:\n", "x = (\n"])
def test_unparsable_code_has_no_fingerprint(broken):
    assert fingerprint_or_none(SMALL, SMALL + broken) is None
