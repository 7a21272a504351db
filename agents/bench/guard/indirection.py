"""`no-indirection`: no way around the other rules by reaching code or names indirectly.

exec/eval/compile/__import__, globals()/locals()/vars(), getattr/setattr with a computed name, `__dict__` and
the other dunder doors, `__builtins__`, and star imports (which hide which names train.py uses). Importing
importlib, inspect and the like is reported by modules.py under this rule.
"""

from __future__ import annotations

import ast

from agents.bench.guard.policy import COMPUTED_NAME_CALLS, INDIRECT_ATTRS, INDIRECT_CALLS
from agents.bench.guard.program import Program, literal_str


def check(p: Program) -> None:
    for node in p.of(ast.Name):
        if node.id == "__builtins__":
            p.hit("no-indirection", node, "__builtins__ gives indirect access to every builtin")
    for node in p.of(ast.Attribute):
        if node.attr in INDIRECT_ATTRS:
            p.hit("no-indirection", node, f"{node.attr} reaches names indirectly, around the other rules")
    for node in p.of(ast.ImportFrom):
        if not node.level and any(a.name == "*" for a in node.names):
            p.hit("no-indirection", node, f"`from {node.module or ''} import *` hides which names train.py uses")
    for node in p.of(ast.Call):
        qual = p.resolve(node.func) or ""
        name = qual.removeprefix("builtins.") if qual.startswith("builtins.") else None
        if name in INDIRECT_CALLS:
            p.hit("no-indirection", node, f"{name}() runs or reaches code indirectly")
        if name in COMPUTED_NAME_CALLS and len(node.args) >= 2 and literal_str(node.args[1]) is None:
            p.hit("no-indirection", node, f"{name}() with a computed attribute name")
