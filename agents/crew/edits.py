"""Apply the coder's search/replace blocks to train.py, check it compiles, measure the diff.

Error messages go back to the coder verbatim, so they say exactly which block failed and why.
"""

from __future__ import annotations

import difflib
from pathlib import PurePosixPath

from agents.crew.schemas import CodeEdit
from agents.trainpy import EDITABLE_FILE


class EditError(ValueError):
    """An edit that cannot be applied or does not compile; the message is meant for the coder."""


def apply_edit(text: str, edit: CodeEdit) -> str:
    """`text` with every block of `edit` applied in order, each to the result of the previous one.

    Each block's `search` must occur exactly once. When it is not found verbatim, a match that differs
    only in trailing whitespace on its lines is accepted (models often drop or add trailing spaces).
    """
    if PurePosixPath(edit.path.strip()) != PurePosixPath(EDITABLE_FILE):
        raise EditError(f"edit targets {edit.path!r}; only {EDITABLE_FILE} may be edited")
    if not edit.blocks:
        raise EditError("the edit has no blocks")
    new = text
    for number, block in enumerate(edit.blocks, start=1):
        new = _apply_block(new, block.search, block.replace, number)
    if new == text:
        raise EditError(f"the edit leaves {EDITABLE_FILE} unchanged")
    return new


def _apply_block(text: str, search: str, replace: str, number: int) -> str:
    where = f"block {number}"
    if not search.strip():
        raise EditError(f"{where}: search text is empty")
    if search == replace:
        raise EditError(f"{where}: search and replace are identical")
    count = text.count(search)
    if count == 1:
        return text.replace(search, replace, 1)
    if count > 1:
        raise EditError(f"{where}: search text occurs {count} times; add surrounding lines to make it unique")

    lines = text.splitlines(keepends=True)
    wanted = [line.rstrip() for line in search.splitlines()]
    have = [line.rstrip() for line in lines]
    starts = [i for i in range(len(have) - len(wanted) + 1) if have[i : i + len(wanted)] == wanted]
    if len(starts) > 1:
        raise EditError(
            f"{where}: search text (ignoring trailing whitespace) occurs {len(starts)} times "
            f"(lines {', '.join(str(s + 1) for s in starts)}); add surrounding lines to make it unique"
        )
    if not starts:
        raise EditError(f"{where}: search text not found; {_closest_hint(search, lines)}")
    first, last = starts[0], starts[0] + len(wanted)
    replacement = replace
    if lines[last - 1].endswith("\n") and replacement and not replacement.endswith("\n"):
        replacement += "\n"
    return "".join(lines[:first]) + replacement + "".join(lines[last:])


def _closest_hint(search: str, lines: list[str]) -> str:
    """Name the first search line that matches nothing in the file, and the file line nearest to it."""
    stripped = [line.rstrip() for line in lines]
    present = set(stripped)
    for offset, line in enumerate(search.splitlines(), start=1):
        if not line.strip() or line.rstrip() in present:
            continue
        scored = [(difflib.SequenceMatcher(None, line.strip(), cand.strip()).ratio(), i) for i, cand in enumerate(stripped)]
        if not scored:
            return f"line {offset} of the search ({line.strip()!r}) matches nothing; the file is empty"
        ratio, index = max(scored)
        if ratio < 0.5:
            return f"line {offset} of the search ({line.strip()!r}) matches nothing; no similar line in the file"
        return (
            f"line {offset} of the search ({line.strip()!r}) matches nothing; "
            f"closest line {index + 1}: {stripped[index].strip()!r}"
        )
    return "every line exists in the file, but not as one contiguous block in this order"


def check_compiles(text: str, filename: str = EDITABLE_FILE) -> None:
    """Raise EditError naming line and column when `text` is not valid Python."""
    try:
        # a name that is no file: CPython would otherwise quote (and measure columns on) a train.py on disk
        compile(text, f"<{filename}>", "exec", dont_inherit=True)
    except SyntaxError as exc:
        lines = text.splitlines()
        source = lines[exc.lineno - 1].strip() if exc.lineno and 0 < exc.lineno <= len(lines) else ""
        shown = f": {source!r}" if source else ""
        raise EditError(f"{filename} does not compile: line {exc.lineno}, col {exc.offset}: {exc.msg}{shown}") from None
    except ValueError as exc:  # e.g. null bytes in the source
        raise EditError(f"{filename} does not compile: {exc}") from None


def unified_diff(old: str, new: str, path: str = EDITABLE_FILE) -> str:
    """A `git diff`-style unified diff of two versions of `path` ("" when equal)."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), fromfile=f"a/{path}", tofile=f"b/{path}"
    )
    # a last line without a newline gets git's marker, so the patch stays appliable
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def diff_stats(old: str, new: str) -> tuple[int, int]:
    """(lines added, lines removed) going from `old` to `new`."""
    matcher = difflib.SequenceMatcher(None, old.splitlines(), new.splitlines(), autojunk=False)
    added = removed = 0
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "delete"):
            removed += i2 - i1
        if tag in ("replace", "insert"):
            added += j2 - j1
    return added, removed
