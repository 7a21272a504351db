"""`seed-or-order-only`: seeds come from prepare.SEED, and an edit must change more than the seed or data order.

The harness varies SEED between re-runs to measure noise, so a hard-coded seed would make every re-run agree
with itself. An edit that only changes seeds or data order is refused, and so is an edit that changes no code
at all (comments and formatting only): its result could only be noise.
"""

from __future__ import annotations

import ast
import difflib

from agents.bench.guard.policy import MAKE_DATALOADER_SEED_POS, ORDER_KEYWORDS, SEED_FUNCS
from agents.bench.guard.program import Program, literal_str
from agents.bench.guard.report import Violation
from agents.trainpy import private_tree

_SEED_MASK = "<seed-or-order>"
_SEEDING_CALLS = frozenset({"manual_seed", "manual_seed_all", "seed", "default_rng", "RandomState", "Random",
                            "Generator"})


def check(p: Program) -> None:
    for node in p.of(ast.Call):
        qual = p.resolve(node.func) or ""
        method = node.func.attr if isinstance(node.func, ast.Attribute) else ""
        if qual in SEED_FUNCS or method in ("manual_seed", "manual_seed_all"):
            _check_seed_args(p, node, qual, node.args + [k.value for k in node.keywords])
        if qual == "prepare.make_dataloader":
            seeds = [k.value for k in node.keywords if k.arg == "seed"]
            if len(node.args) > MAKE_DATALOADER_SEED_POS:
                seeds.append(node.args[MAKE_DATALOADER_SEED_POS])
            if seeds:
                _check_seed_args(p, node, "make_dataloader", seeds)


def _check_seed_args(p: Program, node: ast.Call, qual: str, values: list[ast.AST]) -> None:
    mentions_seed = any(p.resolve(n) == "prepare.SEED" for v in values for n in ast.walk(v)
                        if isinstance(n, ast.Name | ast.Attribute))
    if values and not mentions_seed:
        p.hit("seed-or-order-only", node, f"{qual}() is not seeded from prepare.SEED: the harness varies SEED "
                                          "between re-runs to measure noise")


def seed_or_order_only(old_text: str, new_text: str) -> list[Violation]:
    """An edit whose only effect is the seed or the data order (or nothing at all) measures noise, not an idea."""
    if _code_only(old_text, mask_seeds=True) != _code_only(new_text, mask_seeds=True):
        return []  # the usual case: the code changed beyond seeds
    if _code_only(old_text) == _code_only(new_text):
        what = "changes no code (comments, docstrings or formatting only)"
    else:
        what = "changes only the random seed or the data order"
    line_no = _first_changed_line(old_text, new_text)
    lines = new_text.splitlines()
    line = lines[line_no - 1].strip() if 0 < line_no <= len(lines) else ""
    return [Violation("seed-or-order-only", line_no, line,
                      f"the edit {what}: any change in val_bpb would be noise, not an improvement")]


def _code_only(text: str, mask_seeds: bool = False) -> str:
    """The code's AST as text, without comments and docstrings (and with seeds masked): equal means same code."""
    tree = private_tree(text)  # a tree of its own: it is changed below
    for node in ast.walk(tree):  # children are queued before a node is yielded, so editing it in place is safe
        for field_name in ("body", "orelse", "finalbody"):
            statements = getattr(node, field_name, None)
            if isinstance(statements, list):
                setattr(node, field_name, [s for s in statements if not _is_bare_string(s)])
        if mask_seeds:
            _mask_seed_or_order(node)
    return ast.dump(tree)


def _is_bare_string(statement: ast.AST) -> bool:
    return isinstance(statement, ast.Expr) and literal_str(statement.value) is not None


def _mask_seed_or_order(node: ast.AST) -> None:
    """Replace a seed or data-order value by one placeholder, so that only those can differ between two files."""
    if isinstance(node, ast.Call):
        func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if func in _SEEDING_CALLS:
            node.args, node.keywords = [ast.Constant(_SEED_MASK)], []
        if func == "make_dataloader" and len(node.args) > MAKE_DATALOADER_SEED_POS:
            node.args[MAKE_DATALOADER_SEED_POS] = ast.Constant(_SEED_MASK)
        for k in node.keywords:
            if k.arg in ORDER_KEYWORDS:
                k.value = ast.Constant(_SEED_MASK)
    elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and ("SEED" in t.id.upper() or "SHUFFLE" in t.id.upper()) for t in node.targets):
        node.value = ast.Constant(_SEED_MASK)


def _first_changed_line(old_text: str, new_text: str) -> int:
    matcher = difflib.SequenceMatcher(a=old_text.splitlines(), b=new_text.splitlines(), autojunk=False)
    for tag, _, _, j1, _ in matcher.get_opcodes():
        if tag != "equal":
            return j1 + 1
    return 0
