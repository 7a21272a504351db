"""`no-metric-forgery` in what train.py reads and prints: the environment, harness variables, printed metrics.

`os` may only write a few torch/CUDA runtime knobs into `os.environ` (literal key and value); any other
environment access is forgery, because the environment is the harness's channel to prepare.py (time budget,
seed, result path). The summary line `val_bpb:` prints the name assigned from the evaluate_bpb call and
nothing else; no summary value is a literal. (The harness reads the evaluator's record, not the print; the
print rule keeps the log honest for the humans and the analyst who read it.) The time budget: budget.py.
"""

from __future__ import annotations

import ast

from agents.bench.guard.policy import (
    ENDS_WITH_METRIC_KEY,
    ENV_KEYS_WRITABLE,
    LITERAL_METRIC,
    MENTIONS_BPB,
    OS_ENVIRONMENT,
)
from agents.bench.guard.program import Program, literal_str

_ENVIRONMENT = frozenset(f"os.{e}" for e in OS_ENVIRONMENT)


def check(p: Program) -> None:
    for node in p.of(ast.Name):
        qual = p.resolve(node)
        if qual in _ENVIRONMENT:
            _check_environment_use(p, node, qual)
    for node in p.of(ast.Attribute):
        if node.attr in OS_ENVIRONMENT and p.resolve(node.value) == "os":
            _check_environment_use(p, node, f"os.{node.attr}")
    for node in p.of(ast.Constant):
        if isinstance(node.value, str) and not p.is_docstring(node) and \
                not isinstance(p.parents.get(node), ast.JoinedStr):
            if "AUTORESEARCH_" in node.value:
                p.hit("no-metric-forgery", node, "names a harness variable (AUTORESEARCH_*); only prepare.py reads them")
            if LITERAL_METRIC.search(node.value):
                p.hit("no-metric-forgery", node, f"prints a literal metric {node.value.strip()!r}: summary values are "
                                                 "computed")
    for node in p.of(ast.JoinedStr):
        _check_fstring(p, node)
    for node in p.of(ast.BinOp):
        text = literal_str(node.left)
        if isinstance(node.op, ast.Mod) and text and MENTIONS_BPB.search(text):
            values = node.right.elts if isinstance(node.right, ast.Tuple) else [node.right]
            if not all(p.is_bpb_name(v) for v in values):
                p.hit("no-metric-forgery", node, "a val_bpb line may only print the value returned by evaluate_bpb")
    for node in p.of(ast.Call):
        _check_metric_call(p, node)


def _check_environment_use(p: Program, node: ast.AST, qual: str) -> None:
    """Only `os.environ["KNOB"] = "value"` / `os.environ.setdefault("KNOB", "value")` for torch/CUDA knobs."""
    parent = p.parents.get(node)
    key = value = None
    if qual == "os.environ" and isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store):
        assign = p.parents.get(parent)
        key = literal_str(parent.slice)
        value = literal_str(assign.value) if isinstance(assign, ast.Assign) else None
    elif qual == "os.environ" and isinstance(parent, ast.Attribute) and parent.attr == "setdefault":
        call = p.parents.get(parent)
        if isinstance(call, ast.Call) and len(call.args) == 2:
            key, value = literal_str(call.args[0]), literal_str(call.args[1])
    if key in ENV_KEYS_WRITABLE and value is not None:
        return
    p.hit("no-metric-forgery", node,
          f"{qual}: train.py may not read or change the environment (the harness's channel for the time "
          f"budget, seed and result path); only literal writes of {', '.join(sorted(ENV_KEYS_WRITABLE))}")


def _check_fstring(p: Program, node: ast.JoinedStr) -> None:
    if isinstance(p.parents.get(node), ast.FormattedValue):
        return  # a format spec
    constant = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
    if LITERAL_METRIC.search(constant):
        p.hit("no-metric-forgery", node, "prints a literal metric value: summary values are computed")
    mentions_bpb = bool(MENTIONS_BPB.search(constant))
    after_key = False
    for part in node.values:
        if isinstance(part, ast.Constant):
            after_key = bool(ENDS_WITH_METRIC_KEY.search(str(part.value)))
        elif isinstance(part, ast.FormattedValue):
            if mentions_bpb and not p.is_bpb_name(part.value):
                p.hit("no-metric-forgery", node, "a val_bpb line may only print the value returned by evaluate_bpb")
                return
            if after_key and isinstance(part.value, ast.Constant):
                p.hit("no-metric-forgery", node, "prints a literal metric value: summary values are computed")
            after_key = False


def _check_metric_call(p: Program, node: ast.Call) -> None:
    """print("val_bpb:", x) and "val_bpb: {}".format(x): every value shown must be evaluate_bpb's result."""
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr == "format" and MENTIONS_BPB.search(literal_str(func.value) or ""):
        values = node.args + [k.value for k in node.keywords]
    elif any(MENTIONS_BPB.search(literal_str(a) or "") for a in node.args):
        values = []
        for a in node.args:
            if isinstance(a, ast.JoinedStr):  # its formatted values are shown on the same line
                values += [v.value for v in a.values if isinstance(v, ast.FormattedValue)]
            elif literal_str(a) is None:
                values.append(a)
    else:
        return
    if not all(p.is_bpb_name(v) for v in values):
        p.hit("no-metric-forgery", node, "a val_bpb line may only print the value returned by evaluate_bpb")
