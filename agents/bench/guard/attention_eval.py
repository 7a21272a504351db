"""Attention evaluated on a few positions: which (query, key) pairs carry weight, computed from train.py's own code.

A rule that looks for the words `mask` or `tril` passes a padding mask that hides nothing and a triangle that
hides the past instead of the future. Here the expressions that build attention weights, masks and mask
functions are evaluated with numpy on T = 6 positions: pairwise scores (`q @ k.transpose(-2, -1)`,
`matmul(q, k.mT)`, an einsum over two position indices) become random numbers; masks are built by the code's
own tril/triu/arange/comparisons/where/masked_fill; softmax, sigmoid and exp are applied; names are followed to
the assignments that reach them, train.py helpers (functions, lambdas, callable objects) through their arguments
and returns, `self.<name>` through what is assigned or registered under that name. A value the evaluator cannot
know (an unknown call, the batch's data) makes the answer unknown, and the caller keeps its own checks; an
unknown number (a size, a scale) is taken as T, a positive size.

`Evaluator.weights_leak(node)` answers for an attention product `A @ v`; `mask_leak(node, kind)` for a mask given
to an attention call; `mask_function_leak(func)` for a flex-attention mask function.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.bench.guard.flow import (
    DEFINITIONS,
    FunctionNode,
    bound_arguments,
    definition_value,
    flow,
    reaching,
    returns,
)
from agents.bench.guard.program import Program

T = 6  # positions evaluated
MASKED = -1e4  # an additive mask value at or below this hides the position (-inf, -1e9, finfo.min)
_MAX_STEPS = 4000
_MAX_RUNS = 12


class Unknown(Exception):
    """The value cannot be computed here."""


class _Opaque:
    """An unknown tensor or number (a parameter, the batch, a size): T where a number is needed."""

    def __repr__(self) -> str:
        return "<opaque>"


OPAQUE = _Opaque()


@dataclass(frozen=True)
class _Ref:
    kind: str  # "module" (a dotted name), "function" (train.py), "builtin"
    name: str = ""
    func: Any = None


@dataclass
class Frame:
    """Where an expression is evaluated: the function it is in, and what its parameters were bound to (an
    argument expression with the caller's frame, or a value)."""

    func: ast.AST | None
    bound: dict[str, tuple[ast.AST, Frame]] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)


_ANY_TENSOR_ATTRS = frozenset({"shape", "device", "dtype", "ndim", "is_cuda"})


