"""`no-val-data`: validation data is reached only through the one evaluate_bpb call.

`evaluate_bpb` is called once, outside any loop (choosing by it would train on validation data), and never
passed around; the dataloader is asked for the literal split 'train'; no string names validation files or the
data cache. (File reads: files.py; prepare's private names: modules.py.)
"""

from __future__ import annotations

import ast

from agents.bench.guard.policy import DATA_PATH, MAKE_DATALOADER_SPLIT_POS, VAL_LITERAL, VAL_PATH
from agents.bench.guard.program import EVALUATE, LOOPS, Program, keyword, literal_str


def check(p: Program) -> None:
    for node in p.of(ast.Name):
        if isinstance(node.ctx, ast.Load) and p.resolve(node) == EVALUATE:
            _check_evaluate_reference(p, node)
    for node in p.of(ast.Attribute):
        if isinstance(node.ctx, ast.Load) and (base := p.resolve(node.value)) and f"{base}.{node.attr}" == EVALUATE:
            _check_evaluate_reference(p, node)
    for node in p.of(ast.Constant):
        if isinstance(node.value, str) and not p.is_docstring(node) and \
                not isinstance(p.parents.get(node), ast.JoinedStr):
            text = node.value
            if VAL_LITERAL.match(text) or (VAL_PATH.search(text) and ("/" in text or "." in text)):
                p.hit("no-val-data", node, f"the string {text!r} names validation data")
            elif DATA_PATH.search(text):
                p.hit("no-val-data", node, f"the string {text!r} names the data cache; data comes from make_dataloader")
    calls = [n for n in p.of(ast.Call) if p.resolve(n.func) == EVALUATE]
    calls.sort(key=lambda n: (n.lineno, n.col_offset))
    for extra in calls[1:]:
        p.hit("no-val-data", extra, "evaluate_bpb is called more than once: only the final evaluation may "
                                    "see validation data (choosing by it would train on it)")
    for call in calls:
        if p.enclosing(call, LOOPS) is not None:
            p.hit("no-val-data", call, "evaluate_bpb is called inside a loop: only the final evaluation may "
                                       "see validation data")
    for node in p.of(ast.Call):
        if p.resolve(node.func) == "prepare.make_dataloader" and \
                literal_str(keyword(node, "split", MAKE_DATALOADER_SPLIT_POS)) != "train":
            p.hit("no-val-data", node, "make_dataloader must be called with the literal split 'train'; validation "
                                       "data is read only by evaluate_bpb")


def _check_evaluate_reference(p: Program, node: ast.AST) -> None:
    parent = p.parents.get(node)
    if not (isinstance(parent, ast.Call) and parent.func is node):
        p.hit("no-val-data", node, "evaluate_bpb is passed around instead of called once: only the final "
                                   "evaluation may see validation data")
