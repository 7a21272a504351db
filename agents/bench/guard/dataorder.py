"""`seed-or-order-only` in what train.py does with the training stream: prepare's batches, in prepare's order.

The harness varies SEED to measure noise, and the data order is part of that noise: prepare's loader shuffles
the training documents by the seed. train.py may change how a batch is used (crop it, move it, permute its
rows, which changes nothing a step sees), but not which batches train or in which order, however the code is
arranged (helpers, generators, buffers, library wrappers). Followed from every `make_dataloader` result through
names, attributes, helpers' parameters and the generators that wrap it (`Loaders`):
- a batch drawn and thrown away (`next(loader)` as a statement, or into names nothing reads), a loop that only
  draws batches (`while epoch < 1: x, y, epoch = next(loader)`), `itertools.islice` with a start, `filter` and
  the like: batches skipped;
- a generator that yields under a condition, or whose loop `continue`s: batches filtered by their content;
- the stream or a buffer of its batches shuffled, sorted, reversed, sampled or indexed at random positions:
  batches reordered;
- rows of a batch picked by their content (`x[x.std(1) > t]`): examples selected.
Drawing a few batches ahead and using them in order (gradient accumulation) stays allowed. `Loaders` is shared
with targets.py, which follows the targets of each batch.
"""

from __future__ import annotations

import ast
import threading
import weakref
from dataclasses import dataclass, field

from agents.bench.guard.flow import (
    DEFINITIONS,
    FunctionNode,
    bound_arguments,
    definition_value,
    flow,
    own_nodes,
    parameters,
    reaching,
)
from agents.bench.guard.program import LOOPS, Program

RULE = "seed-or-order-only"
_SKIPPING = frozenset({"builtins.filter", "itertools.filterfalse", "itertools.dropwhile", "itertools.takewhile",
                       "itertools.compress", "itertools.tee", "itertools.cycle"})
_REORDERING = frozenset({"builtins.sorted", "builtins.reversed", "builtins.min", "builtins.max", "random.shuffle",
                         "random.sample", "random.choice", "random.choices", "numpy.random.shuffle",
                         "numpy.random.permutation", "numpy.random.choice"})
_REORDER_METHODS = frozenset({"sort", "reverse"})
_RANDOM_INDEX = frozenset({"randperm", "randint", "permutation", "choice", "randrange", "multinomial", "shuffle",
                           "argsort", "sort", "topk"})
_ROW_PICKS = frozenset({"topk", "argsort", "sort", "nonzero", "argmax", "argmin", "where", "masked_select"})
_ORDER_KEEPING = frozenset({"builtins.iter", "builtins.enumerate", "builtins.zip"})


@dataclass
class Loaders:
    """Every expression in train.py that holds prepare's training stream (or a wrapper that yields from it), and
    the names that hold whole batches drawn from one (`batches`), by binding node."""

    p: Program
    streams: set[int] = field(default_factory=set)  # ids of binding nodes and expressions that are streams
    stream_params: set[tuple[int, str]] = field(default_factory=set)  # (function id, parameter) fed a stream
    stream_attrs: set[str] = field(default_factory=set)  # self.<attr> / obj.<attr> holding a stream
    wrappers: set[int] = field(default_factory=set)  # train.py functions that take a stream and hand one back
    problems: list[tuple[ast.AST, str]] = field(default_factory=list)

    def is_stream(self, node: ast.AST) -> bool:
        p = self.p
        if id(node) in self.streams:
            return True
        if isinstance(node, ast.Call):
            qual = p.resolve(node.func) or ""
            if qual == "prepare.make_dataloader":
                return True
            if qual in _ORDER_KEEPING | {"itertools.islice", "itertools.chain"} and node.args and \
                    any(self.is_stream(a) for a in node.args):
                return True
            return any(id(f) in self.wrappers for f in flow(p).callees(node.func)) and \
                any(self.is_stream(a) for a in [*node.args, *(k.value for k in node.keywords)])
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            for definition in reaching(p, node):
                if id(definition) in self.streams:
                    return True
                if isinstance(definition, ast.arg):
                    func = p.enclosing(definition, DEFINITIONS)
                    if (id(func), definition.arg) in self.stream_params:
                        return True
            return False
        if isinstance(node, ast.Attribute):
            return node.attr in self.stream_attrs
        return False


