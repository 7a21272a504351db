"""agents.crew.edits: search/replace application, compile check, diffs."""

from __future__ import annotations

import subprocess

import pytest

from agents.crew.edits import EditError, apply_edit, check_compiles, diff_stats, unified_diff
from agents.crew.schemas import CodeEdit, EditBlock

TRAIN = """\
import torch

DEPTH = 4
MATRIX_LR = 0.04
EMBED_LR = 0.6
WARMUP = 0.0

def lr_mult(step):
    return 1.0

def lr_mult_embed(step):
    return 1.0
"""


def edit(*pairs: tuple[str, str], path: str = "train.py") -> CodeEdit:
    return CodeEdit(path=path, blocks=[EditBlock(search=s, replace=r) for s, r in pairs])


def test_blocks_apply_in_order():
    new = apply_edit(TRAIN, edit(("MATRIX_LR = 0.04", "MATRIX_LR = 0.03"), ("DEPTH = 4\n", "DEPTH = 6\n")))
    assert "MATRIX_LR = 0.03\n" in new and "DEPTH = 6\n" in new
    assert new.count("\n") == TRAIN.count("\n")
    # the second block sees the first block's result
    chained = apply_edit(TRAIN, edit(("DEPTH = 4", "DEPTH = 5"), ("DEPTH = 5", "DEPTH = 7")))
    assert "DEPTH = 7" in chained


def test_trailing_whitespace_differences_are_tolerated():
    text = TRAIN.replace("EMBED_LR = 0.6\n", "EMBED_LR = 0.6   \n")
    new = apply_edit(text, edit(("MATRIX_LR = 0.04\nEMBED_LR = 0.6\n", "MATRIX_LR = 0.04\nEMBED_LR = 0.8")))
    assert "EMBED_LR = 0.8\nWARMUP = 0.0\n" in new
    assert "0.6" not in new


def test_ambiguous_search_is_refused_with_count():
    with pytest.raises(EditError, match=r"block 1: search text occurs 2 times"):
        apply_edit(TRAIN, edit(("    return 1.0", "    return 0.5")))


def test_ambiguous_after_whitespace_fallback_names_lines():
    text = TRAIN.replace("    return 1.0\n", "    return 1.0 \n")
    with pytest.raises(EditError, match=r"block 1: .*occurs 2 times \(lines 9, 12\)"):
        apply_edit(text, edit(("    return 1.0\n", "    return 0.5\n")))


def test_missing_search_names_the_closest_line():
    with pytest.raises(EditError) as info:
        apply_edit(TRAIN, edit(("DEPTH = 4", "DEPTH = 5"), ("MATRIX_LR = 0.05", "MATRIX_LR = 0.02")))
    message = str(info.value)
    assert message.startswith("block 2: search text not found")
    assert "closest line 4: 'MATRIX_LR = 0.04'" in message


def test_lines_present_but_not_contiguous():
    with pytest.raises(EditError, match="not as one contiguous block"):
        apply_edit(TRAIN, edit(("DEPTH = 4\nEMBED_LR = 0.6", "DEPTH = 5")))


def test_wrong_path_is_refused():
    with pytest.raises(EditError, match=r"edit targets 'prepare.py'; only train.py may be edited"):
        apply_edit(TRAIN, edit(("DEPTH = 4", "DEPTH = 5"), path="prepare.py"))
    with pytest.raises(EditError, match="only train.py"):
        apply_edit(TRAIN, edit(("DEPTH = 4", "DEPTH = 5"), path="sub/train.py"))
    assert "DEPTH = 5" in apply_edit(TRAIN, edit(("DEPTH = 4", "DEPTH = 5"), path="./train.py"))


def test_no_op_edits_are_refused():
    with pytest.raises(EditError, match="no blocks"):
        apply_edit(TRAIN, CodeEdit(blocks=[]))
    with pytest.raises(EditError, match="block 1: search and replace are identical"):
        apply_edit(TRAIN, edit(("DEPTH = 4", "DEPTH = 4")))
    with pytest.raises(EditError, match="block 1: search text is empty"):
        apply_edit(TRAIN, edit(("  \n", "x = 1")))
    with pytest.raises(EditError, match="leaves train.py unchanged"):
        apply_edit(TRAIN, edit(("DEPTH = 4", "DEPTH = 5"), ("DEPTH = 5", "DEPTH = 4")))


def test_syntax_error_names_line_and_column():
    broken = apply_edit(TRAIN, edit(("    return 1.0\n\ndef lr_mult_embed", "    return (1.0\n\ndef lr_mult_embed")))
    with pytest.raises(EditError, match=r"train.py does not compile: line 9, col 12: '\(' was never closed"):
        check_compiles(broken)
    with pytest.raises(EditError, match=r"line 9, .*: 'return \(1.0'$"):
        check_compiles(broken)
    with pytest.raises(EditError, match=r"line 3, col \d+: .*indent"):
        check_compiles("x = 1\nif x:\npass\n")
    check_compiles(TRAIN)  # valid source passes silently


def test_unified_diff_applies_with_git(tmp_path):
    new = apply_edit(TRAIN, edit(("DEPTH = 4", "DEPTH = 8"))).rstrip("\n")  # no final newline either
    patch = unified_diff(TRAIN, new)
    assert patch.startswith("--- a/train.py\n+++ b/train.py\n")
    assert "\\ No newline at end of file" in patch
    (tmp_path / "train.py").write_text(TRAIN)
    (tmp_path / "p.diff").write_text(patch)
    subprocess.run(["git", "apply", "p.diff"], cwd=tmp_path, check=True, capture_output=True)
    assert (tmp_path / "train.py").read_text() == new
    assert unified_diff(TRAIN, TRAIN) == ""


def test_diff_stats_counts_lines():
    new = apply_edit(TRAIN, edit(("DEPTH = 4\n", "DEPTH = 6\nN_HEAD = 4\n"), ("WARMUP = 0.0\n", "")))
    assert diff_stats(TRAIN, new) == (2, 2)
    assert diff_stats(TRAIN, TRAIN) == (0, 0)
    assert diff_stats("", "a\nb\n") == (2, 0)
