"""`causal-attention` for the targets: nothing of a batch's targets reaches the logits computed for it.

The targets are the inputs shifted one position: a model that reads them sees the token it is asked to predict,
as a model that attends to later positions does, and the evaluator's probe (run with inputs only) never sees it.
Followed from the targets of every batch drawn from prepare's stream (`dataorder.Loaders`) through names, helpers'
arguments and returns, and into the model's forward pass:
- the model called with anything computed from the targets, when its forward returns logits computed from it
  (a forward that takes the targets only to compute its own loss is fine);
- the targets stored where the model can read them later (an attribute, a module-level object, a global);
- the logits handed to a loss function mixed with the targets (the loss itself, label smoothing, weights by
  target, are the targets' own business).
A loss function's value and scalar reductions (`.item()`, `.mean()`) carry no target information onwards.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from agents.bench.guard.dataorder import batch_bindings, find_loaders
from agents.bench.guard.flow import (
    DEFINITIONS,
    FunctionNode,
    bound_arguments,
    definition_value,
    flow,
    own_nodes,
    reaching,
    returns,
)
from agents.bench.guard.program import Program

RULE = "causal-attention"
LOSSES = frozenset({"cross_entropy", "nll_loss", "binary_cross_entropy", "binary_cross_entropy_with_logits",
                    "kl_div", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "poisson_nll_loss",
                    "soft_margin_loss", "multilabel_soft_margin_loss", "multi_margin_loss"})
_SCALARS = frozenset({"item", "numel", "size", "dim", "tolist", "nelement"})
_REDUCTIONS = frozenset({"mean", "sum", "max", "min", "std", "var", "norm", "all", "any"})
_SHAPE_ATTRS = frozenset({"shape", "device", "dtype", "ndim", "is_cuda"})
_IN_PLACE = frozenset({"copy_", "fill_", "index_copy_", "index_put_", "scatter_", "scatter_add_", "masked_fill_",
                       "add_", "mul_", "append", "extend", "insert", "update", "setdefault", "__setitem__"})
_MAX_DEPTH = 60


@dataclass(frozen=True)
class _Frame:
    func: ast.AST | None
    tainted: frozenset[str] = frozenset()  # parameters holding target data


def check(p: Program) -> None:
    loaders = find_loaders(p)
    parts = batch_bindings(p, loaders)
    if not parts:
        return
    analysis = _Analysis(p, parts, loaders)
    functions = {id(p.enclosing(node, DEFINITIONS)): p.enclosing(node, DEFINITIONS)
                 for node in p.nodes if id(node) in parts}
    for func in functions.values():
        analysis.scan(_Frame(func), 0)
    seen = set()
    for node, why in analysis.found:
        if (id(node), why) not in seen:
            seen.add((id(node), why))
            p.hit(RULE, node, why)


class _Elements:
    """A collection (a list, a stream) whose elements carry this taint."""

    def __init__(self, taint: Taint):
        self.taint = taint


Taint = bool | tuple | _Elements
BATCH: Taint = (False, True, False)  # (inputs, targets, epoch) as prepare's stream yields them


def _any(taint: Taint) -> bool:
    if isinstance(taint, tuple):
        return any(_any(t) for t in taint)
    if isinstance(taint, _Elements):
        return _any(taint.taint)
    return bool(taint)


def _combine(a: Taint, b: Taint) -> Taint:
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        return tuple(_combine(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, _Elements) and isinstance(b, _Elements):
        return _Elements(_combine(a.taint, b.taint))
    if a is False:
        return b
    if b is False:
        return a
    return _any(a) or _any(b)


def _element(taint: Taint, index: int | None) -> Taint:
    if isinstance(taint, tuple):
        return taint[index] if index is not None and -len(taint) <= index < len(taint) else _any(taint)
    if isinstance(taint, _Elements):
        return taint.taint
    return taint


def _each(taint: Taint) -> Taint:
    """The taint of one item when iterating over a value."""
    if isinstance(taint, _Elements):
        return taint.taint
    if isinstance(taint, tuple):
        out: Taint = False
        for t in taint:
            out = _combine(out, t)
        return out
    return taint


class _Analysis:
    def __init__(self, p: Program, parts: dict[int, int | None], loaders):
        self.p, self.parts, self.fl, self.loaders = p, parts, flow(p), loaders
        self.found: list[tuple[ast.AST, str]] = []
        self._scanned: set[tuple[int, frozenset[str]]] = set()
        self._returns: dict[tuple[int, frozenset[str]], Taint] = {}
        self._model = {id(f) for f in self.fl.model_functions()}
        self._memo: dict[tuple, Taint] = {}

    # -------------------------------------------------------------------------------------------- taint
    def tainted(self, node: ast.AST, frame: _Frame, depth: int = 0) -> bool:
        return _any(self.taint(node, frame, depth))

    def taint(self, node: ast.AST, frame: _Frame, depth: int = 0) -> Taint:
        """What of the targets an expression carries (memoised; a cycle counts as clean while it is computed)."""
        if depth > _MAX_DEPTH or node is None:
            return False
        key = (id(node), id(frame.func), frame.tainted)
        if key not in self._memo:
            self._memo[key] = False
            self._memo[key] = self._taint(node, frame, depth)
        return self._memo[key]

    def _taint(self, node: ast.AST, frame: _Frame, depth: int) -> Taint:
        p = self.p
        if isinstance(node, ast.expr) and self.loaders.is_stream(node):
            return _Elements(BATCH)
        if isinstance(node, ast.Name):
            if node.id in frame.tainted and p.enclosing(node, DEFINITIONS) is frame.func:
                return True
            out: Taint = False
            for definition in reaching(p, node):
                out = _combine(out, self._definition_taint(definition, frame, depth))
            return out
        if isinstance(node, ast.Tuple):
            return tuple(self.taint(e, frame, depth + 1) for e in node.elts)
        if isinstance(node, ast.List | ast.Set):
            out = False
            for e in node.elts:
                out = _combine(out, self.taint(e, frame, depth + 1))
            return _Elements(out)
        if isinstance(node, ast.ListComp | ast.GeneratorExp | ast.SetComp):
            return _Elements(self.taint(node.elt, frame, depth + 1))
        if isinstance(node, ast.Subscript):
            base = self.taint(node.value, frame, depth + 1)
            index = node.slice
            if isinstance(index, ast.Constant) and isinstance(index.value, int):
                return _element(base, index.value)
            if isinstance(index, ast.Slice) and isinstance(base, tuple):
                return base[slice(*(i.value if isinstance(i, ast.Constant) else None
                                    for i in (index.lower, index.upper, index.step)))]
            return _combine(_any(base), self.tainted(index, frame, depth + 1) if isinstance(index, ast.expr)
                            else False)
        if isinstance(node, ast.Attribute):
            if node.attr in _SHAPE_ATTRS:
                return False
            return _any(self.taint(node.value, frame, depth + 1))
        if isinstance(node, ast.Call):
            return self._call_taint(node, frame, depth)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            left, right = self.taint(node.left, frame, depth + 1), self.taint(node.right, frame, depth + 1)
            if isinstance(left, _Elements) or isinstance(right, _Elements):  # list + list
                return _Elements(_combine(_each(left), _each(right)))
            return _any(left) or _any(right)
        if isinstance(node, ast.Lambda):
            return False
        return any(self.tainted(child, frame, depth + 1) for child in ast.iter_child_nodes(node)
                   if isinstance(child, ast.expr))

    def _definition_taint(self, definition: ast.AST, frame: _Frame, depth: int) -> Taint:
        p = self.p
        same = p.enclosing(definition, DEFINITIONS) is frame.func
        here = frame if same else _Frame(p.enclosing(definition, DEFINITIONS))
        kind, value = definition_value(p, definition)
        if kind == "param":
            return same and definition.arg in frame.tainted
        if kind == "augassign":
            out = self.taint(value.value, here, depth + 1)
            for prior in reaching(p, definition):
                out = _combine(out, self._definition_taint(prior, here, depth + 1))
            return _any(out)
        if kind == "assign" and value is not None:
            return self.taint(value, here, depth + 1)
        if kind == "unpack" and value is not None:
            return _path(p, definition, self.taint(value, here, depth + 1))
        if kind == "loop" and value is not None:
            return _path(p, definition, _each(self.taint(value, here, depth + 1)))
        if kind == "other" and value is not None:
            return self.taint(value, here, depth + 1)
        return False

    def _call_taint(self, call: ast.Call, frame: _Frame, depth: int) -> Taint:
        p = self.p
        name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
        qual = p.resolve(call.func) or ""
        if name in LOSSES or qual.rsplit(".", 1)[-1] in LOSSES:
            return False  # a loss: the targets' own business (its input is checked in scan)
        if isinstance(call.func, ast.Attribute) and (name in _SCALARS or (name in _REDUCTIONS and not call.args
                                                                           and not call.keywords)):
            return False
        if qual in ("builtins.len", "builtins.int", "builtins.isinstance"):
            return False
        if qual == "builtins.next" and call.args:
            return _each(self.taint(call.args[0], frame, depth + 1))
        if qual == "builtins.iter" and call.args:
            return self.taint(call.args[0], frame, depth + 1)
        if qual == "builtins.enumerate" and call.args:
            return _Elements((False, _each(self.taint(call.args[0], frame, depth + 1))))
        if qual == "builtins.zip":
            return _Elements(tuple(_each(self.taint(a, frame, depth + 1)) for a in call.args))
        targets = self.fl.callees(call.func)
        if targets:
            out: Taint = False
            for func in targets:
                out = _combine(out, self._returns_taint(func, self._bind(func, call, frame, depth), depth + 1))
            return out
        receiver = [call.func.value] if isinstance(call.func, ast.Attribute) else []
        return any(self.tainted(a, frame, depth + 1) for a in [*receiver, *call.args, *(k.value for k in call.keywords)])

    def _bind(self, func: FunctionNode, call: ast.Call, frame: _Frame, depth: int) -> _Frame:
        tainted = frozenset(param for param, argument in bound_arguments(func, call).items()
                            if self.tainted(argument, frame, depth + 1))
        return _Frame(func, tainted)

    def _returns_taint(self, func: FunctionNode, frame: _Frame, depth: int) -> Taint:
        key = (id(func), frame.tainted)
        if key not in self._returns:
            self._returns[key] = False  # recursion: assume clean while computing
            out: Taint = False
            for value in returns(func):
                out = _combine(out, self.taint(value, frame, depth + 1))
            self._returns[key] = out
        return self._returns[key]

    # -------------------------------------------------------------------------------------------- sinks
    def scan(self, frame: _Frame, depth: int) -> None:
        """Look for sinks in one function with the given parameters tainted, and in what it calls with taint."""
        key = (id(frame.func), frame.tainted)
        if depth > _MAX_DEPTH or key in self._scanned:
            return
        self._scanned.add(key)
        p = self.p
        nodes = own_nodes(frame.func) if frame.func is not None else list(ast.walk(p.tree))
        for node in nodes:
            if isinstance(node, ast.Call):
                self._scan_call(node, frame, depth)
            elif isinstance(node, ast.Assign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(self._shared(t, frame) for t in targets) and self.tainted(node.value, frame):
                    self.found.append((node, "stores data computed from the targets where the model can read it "
                                             "later: the model would see the tokens it is asked to predict"))

    def _scan_call(self, call: ast.Call, frame: _Frame, depth: int) -> None:
        name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
        if name in LOSSES and call.args and self.tainted(call.args[0], frame):
            self.found.append((call, f"the logits given to {name}() are mixed with the targets: the loss is computed "
                                     "on predictions that saw the answers"))
        receiver = call.func.value if isinstance(call.func, ast.Attribute) else \
            call.args[0] if name == "setattr" and call.args else None
        stores = name in _IN_PLACE or name in ("register_buffer", "register_parameter", "setattr")
        if stores and receiver is not None and self._outlives(receiver, frame) and \
                any(self.tainted(a, frame) for a in [*call.args, *(k.value for k in call.keywords)] if a is not receiver):
            self.found.append((call, "stores data computed from the targets where the model can read it later: the "
                                     "model would see the tokens it is asked to predict"))
        for func in self.fl.callees(call.func):
            inner = self._bind(func, call, frame, depth)
            if not inner.tainted:
                continue
            entry = id(func) in self._model and id(self.p.enclosing(call, DEFINITIONS)) not in self._model
            if entry and _any(self._returns_taint(func, inner, depth + 1)):  # the model called from outside
                self.found.append((call, f"the model is called with data computed from the targets "
                                         f"({', '.join(sorted(inner.tainted))}) and its output depends on it: the "
                                         "logits would see the tokens they predict"))
            self.scan(inner, depth + 1)

    def _shared(self, target: ast.AST, frame: _Frame) -> bool:
        """A store target that outlives the call: a global name, or an attribute or item of such an object."""
        if isinstance(target, ast.Name):
            return frame.func is not None and target.id in self.p.globals.get(frame.func, set())
        if isinstance(target, ast.Attribute | ast.Subscript):
            return self._outlives(target.value, frame)
        return False

    def _outlives(self, obj: ast.AST, frame: _Frame) -> bool:
        """An object the call does not own: self, the model or anything handed in, a module-level or enclosing
        function's name (and whatever hangs off one)."""
        while isinstance(obj, ast.Attribute | ast.Subscript):
            obj = obj.value
        if not isinstance(obj, ast.Name):
            return False
        p = self.p
        scope = p.defining_scope(obj)
        if scope is None or scope is p.tree or obj.id == "self" or scope is not frame.func:
            return True
        return any(isinstance(d, ast.arg) for d in reaching(p, obj))


def _path(p: Program, target: ast.AST, taint: Taint) -> Taint:
    """The part of an unpacked value a target gets: `x, (y, z) = value` -> the taint at its position."""
    indexes = []
    node = target
    while isinstance(p.parents.get(node), ast.Tuple | ast.List):
        parent = p.parents[node]
        indexes.append(parent.elts.index(node))
        node = parent
    for index in reversed(indexes):
        taint = _element(taint, index)
    return taint