class Evaluator:
    """Evaluates expressions of one train.py (see the module docstring); each question starts afresh."""

    def __init__(self, p: Program):
        self.p = p
        self.fl = flow(p)
        self.decided: set[int] = set()  # ids of the nodes some determinate evaluation went through

    # ------------------------------------------------------------------------------------------ questions
    def weights_leak(self, weights: ast.AST) -> bool | None:
        """True if the attention weights built by `weights` put weight on a later key (for some path through the
        code), False if on none, None if unknown or not made from pairwise scores."""
        def judge(value: Any, saw_scores: bool) -> bool | None:
            if not saw_scores:
                return None
            return _upper_nonzero(value)
        if not self._may_hold_scores(weights):
            return None
        return self._decide(weights, judge)

    def _may_hold_scores(self, start: ast.AST, limit: int = 3000) -> bool:
        """Whether pairwise scores can be anywhere in what the expression is computed from (names, helpers,
        stored attributes, followed without order): the cheap test before an evaluation."""
        by_name = self.fl.by_name
        queue, seen = [start], set()
        while queue and len(seen) < limit:
            node = queue.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if _is_scores(node):
                return True
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                for binding, _scope in by_name.get(node.id, []):
                    kind, value = definition_value(self.p, binding)
                    if value is not None:
                        queue.append(value)
                    elif isinstance(binding, ast.FunctionDef):
                        queue.append(binding)
            elif isinstance(node, ast.Attribute) and _is_self(node.value):
                queue += self.fl.attribute_values.get(node.attr, [])
            elif isinstance(node, ast.Call):
                queue += self.fl.callees(node.func)
            queue += list(ast.iter_child_nodes(node))
        return len(seen) >= limit

    def mask_leak(self, mask: ast.AST, *, true_hides: bool = False) -> bool | None:
        """For a mask handed to an attention call: a bool mask's True lets the position attend (scaled_dot_product
        _attention) or hides it (`true_hides`: nn.MultiheadAttention, nn.Transformer); a float mask is added to the
        scores."""
        def judge(value: Any, saw_scores: bool) -> bool | None:
            if not isinstance(value, np.ndarray) or value.ndim < 2 or value.shape[-2:] != (T, T):
                return None
            upper = value[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]]
            if value.dtype == bool:
                return bool((~upper if true_hides else upper).any())
            return bool((np.nan_to_num(upper, nan=0.0) > MASKED).any())
        return self._decide(mask, judge)

    def mask_function_leak(self, func: FunctionNode, q: str, kv: str) -> bool | None:
        """A flex-attention mask function over (…, q_idx, kv_idx): True where a query may see a later key."""
        positions = np.arange(T)
        values = {q: positions[:, None], kv: positions[None, :]}

        def run() -> Any:
            frame = Frame(func, values={name: values.get(name, 0) for name in _params(func)})
            body = returns(func)
            if len(body) != 1:
                raise Unknown("one return expected")
            return self._eval(body[0], frame)

        return self._runs(run, lambda value, _saw: None if not isinstance(value, np.ndarray) else
                          bool(np.broadcast_to(value, (T, T))[np.triu_indices(T, 1)].astype(bool).any()))

    # ------------------------------------------------------------------------------------------ running
    def _decide(self, node: ast.AST, judge) -> bool | None:
        """Evaluate `node` where it stands; when that needs its function's arguments, at each call site."""
        func = self.p.enclosing(node, DEFINITIONS)
        frames = [Frame(func)]
        if func is not None:
            for call in self.fl.call_sites(func)[:6]:
                caller = Frame(self.p.enclosing(call, DEFINITIONS))
                frames.append(Frame(func, {k: (v, caller) for k, v in bound_arguments(func, call).items()}))
        verdicts = []
        for frame in frames:
            verdict = self._runs(lambda frame=frame: self._eval(node, frame), judge)
            if verdict:
                return True
            verdicts.append(verdict)
        return False if False in verdicts else None

    def _runs(self, compute, judge) -> bool | None:
        """Run `compute` once per choice at the code's branch points (a name with several reaching assignments,
        a condition it cannot evaluate); True if any run leaks, False if some run decided and none leaked."""
        self._choices: dict[int, int] = {}
        self._branches: dict[int, int] = {}
        verdicts: list[bool | None] = []
        plans = [{}]
        done = 0
        while plans and done < _MAX_RUNS:
            self._choices = plans.pop(0)
            self._steps, self._saw_scores, self._visited = 0, False, set()
            seen_before = dict(self._branches)
            try:
                value = compute()
            except (Unknown, ArithmeticError, ValueError, TypeError, IndexError, KeyError, RecursionError):
                verdicts.append(None)
            else:
                verdicts.append(judge(value, self._saw_scores))
            if verdicts[-1] is not None:
                self.decided |= self._visited
            done += 1
            if verdicts[-1]:
                return True
            for branch, count in self._branches.items():
                if branch not in seen_before:
                    plans += [{**self._choices, branch: i} for i in range(1, min(count, 4))]
        return False if False in verdicts else None

    # ------------------------------------------------------------------------------------------ evaluation
    _choices: dict[int, int] = {}
    _branches: dict[int, int] = {}
    _steps = 0
    _saw_scores = False
    _visited: set[int] = set()

    def _choose(self, node: ast.AST, options: int) -> int:
        self._branches[id(node)] = max(self._branches.get(id(node), 0), options)
        return self._choices.get(id(node), 0) % options

    def _eval(self, node: ast.AST, frame: Frame) -> Any:
        self._steps += 1
        self._visited.add(id(node))
        if self._steps > _MAX_STEPS:
            raise Unknown("too many steps")
        if _is_scores(node):
            self._saw_scores = True
            return np.random.default_rng(self._steps).standard_normal((T, T))
        method = getattr(self, f"_eval_{type(node).__name__}", None)
        if method is None:
            raise Unknown(type(node).__name__)
        return method(node, frame)

    def _eval_Constant(self, node: ast.Constant, frame: Frame) -> Any:
        if node.value is Ellipsis or isinstance(node.value, bool | int | float | str) or node.value is None:
            return node.value
        raise Unknown("constant")

    def _eval_Tuple(self, node: ast.Tuple, frame: Frame) -> Any:
        return tuple(self._eval(e, frame) for e in node.elts)

    _eval_List = _eval_Tuple

    def _eval_Slice(self, node: ast.Slice, frame: Frame) -> Any:
        parts = [None if part is None else _as_int(self._eval(part, frame)) for part in (node.lower, node.upper,
                                                                                         node.step)]
        return slice(*parts)

    def _eval_Name(self, node: ast.Name, frame: Frame) -> Any:
        if node.id in frame.values and self.p.enclosing(node, DEFINITIONS) is frame.func:
            return frame.values[node.id]
        if node.id in frame.bound and self.p.enclosing(node, DEFINITIONS) is frame.func:
            expr, caller = frame.bound[node.id]
            return self._eval(expr, caller)
        definitions = reaching(self.p, node)
        if not definitions:
            qual = self.p.resolve(node)
            if qual is not None:
                return _module_value(qual)
            raise Unknown(node.id)
        chosen = definitions[self._choose(node, len(definitions))]
        if isinstance(chosen, ast.Import | ast.ImportFrom):
            qual = self.p.resolve(node)
            if qual is None:
                raise Unknown("import")
            return _module_value(qual)
        return self._definition(chosen, frame if self._same_function(chosen, frame) else self._frame_of(chosen))

    def _same_function(self, definition: ast.AST, frame: Frame) -> bool:
        return self.p.enclosing(definition, DEFINITIONS) is frame.func

    def _frame_of(self, node: ast.AST) -> Frame:
        return Frame(self.p.enclosing(node, DEFINITIONS))

    def _definition(self, definition: ast.AST, frame: Frame) -> Any:
        p = self.p
        if isinstance(definition, ast.FunctionDef | ast.AsyncFunctionDef):
            return _Ref("function", definition.name, definition)
        if isinstance(definition, ast.ClassDef):
            return _Ref("class", definition.name, definition)
        if isinstance(definition, ast.Import | ast.ImportFrom):
            raise Unknown("import")
        kind, value = definition_value(p, definition)
        if kind == "param":
            return OPAQUE
        if kind == "assign":
            if isinstance(value, ast.Lambda):
                return _Ref("function", "<lambda>", value)
            return self._eval(value, frame)
        if kind == "augassign":
            before = reaching(p, definition)
            prior = self._definition(before[0], frame) if before else OPAQUE
            return _binary(value.op, prior, self._eval(value.value, frame))
        if kind == "unpack":
            whole = self._eval(value, frame)
            index = _unpack_index(p, definition)
            if isinstance(whole, tuple | list) and index is not None and index < len(whole):
                return whole[index]
            if whole is OPAQUE:
                return OPAQUE
            raise Unknown("unpack")
        return OPAQUE

    def _eval_Attribute(self, node: ast.Attribute, frame: Frame) -> Any:
        qual = self.p.resolve(node)
        if _is_module_name(qual):
            return _module_value(qual)
        if node.attr in _ANY_TENSOR_ATTRS:  # what any tensor answers: no need to compute it
            return (OPAQUE,) * 4 if node.attr == "shape" else OPAQUE
        base = self._eval(node.value, frame) if not _is_self(node.value) else OPAQUE
        if isinstance(base, np.ndarray):
            if node.attr in ("T", "mT"):
                return np.swapaxes(base, -1, -2)
            if node.attr == "shape":
                return base.shape
            if node.attr in ("data", "real"):
                return base
            if node.attr in ("device", "dtype"):
                return OPAQUE
            return _Ref("method", node.attr, base)
        if isinstance(base, _Ref) and base.kind == "finfo":
            return -3.4e38 if node.attr == "min" else 3.4e38
        if base is OPAQUE:
            values = self.fl.attribute_values.get(node.attr, [])
            if values and _is_self(node.value):
                value = values[self._choose(node, len(values))]
                return self._eval_stored(value)
            if node.attr == "shape":
                return (OPAQUE,) * 4
            return OPAQUE
        raise Unknown("attribute")

    def _eval_stored(self, value: ast.AST) -> Any:
        if isinstance(value, ast.Lambda):
            return _Ref("function", "<lambda>", value)
        return self._eval(value, self._frame_of(value))

    def _eval_Subscript(self, node: ast.Subscript, frame: Frame) -> Any:
        base = self._eval(node.value, frame)
        index = self._eval(node.slice, frame)
        if base is OPAQUE:
            return OPAQUE
        if isinstance(index, tuple):
            index = tuple(_as_index(i) for i in index)
        else:
            index = _as_index(index)
        if isinstance(base, np.ndarray | tuple | list):
            return base[index]
        raise Unknown("subscript")

    def _eval_UnaryOp(self, node: ast.UnaryOp, frame: Frame) -> Any:
        value = self._eval(node.operand, frame)
        if value is OPAQUE:
            return OPAQUE
        if isinstance(node.op, ast.USub):
            return -value
        if isinstance(node.op, ast.UAdd):
            return value
        if isinstance(node.op, ast.Invert):
            return np.logical_not(value) if isinstance(value, np.ndarray) and value.dtype == bool else ~value
        if isinstance(node.op, ast.Not):
            if isinstance(value, np.ndarray):
                raise Unknown("not of a tensor")
            return not value
        raise Unknown("unary")

    def _eval_BinOp(self, node: ast.BinOp, frame: Frame) -> Any:
        return _binary(node.op, self._eval(node.left, frame), self._eval(node.right, frame))

    def _eval_Compare(self, node: ast.Compare, frame: Frame) -> Any:
        left = self._eval(node.left, frame)
        result: Any = True
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self._eval(right_node, frame)
            if isinstance(op, ast.Is | ast.IsNot):
                same = (left is right) or (left is None and right is None)
                if left is OPAQUE or right is OPAQUE:
                    raise Unknown("identity of an unknown")
                step: Any = same if isinstance(op, ast.Is) else not same
            elif left is OPAQUE or right is OPAQUE:
                step = OPAQUE  # a condition on an unknown: unknown (a mask made of it is unknown)
            else:
                step = _compare(op, _num(left), _num(right))
            result = step if result is True or step is OPAQUE else OPAQUE if result is OPAQUE else \
                np.logical_and(result, step)
            left = right
        return result

    def _eval_IfExp(self, node: ast.IfExp, frame: Frame) -> Any:
        try:
            test = self._eval(node.test, frame)
        except Unknown:
            test = OPAQUE
        if isinstance(test, bool | int | float) and not isinstance(test, np.ndarray):
            return self._eval(node.body if test else node.orelse, frame)
        return self._eval(node.body if self._choose(node, 2) == 0 else node.orelse, frame)

    def _eval_Lambda(self, node: ast.Lambda, frame: Frame) -> Any:
        return _Ref("function", "<lambda>", node)

    def _eval_Call(self, node: ast.Call, frame: Frame) -> Any:
        targets = self.fl.callees(node.func)  # a train.py function, lambda, stored function or callable object
        if targets:
            return self._inline(targets[self._choose(node, len(targets))], node, frame)
        if isinstance(node.func, ast.Attribute) and node.func.attr == "size":  # any tensor's size: T per axis
            return OPAQUE if node.args or node.keywords else (OPAQUE,) * 4
        if isinstance(node.func, ast.Attribute) and not _is_module_name(self.p.resolve(node.func)):  # a method
            base = self._eval(node.func.value, frame) if not _is_self(node.func.value) else OPAQUE
            func = _Ref("method", node.func.attr, base) if isinstance(base, np.ndarray) else \
                _Ref("opaque-method", node.func.attr) if base is OPAQUE else None
        else:
            func = self._eval(node.func, frame)
        if isinstance(func, _Ref) and func.kind == "function":
            return self._inline(func.func, node, frame)
        if not isinstance(func, _Ref) or func.kind == "class":
            raise Unknown("call")
        args = [self._eval(a, frame) for a in node.args if not isinstance(a, ast.Starred)]
        kwargs = {k.arg: self._eval(k.value, frame) for k in node.keywords if k.arg is not None}
        return _apply(func, args, kwargs)

    def _inline(self, func: FunctionNode, call: ast.Call, frame: Frame) -> Any:
        values = returns(func)
        if not values:
            raise Unknown("no return")
        inner = Frame(func, {k: (v, frame) for k, v in bound_arguments(func, call).items()})
        chosen = values[self._choose(call, len(values))]
        return self._eval(chosen, inner)


