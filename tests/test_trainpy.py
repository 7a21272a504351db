"""The one model of train.py: constants per device profile, code units, one parse per version, shared by threads."""

from __future__ import annotations

import ast
import dataclasses
import sys
import threading
import traceback
from pathlib import Path

import pytest

from agents import trainpy
from agents.bench.guard import EDITABLE_FILE as GUARD_EDITABLE_FILE
from agents.bench.guard import check_edit
from agents.crew.edits import EDITABLE_FILE as EDITS_EDITABLE_FILE
from agents.crew.searchspace import read_train_py
from memory.fingerprint import fingerprint
from tests.thread_pressure import run_threads, thread_pressure

TRAIN_PY = (Path(__file__).resolve().parent.parent / "train.py").read_text()

SMALL = '''"""A small train.py."""
import torch

CUDA = torch.cuda.is_available()
DEPTH = 8 if CUDA else 2  # number of blocks
WIDTH = DEPTH * 64
LR = 0.6 * 1.5
BETAS = (0.8, 0.95)  # Adam's betas
NAME = "gpt"  # a '#' in "a # string" is not a comment
LABEL = "x # y"
SHIFT = 2**19 if CUDA else 2**12
model = torch.nn.Linear(WIDTH, WIDTH)


def norm(x):
    """Docstrings do not count."""
    return x / x.norm()  # nor do comments


class MLP(torch.nn.Module):
    ratio = 4

    def forward(self, x):
        return norm(x) * self.ratio


if __name__ == "__main__":
    print(DEPTH)
'''


def test_constants_are_evaluated_per_device_profile():
    model = trainpy.read(SMALL)
    assert model.flags == ("CUDA",)
    assert [p.name for p in model.profiles] == ["CUDA", "not CUDA"]
    assert model.profile("cuda").name == "CUDA" and model.profile("cpu").name == "not CUDA"
    depth = model.constants["DEPTH"]
    assert dict(depth.values) == {"CUDA": 8, "not CUDA": 2}
    assert depth.source == "8 if CUDA else 2" and depth.comment == "number of blocks" and depth.line == 5
    assert dict(model.constants["WIDTH"].values) == {"CUDA": 512, "not CUDA": 128}  # later constants see earlier ones
    assert model.constants["LR"].spellings["CUDA"] == "0.9"  # canonical: 0.6 * 1.5 reads as 0.9
    assert model.constants["SHIFT"].spellings == {"CUDA": "524288", "not CUDA": "4096"}
    assert model.constants["BETAS"].values["not CUDA"] == (0.8, 0.95)
    assert model.constants["model"].spellings["CUDA"] == "torch.nn.Linear(WIDTH, WIDTH)"  # opaque: the expression
    assert "model" not in model.values("CUDA") and model.values("not CUDA")["DEPTH"] == 2
    assert "CUDA" not in model.constants  # a profile flag is not a constant


def test_branches_literals_and_comments_come_from_the_code():
    model = trainpy.read(SMALL)
    depth, width = model.constants["DEPTH"], model.constants["WIDTH"]
    assert model.text[slice(*model.span(depth.branches["not CUDA"]))] == "2"
    assert depth.is_literal("CUDA") and model.constants["SHIFT"].is_literal("CUDA")
    assert not width.is_literal("CUDA")  # computed from another constant: not a number to rewrite
    assert model.constants["NAME"].comment == "a '#' in \"a # string\" is not a comment"
    assert model.constants["LABEL"].comment == ""  # the '#' is inside the string
    constant_false = trainpy.read("CUDA = False\nDEPTH = 8 if CUDA else 2\n")
    assert constant_false.flags == () and [p.name for p in constant_false.profiles] == [trainpy.DEFAULT_PROFILE]
    assert constant_false.text[slice(*constant_false.span(constant_false.constants["DEPTH"].branches["default"]))] == "2"


def test_spans_count_characters_not_bytes():
    text = 'A = ("é→", 0.5)  # ünïcode\n'
    model = trainpy.read(text)
    element = model.constants["A"].expression.elts[1]
    start, end = model.span(element)
    assert text[start:end] == "0.5" and model.line_of(start) == 1


def test_code_units_ignore_comments_docstrings_and_formatting():
    model = trainpy.read(SMALL)
    assert {n: u.kind for n, u in model.units.items()} == {
        "norm": "function", "MLP.forward": "method", "MLP": "class", trainpy.MODULE_UNIT: "module"}
    reformatted = SMALL.replace('    """Docstrings do not count."""\n', "").replace("  # nor do comments", "") \
        .replace("return x / x.norm()", "return (x /\n            x.norm())")
    assert {n: u.digest for n, u in trainpy.read(reformatted).units.items()} == \
        {n: u.digest for n, u in model.units.items()}
    changed = trainpy.read(SMALL.replace("return norm(x) * self.ratio", "return norm(x) + self.ratio"))
    assert changed.units["MLP.forward"].digest != model.units["MLP.forward"].digest
    assert changed.units["MLP"].digest == model.units["MLP"].digest  # a method apart from its class
    attribute = trainpy.read(SMALL.replace("    ratio = 4\n", "    ratio = 3\n"))
    assert attribute.units["MLP"].digest != model.units["MLP"].digest