_LOADERS: weakref.WeakKeyDictionary[Program, Loaders] = weakref.WeakKeyDictionary()
_LOADERS_LOCK = threading.Lock()


def find_loaders(p: Program) -> Loaders:
    """The streams of this parse (found once)."""
    with _LOADERS_LOCK:
        if p not in _LOADERS:
            _LOADERS[p] = _find_loaders(p)
        return _LOADERS[p]


def _find_loaders(p: Program) -> Loaders:
    """The streams, found to a fixed point: names bound to a stream, parameters fed one, generators over one."""
    loaders = Loaders(p)
    fl = flow(p)
    for _ in range(6):
        before = (len(loaders.streams), len(loaders.stream_params), len(loaders.stream_attrs), len(loaders.wrappers))
        for _name, node, _scope in p.bindings:
            kind, value = definition_value(p, node)
            if kind == "assign" and value is not None and loaders.is_stream(value):
                loaders.streams.add(id(node))
        for node in p.of(ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Attribute) and loaders.is_stream(node.value):
                    loaders.stream_attrs.add(target.attr)
        for call in p.of(ast.Call):
            streamed = [a for a in [*call.args, *(k.value for k in call.keywords)] if loaders.is_stream(a)]
            if not streamed:
                continue
            for func in fl.callees(call.func):
                for param, argument in bound_arguments(func, call).items():
                    if loaders.is_stream(argument):
                        loaders.stream_params.add((id(func), param))
                if _hands_back_a_stream(p, func, loaders):
                    loaders.wrappers.add(id(func))
        if before == (len(loaders.streams), len(loaders.stream_params), len(loaders.stream_attrs),
                      len(loaders.wrappers)):
            break
    return loaders


def _hands_back_a_stream(p: Program, func: FunctionNode, loaders: Loaders) -> bool:
    if isinstance(func, ast.Lambda):
        return loaders.is_stream(func.body)
    nodes = own_nodes(func)
    if any(isinstance(n, ast.Yield | ast.YieldFrom) for n in nodes):
        return True  # a generator fed a stream is a stream
    return any(isinstance(n, ast.Return) and n.value is not None and loaders.is_stream(n.value) for n in nodes)


def check(p: Program) -> None:
    loaders = find_loaders(p)
    if not (loaders.streams or loaders.stream_params or loaders.stream_attrs):
        return
    for node, why in _stream_problems(p, loaders):
        p.hit(RULE, node, why)


def _stream_problems(p: Program, loaders: Loaders) -> list[tuple[ast.AST, str]]:
    found: list[tuple[ast.AST, str]] = []
    for call in p.of(ast.Call):
        qual = p.resolve(call.func) or ""
        args = [*call.args, *(k.value for k in call.keywords)]
        if qual == "builtins.next" and call.args and loaders.is_stream(call.args[0]):
            found += _drawn_batch(p, call, loaders)
        elif any(loaders.is_stream(a) for a in args):
            if qual in _SKIPPING:
                found.append((call, f"{qual.removeprefix('builtins.')}() over the training stream skips or repeats "
                                    "batches: train.py trains on prepare's batches, each once, in prepare's order"))
            elif qual in _REORDERING or qual in ("builtins.list", "builtins.tuple"):
                found.append((call, f"{qual.removeprefix('builtins.')}() of the training stream reorders or "
                                    "buffers it whole: the data order is prepare's (seeded by SEED)"))
            elif qual == "itertools.islice" and len(call.args) >= 3 and not _is_none_or_zero(call.args[1]):
                found.append((call, "islice() with a start skips the first batches of the training stream"))
            elif qual == "builtins.zip" and sum(loaders.is_stream(a) for a in call.args) > 1:
                found.append((call, "zip() of the training stream with itself draws two batches per step and "
                                    "uses them out of order"))
    for func_id, param in loaders.stream_params:
        func = next((f for f in p.of(ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda) if id(f) == func_id), None)
        if func is not None and param in parameters(func):
            found += _wrapper_problems(p, func, param, loaders)
    for node in p.of(ast.For):
        if loaders.is_stream(node.iter):
            found += _loop_problems(p, node, node.body, "a loop over the training stream")
    for node in p.of(ast.comprehension):
        if loaders.is_stream(node.iter) and node.ifs:
            found.append((node.iter, "a comprehension over the training stream with a condition filters batches"))
    found += _buffer_problems(p, loaders)
    found += _row_picks(p, loaders)
    return found