# ------------------------------------------------------------------------------------------------ values


def _module_value(qual: str) -> Any:
    if qual in ("math.inf",):
        return math.inf
    if qual == "math.pi":
        return math.pi
    if qual in ("torch.bool",):
        return _Ref("dtype", "bool")
    if qual.startswith("torch.") and any(t in qual for t in ("float", "half", "bfloat16", "double")):
        return _Ref("dtype", "float")
    if qual.startswith("torch.") and any(t in qual for t in ("int", "long")):
        return _Ref("dtype", "int")
    if qual.startswith("prepare."):
        return OPAQUE  # sizes and constants of the locked harness
    return _Ref("module", qual)


def _apply(func: _Ref, args: list, kwargs: dict) -> Any:
    name = func.name.rsplit(".", 1)[-1]
    if func.kind == "builtin" or func.name.startswith("builtins."):
        return _builtin(name, args)
    if func.kind == "module" and func.name.startswith("math."):
        return getattr(math, name)(*(_num(a) for a in args))
    if func.kind == "module" and name == "finfo":
        return _Ref("finfo")
    if func.kind == "method":
        return _tensor_function(name, [func.func, *args], kwargs)
    if func.kind == "opaque-method":
        if name == "size":
            return OPAQUE if args else (OPAQUE,) * 4
        if name in ("new_ones", "new_zeros", "new_full", "new_empty"):
            return _tensor_function(name.removeprefix("new_"), args, kwargs)
        return OPAQUE
    if func.kind == "module" and (func.name.startswith("torch.") or func.name.startswith("numpy.")):
        return _tensor_function(name, args, kwargs)
    raise Unknown(func.name)