def test_one_parse_per_version_and_a_snapshot_nobody_can_change(monkeypatch):
    text = SMALL + "\nEXTRA = 1\n"
    builds = []
    real_build = trainpy._build
    monkeypatch.setattr(trainpy, "_build", lambda t, k: builds.append(k) or real_build(t, k))
    first = trainpy.read(text)
    assert trainpy.read(text) is first and len(builds) == 1
    assert trainpy.read(text + "\n") is not first and len(builds) == 2
    with pytest.raises(TypeError):
        first.constants["DEPTH"] = None  # type: ignore[index]
    with pytest.raises(TypeError):
        first.constants["DEPTH"].values["CUDA"] = 3  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.text = ""  # type: ignore[misc]
    private = trainpy.private_tree(text)
    assert private is not first.tree and len(builds) == 2


def test_bad_text_is_a_syntax_error_naming_the_line():
    with pytest.raises(SyntaxError) as raised:
        trainpy.read("DEPTH = (\n")
    assert raised.value.lineno == 1
    with pytest.raises(ValueError, match="device must be one of"):
        trainpy.read(SMALL).profile("tpu")


def test_one_name_for_the_editable_file():
    assert GUARD_EDITABLE_FILE is trainpy.EDITABLE_FILE and EDITS_EDITABLE_FILE is trainpy.EDITABLE_FILE


def test_threads_share_one_parse_and_never_race_the_parser():
    """The crew prepares candidates in several threads; each reads train.py versions through the search space,
    the fingerprint and the guard. Under conditions that make CPython 3.11's AST race show (thread switches
    inside tree building), every reader gets the same result as alone, and one version is parsed once."""
    threads, per_thread = 8, 2
    versions = [TRAIN_PY.replace("MLP_RATIO = 4", f"MLP_RATIO = {3 + i}").replace("NS_STEPS = 5", f"NS_STEPS = {5 + j}")
                for i in range(threads) for j in range(1, per_thread + 1)]

    def work(i: int) -> list:
        out = []
        for text in versions[i * per_thread:(i + 1) * per_thread]:
            shared = trainpy.read(TRAIN_PY)  # every thread asks for the same base at once
            out.append((id(shared), id(trainpy.read(text)), fingerprint(TRAIN_PY, text).to_json(),
                        sorted((k.name, k.value) for k in read_train_py(text, "cpu").knobs.values()),
                        [v.rule for v in check_edit(TRAIN_PY, text, ["train.py"]).violations]))
        return out

    with thread_pressure():
        results, errors = run_threads(work, threads)
    assert not errors, f"threads failed: {errors!r}"
    flat = [row for rows in results for row in rows]
    assert len({base for base, *_ in flat}) == 1  # one snapshot of the base for every thread
    for (_, model_id, print_json, knobs, rules), text in zip(flat, versions, strict=True):
        assert model_id == id(trainpy.read(text))
        assert print_json == fingerprint(TRAIN_PY, text).to_json()
        assert knobs == sorted((k.name, k.value) for k in read_train_py(text, "cpu").knobs.values())
        assert rules == []
    assert '"MLP_RATIO"' in flat[-1][2] and '"NS_STEPS"' in flat[-1][2]


@pytest.mark.skipif(sys.version_info >= (3, 13), reason="the parser race is fixed from Python 3.13")
def test_a_parse_anywhere_in_the_process_waits_for_the_same_lock():
    """The standard library parses too (traceback places its carets by parsing the failing line): any
    `ast.parse` is serialised with the model's, or it races them."""
    parsed = threading.Event()
    with trainpy._lock:
        other = threading.Thread(target=lambda: (ast.parse("x = 1"), parsed.set()))
        other.start()
        assert not parsed.wait(0.3)  # held off while the lock is held
    assert parsed.wait(5)
    other.join()


def _fails_with_carets(values: dict) -> None:
    values["a"] + values["b"] * values["missing"]  # noqa: B018 (a failing line traceback parses for its carets)


def test_formatting_tracebacks_in_threads_never_races_the_model():
    """Preparing threads format tracebacks (a failed preparation keeps its trace) while others parse train.py
    versions: under thread switches inside tree building, neither raises SystemError."""
    versions = [TRAIN_PY.replace("MLP_RATIO = 4", f"MLP_RATIO = {3 + i}") for i in range(8)]

    def work(i: int) -> int:
        formatted = 0
        for k in range(30):
            if i % 2:
                try:
                    _fails_with_carets({"a": 1, "b": 2})
                except KeyError as exc:
                    formatted += "^" in "".join(traceback.format_exception(exc))
            else:
                trainpy.private_tree(versions[(i + k) % len(versions)])
        return formatted

    with thread_pressure():
        results, errors = run_threads(work, 8)
    assert not errors, f"threads failed: {errors!r}"
    assert sum(results) > 0  # the carets were placed: traceback did parse