def _is_none_or_zero(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in (None, 0)


def _drawn_batch(p: Program, call: ast.Call, loaders: Loaders) -> list[tuple[ast.AST, str]]:
    """A batch drawn with next(): it must be used, and not drawn by a loop that does nothing else."""
    parent = p.parents.get(call)
    if isinstance(parent, ast.Expr):
        return [(call, "draws a batch from the training stream and throws it away: batches skipped")]
    if isinstance(parent, ast.Assign):
        names = [n for t in parent.targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        # thrown away next to batches that are used (a train.py that reads no batch at all trains on none)
        if names and all(n.id.startswith("_") or not _read_later(p, n) for n in names) and \
                _some_batch_is_read(p, loaders):
            return [(call, "draws a batch from the training stream into names nothing reads: batches skipped")]
        loop = p.enclosing(call, (ast.For, ast.While))
        if loop is not None and p.enclosing(loop, DEFINITIONS) is p.enclosing(call, DEFINITIONS) and \
                _only_draws(p, loop, loaders):
            return [(loop, "a loop that only draws batches from the training stream (and checks them) skips "
                           "them: train.py trains on prepare's batches, each once, in prepare's order")]
    return []


def _some_batch_is_read(p: Program, loaders: Loaders) -> bool:
    for call in p.of(ast.Call):
        if (p.resolve(call.func) or "") == "builtins.next" and call.args and loaders.is_stream(call.args[0]):
            parent = p.parents.get(call)
            if not isinstance(parent, ast.Assign | ast.Expr):
                return True  # used in place: returned, passed on, unpacked in a comprehension
            if isinstance(parent, ast.Assign) and any(
                    not n.id.startswith("_") and _read_later(p, n)
                    for t in parent.targets for n in ast.walk(t) if isinstance(n, ast.Name)):
                return True
    return False


def _read_later(p: Program, target: ast.Name) -> bool:
    scope = p.scope_of(target)
    return any(isinstance(n, ast.Name) and n.id == target.id and isinstance(n.ctx, ast.Load)
               for n in ast.walk(scope or p.tree) if n is not target)


def _only_draws(p: Program, loop: ast.AST, loaders: Loaders) -> bool:
    """A loop whose body draws batches and does nothing with them but bookkeeping (no call that uses them)."""
    draws = False
    for statement in loop.body:
        if isinstance(statement, ast.Assign | ast.AugAssign | ast.Expr):
            calls = [n for n in ast.walk(statement) if isinstance(n, ast.Call)]
            for c in calls:
                if (p.resolve(c.func) or "") == "builtins.next" and c.args and loaders.is_stream(c.args[0]):
                    draws = True
                elif (p.resolve(c.func) or "") not in ("builtins.len", "builtins.int", "builtins.float"):
                    return False
        elif not isinstance(statement, ast.Pass):
            return False
    return draws


def _loop_problems(p: Program, loop: ast.AST, body: list, what: str) -> list[tuple[ast.AST, str]]:
    found = []
    for node in ast.walk(ast.Module(body=body, type_ignores=[])):
        if isinstance(node, ast.Continue) and p.enclosing(node, LOOPS) is loop:
            found.append((node, f"{what} skips batches (continue)"))
        if isinstance(node, ast.Yield | ast.YieldFrom) and p.enclosing(node, LOOPS) is loop and \
                _under_condition(p, node, loop):
            found.append((node, f"{what} yields only some batches (under a condition): batches filtered"))
    return found


def _under_condition(p: Program, node: ast.AST, loop: ast.AST) -> bool:
    parent = p.parents.get(node)
    while parent is not None and parent is not loop:
        if isinstance(parent, ast.If | ast.IfExp):
            return True
        parent = p.parents.get(parent)
    return False


def _wrapper_problems(p: Program, func: FunctionNode, param: str, loaders: Loaders) -> list[tuple[ast.AST, str]]:
    """A helper fed the stream: its loops over it may not skip or filter (next() and buffers are seen above)."""
    found = []
    for node in own_nodes(func):
        if isinstance(node, ast.For) and isinstance(node.iter, ast.Name) and node.iter.id == param:
            found += _loop_problems(p, node, node.body, f"{getattr(func, 'name', 'a helper')}()'s loop over the "
                                                        "training stream")
    return found


def _batch_holders(p: Program, loaders: Loaders) -> set[int]:
    """Binding nodes of names holding several batches drawn from the stream (a buffer)."""
    holders: set[int] = set()
    for _name, node, _ in p.bindings:
        kind, value = definition_value(p, node)
        if kind == "assign" and isinstance(value, ast.ListComp | ast.List | ast.GeneratorExp) and any(
                isinstance(n, ast.Call) and (p.resolve(n.func) or "") == "builtins.next" and n.args
                and loaders.is_stream(n.args[0]) for n in ast.walk(value)):
            holders.add(id(node))
    for call in p.of(ast.Call):
        if isinstance(call.func, ast.Attribute) and call.func.attr in ("append", "extend", "insert") and any(
                isinstance(n, ast.Call) and (p.resolve(n.func) or "") == "builtins.next" and n.args
                and loaders.is_stream(n.args[0]) for a in call.args for n in ast.walk(a)) and \
                isinstance(call.func.value, ast.Name):
            holders |= {id(d) for d in reaching(p, call.func.value)}
    return holders


def _buffer_problems(p: Program, loaders: Loaders) -> list[tuple[ast.AST, str]]:
    holders = _batch_holders(p, loaders)
    if not holders:
        return []

    def is_buffer(node: ast.AST) -> bool:
        return isinstance(node, ast.Name) and any(id(d) in holders for d in reaching(p, node))

    found = []
    for call in p.of(ast.Call):
        qual = p.resolve(call.func) or ""
        if qual in _REORDERING | _SKIPPING and any(is_buffer(a) for a in call.args):
            found.append((call, f"{qual.removeprefix('builtins.')}() over a buffer of training batches reorders or "
                                "picks them: the data order is prepare's (seeded by SEED)"))
        elif isinstance(call.func, ast.Attribute) and call.func.attr in _REORDER_METHODS and is_buffer(call.func.value):
            found.append((call, f".{call.func.attr}() of a buffer of training batches reorders them: the data order "
                                "is prepare's (seeded by SEED)"))
        elif isinstance(call.func, ast.Attribute) and call.func.attr == "pop" and is_buffer(call.func.value) and \
                call.args and _random_index(p, call.args[0]):
            found.append((call, "takes training batches from a buffer at random positions: reordered"))
    for node in p.of(ast.Subscript):
        if is_buffer(node.value) and isinstance(node.ctx, ast.Load):
            index = node.slice
            if isinstance(index, ast.Slice) and index.step is not None:
                found.append((node, "a buffer of training batches read with a step or backwards: reordered"))
            elif not isinstance(index, ast.Slice) and _random_index(p, index):
                found.append((node, "a buffer of training batches read at random positions: reordered"))
    for node in p.of(ast.comprehension):
        if is_buffer(node.iter) and node.ifs:
            found.append((node.iter, "a comprehension over a buffer of training batches with a condition filters "
                                     "them"))
    return found


def _random_index(p: Program, index: ast.AST) -> bool:
    """An index computed from a random draw or an ordering (followed through local names)."""
    for n in _expanded(p, index):
        if isinstance(n, ast.Call):
            name = n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "")
            if name in _RANDOM_INDEX or (p.resolve(n.func) or "").startswith(("random.", "numpy.random.")):
                return True
    return False


def _expanded(p: Program, node: ast.AST, depth: int = 0) -> list[ast.AST]:
    nodes = list(ast.walk(node))
    if depth < 3:
        for n in list(nodes):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
                for definition in reaching(p, n):
                    kind, value = definition_value(p, definition)
                    if value is not None and kind in ("assign", "unpack"):
                        nodes += _expanded(p, value, depth + 1)
    return nodes


def _row_picks(p: Program, loaders: Loaders) -> list[tuple[ast.AST, str]]:
    """`x[keep]` with keep computed from the batch's content: examples chosen by what they contain."""
    batch_names = batch_bindings(p, loaders)
    found = []
    fl = flow(p)
    bound_batch_params: set[tuple[int, str]] = set()
    for call in p.of(ast.Call):
        for func in fl.callees(call.func):
            for param, argument in bound_arguments(func, call).items():
                if isinstance(argument, ast.Name) and any(id(d) in batch_names for d in reaching(p, argument)):
                    bound_batch_params.add((id(func), param))

    def holds_batch(node: ast.AST) -> bool:
        if not isinstance(node, ast.Name):
            return False
        for d in reaching(p, node):
            if id(d) in batch_names:
                return True
            if isinstance(d, ast.arg) and (id(p.enclosing(d, DEFINITIONS)), d.arg) in bound_batch_params:
                return True
        return False

    for node in p.of(ast.Subscript):
        if not (isinstance(node.ctx, ast.Load) and holds_batch(node.value)):
            continue
        first = node.slice.elts[0] if isinstance(node.slice, ast.Tuple) and node.slice.elts else node.slice
        if isinstance(first, ast.Slice | ast.Constant) or first is None:
            continue
        picked = _expanded(p, first)
        if any(isinstance(n, ast.Compare) for n in picked) or any(
                isinstance(n, ast.Call) and (n.func.attr if isinstance(n.func, ast.Attribute) else
                                             getattr(n.func, "id", "")) in _ROW_PICKS for n in picked):
            found.append((node, f"{ast.unparse(node)} picks rows of a training batch by their content: examples "
                                "selected, not prepare's batch"))
    return found


def batch_bindings(p: Program, loaders: Loaders) -> dict[int, int | None]:
    """Binding node id -> which part of a batch it holds (0 inputs, 1 targets, 2 epoch; None: the whole batch),
    for names bound from `next(stream)`, a loop over a stream, or a loop over a buffer of batches."""
    holders = _batch_holders(p, loaders)
    parts: dict[int, int | None] = {}

    def bind(target: ast.AST, part: int | None) -> None:
        if isinstance(target, ast.Name):
            parts[id(target)] = part
        elif isinstance(target, ast.Tuple | ast.List) and part is None:
            for index, element in enumerate(target.elts):
                bind(element, index)

    for node in p.of(ast.Assign):
        value = node.value
        if isinstance(value, ast.Call) and (p.resolve(value.func) or "") == "builtins.next" and value.args and \
                loaders.is_stream(value.args[0]):
            for target in node.targets:
                bind(target, None)
    for node in [*p.of(ast.For), *p.of(ast.comprehension)]:
        iterated = node.iter
        over_buffer = isinstance(iterated, ast.Name) and any(id(d) in holders for d in reaching(p, iterated))
        if loaders.is_stream(iterated) or over_buffer:
            target = node.target
            if isinstance(iterated, ast.Call) and (p.resolve(iterated.func) or "") == "builtins.enumerate" and \
                    isinstance(target, ast.Tuple) and len(target.elts) == 2:
                target = target.elts[1]
            bind(target, None)
    return parts


__all__ = ["RULE", "Loaders", "batch_bindings", "check", "find_loaders"]