def _builtin(name: str, args: list) -> Any:
    if name == "float" and args and isinstance(args[0], str):
        return float(args[0])
    if name in ("float", "int", "abs", "bool") and len(args) == 1:
        value = _num(args[0])
        return np.abs(value) if name == "abs" else {"float": float, "int": int, "bool": bool}[name](value)
    if name in ("min", "max") and len(args) >= 2:
        numbers = [_num(a) for a in args]
        return min(numbers) if name == "min" else max(numbers)
    raise Unknown(name)


def _tensor_function(name: str, args: list, kwargs: dict) -> Any:
    """torch functions and tensor methods (`args[0]` is the tensor for a method) on numpy arrays."""
    dtype = kwargs.get("dtype")
    if name in ("ones", "zeros", "empty", "full", "rand", "randn"):
        if name == "full":
            sizes, fill = _sizes(args[:-1] or [kwargs.get("size")]), _num(args[-1] if args else kwargs["fill_value"])
        else:
            sizes, fill = _sizes(args or [kwargs.get("size")]), (1.0 if name == "ones" else 0.0)
        if name in ("empty", "rand", "randn"):
            raise Unknown("uninitialised or random values")
        return _cast(np.full(sizes, fill, dtype=float), dtype)
    if name in ("ones_like", "zeros_like", "full_like", "empty_like"):
        base = _array(args[0])
        fill = 1.0 if name == "ones_like" else 0.0 if name == "zeros_like" else _num(args[1]) \
            if name == "full_like" else None
        if fill is None:
            raise Unknown("empty_like")
        return _cast(np.full(base.shape, fill, dtype=float), dtype or (_Ref("dtype", "bool") if base.dtype == bool
                                                                        else None))
    if name == "arange":
        bounds = [_as_int(a) for a in args]
        return np.arange(*bounds)
    if name == "eye":
        return _cast(np.eye(_as_int(args[0])), dtype)
    if name in ("tril", "triu", "tril_", "triu_"):
        base = _array(args[0])
        diagonal = _as_int(args[1]) if len(args) > 1 else _as_int(kwargs.get("diagonal", 0))
        op = np.tril if name.startswith("tril") else np.triu
        return op(base, diagonal)
    if name in ("where",) and len(args) == 3:
        return np.where(_bool(args[0]), _num(args[1]), _num(args[2]))
    if name in ("masked_fill", "masked_fill_"):
        base, mask, value = _array(args[0]), _bool(args[1]), _num(args[2] if len(args) > 2 else kwargs["value"])
        return np.where(mask, value, base)
    if name in ("logical_not", "bitwise_not"):
        return np.logical_not(_bool(args[0]))
    if name in ("logical_and", "logical_or", "logical_xor", "bitwise_and", "bitwise_or"):
        op = {"and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor}[name.rsplit("_", 1)[1]]
        return op(_bool(args[0]), _bool(args[1]))
    if name in ("abs", "exp", "sigmoid", "tanh", "relu", "sqrt", "rsqrt", "neg"):
        value = _num(args[0])
        return {"abs": np.abs, "exp": np.exp, "tanh": np.tanh, "sqrt": np.sqrt, "neg": np.negative,
                "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "relu": lambda v: np.maximum(v, 0),
                "rsqrt": lambda v: 1 / np.sqrt(v)}[name](value)
    if name in ("softmax", "log_softmax"):
        axis = _as_int(args[1] if len(args) > 1 else kwargs.get("dim", -1))
        value = _array(args[0]).astype(float)
        with np.errstate(invalid="ignore", over="ignore"):
            shifted = value - np.max(value, axis=axis, keepdims=True)
            exp = np.exp(shifted)
            out = exp / exp.sum(axis=axis, keepdims=True)
        return np.log(out) if name == "log_softmax" else out
    if name in ("maximum", "minimum", "clamp", "clamp_min", "clamp_max", "clip"):
        if name in ("maximum", "minimum"):
            return (np.maximum if name == "maximum" else np.minimum)(_num(args[0]), _num(args[1]))
        low = kwargs.get("min", args[1] if len(args) > 1 else None)
        high = kwargs.get("max", args[2] if len(args) > 2 else None)
        if name == "clamp_max":
            low, high = None, low
        return np.clip(_num(args[0]), None if low is None else _num(low), None if high is None else _num(high))
    if name in ("matmul", "bmm"):
        return np.matmul(_array(args[0]), _array(args[1]))
    if name in ("outer",):
        return np.multiply.outer(_array(args[0]), _array(args[1]))
    if name in ("eq", "ne", "lt", "le", "gt", "ge"):
        op = {"eq": ast.Eq(), "ne": ast.NotEq(), "lt": ast.Lt(), "le": ast.LtE(), "gt": ast.Gt(), "ge": ast.GtE()}
        return _compare(op[name], _num(args[0]), _num(args[1]))
    if name in ("add", "sub", "mul", "div"):
        op = {"add": ast.Add(), "sub": ast.Sub(), "mul": ast.Mult(), "div": ast.Div()}[name]
        return _binary(op, args[0], args[1])
    # methods that keep the values
    if name in ("bool", "float", "half", "bfloat16", "double", "int", "long", "to", "type", "type_as"):
        base = _array(args[0])
        target = {"bool": "bool", "int": "int", "long": "int"}.get(name, "float")
        if name in ("to", "type"):
            chosen = next((a for a in [*args[1:], kwargs.get("dtype")] if isinstance(a, _Ref) and a.kind == "dtype"),
                          None)
            return _cast(base, chosen) if chosen is not None else base
        if name == "type_as":
            return base
        return _cast(base, _Ref("dtype", target))
    if name in ("contiguous", "clone", "detach", "cpu", "cuda", "requires_grad_"):
        return _array(args[0])
    if name in ("view", "reshape"):
        base = _array(args[0])
        return base.reshape(_sizes(args[1:]))
    if name in ("unsqueeze", "squeeze"):
        base = _array(args[0])
        axis = _as_int(args[1]) if len(args) > 1 else None
        if name == "unsqueeze":
            return np.expand_dims(base, axis)
        return np.squeeze(base, axis) if axis is not None else np.squeeze(base)
    if name in ("expand", "broadcast_to"):
        base = _array(args[0])
        sizes = [s if s != -1 else base.shape[i - (len(args[1:]) - base.ndim)] for i, s in
                 enumerate(_sizes(args[1:]))]
        return np.broadcast_to(base, sizes)
    if name == "expand_as":
        return np.broadcast_to(_array(args[0]), _array(args[1]).shape)
    if name == "repeat":
        return np.tile(_array(args[0]), _sizes(args[1:]))
    if name in ("transpose", "swapaxes", "swapdims"):
        return np.swapaxes(_array(args[0]), _as_int(args[1]), _as_int(args[2]))
    if name == "t":
        return np.swapaxes(_array(args[0]), -1, -2)
    if name in ("sum", "mean", "amax", "max", "cumsum"):
        base = _array(args[0])
        axis = args[1] if len(args) > 1 else kwargs.get("dim")
        axis = None if axis is None else _as_int(axis)
        keep = bool(kwargs.get("keepdim", False))
        func = {"sum": np.sum, "mean": np.mean, "amax": np.max, "max": np.max, "cumsum": np.cumsum}[name]
        return func(base, axis=axis) if name == "cumsum" else func(base, axis=axis, keepdims=keep)
    if name == "size":
        base = _array(args[0])
        return base.shape if len(args) == 1 else base.shape[_as_int(args[1])]
    if name == "isfinite":
        return np.isfinite(_num(args[0]))
    raise Unknown(name)


def _binary(op: ast.operator, left: Any, right: Any) -> Any:
    if isinstance(op, ast.MatMult):
        if left is OPAQUE or right is OPAQUE:
            raise Unknown("product with an unknown tensor")
        return np.matmul(_array(left), _array(right))
    if isinstance(left, tuple) and isinstance(right, tuple) and isinstance(op, ast.Add):
        return left + right
    if (left is OPAQUE and isinstance(right, np.ndarray)) or (right is OPAQUE and isinstance(left, np.ndarray)):
        if not isinstance(op, ast.Mult | ast.Div | ast.Pow):
            raise Unknown("an unknown tensor added to a known one")  # an unknown bias may well be a mask
    a, b = _num(left), _num(right)
    if isinstance(op, ast.BitAnd | ast.BitOr | ast.BitXor) and (_is_bool(a) or _is_bool(b)):
        fn = {ast.BitAnd: np.logical_and, ast.BitOr: np.logical_or, ast.BitXor: np.logical_xor}[type(op)]
        return fn(a, b)
    with np.errstate(all="ignore"):
        if isinstance(op, ast.Add):
            return a + b
        if isinstance(op, ast.Sub):
            return a - b
        if isinstance(op, ast.Mult):
            return a * b
        if isinstance(op, ast.Div):
            return a / b
        if isinstance(op, ast.FloorDiv):
            return a // b
        if isinstance(op, ast.Mod):
            return a % b
        if isinstance(op, ast.Pow):
            return a ** b
    raise Unknown("operator")


def _compare(op: ast.cmpop, a: Any, b: Any) -> Any:
    if isinstance(op, ast.Eq):
        return a == b
    if isinstance(op, ast.NotEq):
        return a != b
    if isinstance(op, ast.Lt):
        return a < b
    if isinstance(op, ast.LtE):
        return a <= b
    if isinstance(op, ast.Gt):
        return a > b
    if isinstance(op, ast.GtE):
        return a >= b
    raise Unknown("comparison")


def _num(value: Any) -> Any:
    if value is OPAQUE:
        return T
    if isinstance(value, np.ndarray | int | float | bool | np.number | np.bool_):
        return value
    raise Unknown("not a number")


def _array(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    raise Unknown("not a tensor")


def _bool(value: Any) -> Any:
    if value is OPAQUE:
        raise Unknown("an unknown mask")
    value = _num(value)
    return value.astype(bool) if isinstance(value, np.ndarray) else bool(value)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool | np.bool_) or (isinstance(value, np.ndarray) and value.dtype == bool)


def _cast(value: np.ndarray, dtype: Any) -> np.ndarray:
    if isinstance(dtype, _Ref) and dtype.kind == "dtype":
        return value.astype({"bool": bool, "int": np.int64, "float": float}[dtype.name])
    return value


def _as_int(value: Any) -> int:
    value = _num(value)
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise Unknown("not an int")
        value = value.item()
    return int(value)


def _as_index(value: Any) -> Any:
    if value is OPAQUE:
        return T
    if isinstance(value, slice | np.ndarray) or value is None or value is Ellipsis:
        return value
    if isinstance(value, bool | int | np.integer):
        return int(value)
    raise Unknown("index")


def _sizes(args: list) -> tuple[int, ...]:
    if len(args) == 1 and isinstance(args[0], tuple | list):
        args = list(args[0])
    return tuple(-1 if _as_int(a) == -1 else _as_int(a) for a in args)


def _upper_nonzero(value: Any) -> bool | None:
    if not isinstance(value, np.ndarray) or value.ndim < 2 or value.shape[-2:] != (T, T):
        return None
    rows, cols = np.triu_indices(T, 1)
    upper = np.nan_to_num(value[..., rows, cols].astype(float), nan=0.0)
    return bool((np.abs(upper) > 1e-9).any())


# ------------------------------------------------------------------------------------------------ the code


def _is_module_name(qual: str | None) -> bool:
    """A dotted name of a module's function or constant (`torch.tril`), not a method of a value it made."""
    return qual is not None and "()" not in qual and "[]" not in qual and not qual.startswith("builtins.")


def _is_self(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _params(func: FunctionNode) -> list[str]:
    args = func.args
    return [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]


def _unpack_index(p: Program, target: ast.AST) -> int | None:
    parent = p.parents.get(target)
    if isinstance(parent, ast.Tuple | ast.List):
        return parent.elts.index(target)
    return None


def is_transposed(node: ast.AST, *, strict: bool = False) -> bool:
    """k.transpose(-2, -1) / k.mT / k.permute(...): a batched transpose of activations (not `W.T` of a weight).
    `strict`: only a swap of the last two axes (transpose(1, 2) of a 4-D tensor swaps heads and positions)."""
    if isinstance(node, ast.Attribute) and node.attr == "mT":
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
        name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
        if name in ("transpose", "permute", "swapaxes", "swapdims"):
            base = node.func.value if isinstance(node.func, ast.Attribute) else (node.args[0] if node.args else None)
            if isinstance(base, ast.Attribute) and "weight" in base.attr:
                return False
            if not strict:
                return True
            axes = [a.value if isinstance(a, ast.Constant) else -a.operand.value
                    if isinstance(a, ast.UnaryOp) and isinstance(a.operand, ast.Constant) else None
                    for a in node.args[-2:] if not isinstance(node.func, ast.Name) or a is not node.args[0]]
            if name == "permute":
                return len(node.args) >= 2 and axes == [len(node.args) - 1, len(node.args) - 2]
            return set(axes) in ({-2, -1}, {2, 3})
    return False


def _is_scores(node: ast.AST, strict: bool = False) -> bool:
    """Pairwise position scores: q @ k.transpose(-2, -1), matmul(q, k.mT), einsum('...id,...jd->...ij', q, k)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
        return is_transposed(node.right, strict=strict)
    if isinstance(node, ast.Call):
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in ("matmul", "bmm", "baddbmm") and len(node.args) >= 2:
            return is_transposed(node.args[-1], strict=strict)
        if name == "einsum":
            return einsum_roles(node) == "scores"
    return False


def einsum_roles(call: ast.Call) -> str | None:
    """'scores' for an einsum of two inputs into pairwise (i, j) outputs, 'apply' for weights (i, j) times values
    summed over j, None otherwise."""
    if not call.args or not isinstance(call.args[0], ast.Constant) or not isinstance(call.args[0].value, str):
        return None
    spec = call.args[0].value.replace(" ", "")
    if "->" not in spec or spec.count(",") != 1:
        return None
    inputs, output = spec.split("->")
    first, second = inputs.split(",")
    first, second, output = (s.replace("...", "") for s in (first, second, output))
    if len(first) < 2 or len(second) < 2 or len(output) < 2:
        return None
    contracted = (set(first) & set(second)) - set(output)
    if first[-1] in contracted and second[-1] in contracted and output[-2] in first and output[-1] in second \
            and output[-2] not in second and output[-1] not in first:
        return "scores"
    if first[-1] in contracted and second[-1] not in contracted and first[-2] in output:
        return "apply"
    return None


def attention_products(p: Program) -> list[tuple[ast.AST, ast.AST]]:
    """(product node, weights expression) for every `weights @ values` that is not itself a scores product."""
    found = []
    for node in p.of(ast.BinOp):
        if isinstance(node.op, ast.MatMult) and not _is_scores(node, strict=True):
            found.append((node, node.left))
    for node in p.of(ast.Call):
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in ("matmul", "bmm") and len(node.args) >= 2 and not _is_scores(node, strict=True):
            found.append((node, node.args[0]))
        elif name == "einsum" and len(node.args) == 3 and einsum_roles(node) == "apply":
            found.append((node, node.args[1]))
    return found


__all__ = ["Evaluator", "Frame", "T", "attention_products", "einsum_roles", "is_transposed"]
