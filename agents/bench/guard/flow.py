"""How calls and values move through train.py, for the rules that follow what the code does, not its shape.

- `callees(p, func)`: the train.py functions a callee expression may run: a `def` (at any depth), a lambda bound to
  a name, a function stored on an object (`self.attend = attention`) or passed through `torch.compile`,
  `functools.partial` or a conditional, a method by its name, an instance's `__call__`;
- `call_sites(p, func)`: every call in the file that may run `func` (what the callee analysis above sees);
- `reaching(p, use)`: the assignments whose value a use of a name may see, in its own function (straight-line
  order; an assignment inside a branch the use is not in keeps the earlier ones alive);
- `bound_arguments(func, call)`: which argument expression each parameter receives at a call;
- `model_functions(p)`: the code that runs inside the model's forward pass: methods of nn.Module subclasses and
  every train.py function they may run, by any of the paths above.

All of it is static and approximate by design: a rule that needs a value it cannot find treats it as unknown.
"""

from __future__ import annotations

import ast
import threading
import weakref
from collections.abc import Iterator

from agents.bench.guard.program import Program, pairs

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
# Wrappers whose first argument is the function that really runs.
_PASS_THROUGH = frozenset({"torch.compile", "functools.partial", "functools.wraps", "functools.lru_cache",
                           "functools.cache", "torch.no_grad", "torch.inference_mode", "torch.enable_grad",
                           "torch.jit.script", "torch.jit.trace", "torch.utils.checkpoint.checkpoint",
                           "torch.func.vmap", "torch.vmap"})
STATEMENT_LISTS = ("body", "orelse", "finalbody", "handlers")


class Flow:
    """The cached analyses of one parse (built on first use by `flow(p)`)."""

    def __init__(self, p: Program):
        self.p = p
        self.classes = {c.name: c for c in p.of(ast.ClassDef)}
        self.defs: dict[str, list[FunctionNode]] = {}
        for node in p.of(ast.FunctionDef, ast.AsyncFunctionDef):
            self.defs.setdefault(node.name, []).append(node)
        for node in p.of(ast.Assign):
            if isinstance(node.value, ast.Lambda):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.defs.setdefault(target.id, []).append(node.value)
        # `self.x = value` / `obj.x = value` anywhere: what an attribute of that name may hold
        self.attribute_values: dict[str, list[ast.AST]] = {}
        for node in p.of(ast.Assign):
            for target, value in pairs(node):
                if isinstance(target, ast.Attribute):
                    self.attribute_values.setdefault(target.attr, []).append(value)
        for node in p.of(ast.Call):
            if isinstance(node.func, ast.Attribute) and node.func.attr in ("register_buffer", "register_parameter") \
                    and len(node.args) >= 2 and isinstance(node.args[0], ast.Constant):
                self.attribute_values.setdefault(str(node.args[0].value), []).append(node.args[1])
        self._sites: dict[int, list[ast.Call]] | None = None
        self.reaching_memo: dict[int, list[ast.AST]] = {}
        self.by_name: dict[str, list[tuple[ast.AST, ast.AST]]] = {}  # name -> (binding node, scope)
        for name, node, scope in p.bindings:
            self.by_name.setdefault(name, []).append((node, scope))
        self._model: list[FunctionNode] | None = None

    # ------------------------------------------------------------------------------------------- callees
    def callees(self, func: ast.AST, depth: int = 0) -> list[FunctionNode]:
        """The train.py functions calling `func` (a callee expression) may run."""
        if depth > 6:
            return []
        p = self.p
        if isinstance(func, ast.Lambda):
            return [func]
        if isinstance(func, ast.Name):
            scope = p.defining_scope(func)
            if scope is None:
                return []
            found: list[FunctionNode] = []
            for name, node, bound_scope in p.bindings:
                if name != func.id or bound_scope is not scope:
                    continue
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    found.append(node)
                elif isinstance(node, ast.ClassDef):
                    found += _methods(node, "__init__")
                elif isinstance(node, ast.Name):
                    value = _assigned_value(p, node)
                    if value is not None:
                        found += self.values_as_callees(value, depth + 1)
            return _unique(found)
        if isinstance(func, ast.Attribute):
            found = []
            for value in self.attribute_values.get(func.attr, []):
                found += self.values_as_callees(value, depth + 1)
            found += [m for cls in self.classes.values() for m in cls.body
                      if isinstance(m, ast.FunctionDef) and m.name == func.attr]
            return _unique(found)
        if isinstance(func, ast.Call):  # make_attention()(q, k, v), Attender()(q, k, v)
            return self.values_as_callees(func, depth + 1)
        return []

    def classes_made(self, call: ast.Call) -> list[ast.ClassDef]:
        """The train.py classes a call instantiates (`Attender()`)."""
        if not isinstance(call.func, ast.Name):
            return []
        scope = self.p.defining_scope(call.func)
        return [node for name, node, bound in self.p.bindings
                if name == call.func.id and bound is scope and isinstance(node, ast.ClassDef)]

    def values_as_callees(self, value: ast.AST, depth: int = 0) -> list[FunctionNode]:
        """What a value stored in a name or attribute runs when it is called."""
        if isinstance(value, ast.Lambda):
            return [value]
        if isinstance(value, ast.IfExp):
            return self.values_as_callees(value.body, depth + 1) + self.values_as_callees(value.orelse, depth + 1)
        if isinstance(value, ast.Call):
            qual = self.p.resolve(value.func) or ""
            if qual in _PASS_THROUGH and value.args:
                return self.values_as_callees(value.args[0], depth + 1)
            made = [m for cls in self.classes_made(value) for m in _methods(cls, "__call__", "forward")]
            returned = [r for f in self.callees(value.func, depth + 1) if not isinstance(f, ast.Lambda)
                        and f.name != "__init__" for r in returns(f)]
            return _unique(made + [c for r in returned for c in self.values_as_callees(r, depth + 1)])
        if isinstance(value, ast.Name | ast.Attribute):
            return self.callees(value, depth + 1)
        return []

    # ------------------------------------------------------------------------------------------- call sites
    def call_sites(self, func: FunctionNode) -> list[ast.Call]:
        """Calls anywhere in the file that may run `func`, and uses of it as a value passed on (a reference
        handed to another call counts as a call there: `checkpoint(func, x)`, `self.attend = func`)."""
        if self._sites is None:
            self._sites = {}
            for call in self.p.of(ast.Call):
                for target in self.callees(call.func):
                    self._sites.setdefault(id(target), []).append(call)
        return self._sites.get(id(func), [])

    # ------------------------------------------------------------------------------------------- the model
    def model_functions(self) -> list[FunctionNode]:
        """Methods of nn.Module subclasses and every train.py function they may run or hand on."""
        if self._model is not None:
            return self._model
        p = self.p
        model: set[str] = set()
        changed = True
        while changed:
            changed = False
            for name, cls in self.classes.items():
                if name in model:
                    continue
                if any((p.resolve(b) or "").startswith("torch.nn.") or (isinstance(b, ast.Name) and b.id in model)
                       for b in cls.bases):
                    model.add(name)
                    changed = True
        functions: list[FunctionNode] = [f for name in model for f in self.classes[name].body
                                         if isinstance(f, ast.FunctionDef)]
        seen = {id(f) for f in functions}
        queue = list(functions)
        while queue:
            current = queue.pop()
            for node in ast.walk(current):
                reached: list[FunctionNode] = []
                if isinstance(node, ast.Call):
                    reached = self.callees(node.func)
                elif isinstance(node, ast.Name | ast.Attribute) and isinstance(node.ctx, ast.Load):
                    reached = self.callees(node)  # a function handed on as a value runs in the model too
                for target in reached:
                    if id(target) not in seen:
                        seen.add(id(target))
                        functions.append(target)
                        queue.append(target)
        self._model = functions
        return functions


_FLOWS: weakref.WeakKeyDictionary[Program, Flow] = weakref.WeakKeyDictionary()
_FLOWS_LOCK = threading.Lock()


def flow(p: Program) -> Flow:
    """The flow analyses of this parse (made once per parse)."""
    with _FLOWS_LOCK:
        if p not in _FLOWS:
            _FLOWS[p] = Flow(p)
        return _FLOWS[p]


# ------------------------------------------------------------------------------------------------- values


def returns(func: FunctionNode) -> list[ast.AST]:
    """The values a function returns (a lambda: its body); nested functions' returns are not its own."""
    if isinstance(func, ast.Lambda):
        return [func.body]
    found: list[ast.AST] = []
    for node in _own_nodes(func):
        if isinstance(node, ast.Return) and node.value is not None:
            found.append(node.value)
    return found


def _own_nodes(func: ast.AST) -> Iterator[ast.AST]:
    """Nodes of a function's body, not entering nested functions, lambdas or classes."""
    stack = list(ast.iter_child_nodes(func))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, DEFINITIONS + (ast.ClassDef,)):
            stack.extend(ast.iter_child_nodes(node))


def own_nodes(func: ast.AST) -> list[ast.AST]:
    return list(_own_nodes(func))


def parameters(func: FunctionNode) -> list[str]:
    args = func.args
    return [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs] + \
        ([args.vararg.arg] if args.vararg else []) + ([args.kwarg.arg] if args.kwarg else [])


def bound_arguments(func: FunctionNode, call: ast.Call) -> dict[str, ast.AST]:
    """Parameter name -> the argument expression a call passes (methods: `self` is skipped)."""
    args = func.args
    positional = [a.arg for a in args.posonlyargs + args.args]
    if positional and positional[0] in ("self", "cls") and not isinstance(func, ast.Lambda):
        positional = positional[1:]
    bound: dict[str, ast.AST] = {}
    for name, value in zip(positional, [a for a in call.args if not isinstance(a, ast.Starred)], strict=False):
        bound[name] = value
    names = set(positional) | {a.arg for a in args.kwonlyargs}
    with_defaults = list(zip([a.arg for a in args.posonlyargs + args.args][::-1], args.defaults[::-1], strict=False))
    with_defaults += [(a.arg, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None]
    for keyword in call.keywords:
        if keyword.arg in names:
            bound[keyword.arg] = keyword.value
        elif keyword.arg is not None and args.kwarg is not None:
            bound.setdefault(args.kwarg.arg, keyword.value)
    for name, default in with_defaults:
        bound.setdefault(name, default)
    return bound


def _assigned_value(p: Program, target: ast.Name) -> ast.AST | None:
    """The value a Name target of a simple assignment receives (the matching element when unpacking)."""
    parent = p.parents.get(target)
    if isinstance(parent, ast.Assign) and target in parent.targets:
        return parent.value
    if isinstance(parent, ast.AnnAssign) and parent.value is not None and parent.target is target:
        return parent.value
    if isinstance(parent, ast.Tuple | ast.List):
        holder = p.parents.get(parent)
        if isinstance(holder, ast.Assign) and isinstance(holder.value, ast.Tuple | ast.List) and \
                len(holder.value.elts) == len(parent.elts):
            return holder.value.elts[parent.elts.index(target)]
    return None


def definition_value(p: Program, target: ast.AST) -> tuple[str, ast.AST | None]:
    """How a binding node gives its name a value: ('assign', value), ('augassign', the AugAssign), ('unpack',
    the whole unpacked value), ('param', None), ('loop', the iterated value) or ('other', None)."""
    parent = p.parents.get(target)
    if isinstance(target, ast.arg):
        return "param", None
    if isinstance(parent, ast.AugAssign) and parent.target is target:
        return "augassign", parent
    value = _assigned_value(p, target) if isinstance(target, ast.Name) else None
    if value is not None:
        return "assign", value
    holder = parent
    while isinstance(holder, ast.Tuple | ast.List | ast.Starred):
        holder = p.parents.get(holder)
    if isinstance(holder, ast.Assign):
        return "unpack", holder.value
    if isinstance(holder, ast.For | ast.comprehension):
        return "loop", holder.iter
    if isinstance(holder, ast.withitem):
        return "other", holder.context_expr
    return "other", None


def _position(node: ast.AST) -> tuple[int, int]:
    return getattr(node, "lineno", 0), getattr(node, "col_offset", 0)


def _statement(p: Program, node: ast.AST) -> ast.AST:
    while node in p.parents and not isinstance(node, ast.stmt):
        node = p.parents[node]
    return node


def _block_of(p: Program, statement: ast.AST) -> list | None:
    parent = p.parents.get(statement)
    for field_name in STATEMENT_LISTS:
        block = getattr(parent, field_name, None)
        if isinstance(block, list) and statement in block:
            return block
    return None


def _dominates(p: Program, definition: ast.AST, use: ast.AST) -> bool:
    """The definition's statement sits in a block the use is also (directly or deeper) inside."""
    block = _block_of(p, _statement(p, definition))
    if block is None:
        return False
    holder = p.parents.get(_statement(p, definition))
    node = _statement(p, use)
    while node is not None:
        if node in block:
            return True
        if node is holder:
            return False
        node = p.parents.get(node)
    return False


def _target_of(p: Program, node: ast.AST, statement: ast.AST) -> bool:
    """The binding node is (inside) an assignment target of `statement`."""
    if isinstance(statement, ast.Assign):
        targets = statement.targets
    elif isinstance(statement, ast.AugAssign | ast.AnnAssign):
        targets = [statement.target]
    else:
        return False
    return any(node is t or p.inside(node, t) for t in targets)


def reaching(p: Program, use: ast.Name) -> list[ast.AST]:
    """The binding nodes (Name targets, args, defs) of `use.id` whose value this use may see, latest first."""
    memo = flow(p).reaching_memo
    if id(use) not in memo:
        memo[id(use)] = _reaching(p, use)
    return memo[id(use)]


def _reaching(p: Program, use: ast.Name) -> list[ast.AST]:
    scope = p.defining_scope(use)
    if scope is None:
        return []
    statement = _statement(p, use)
    definitions = [node for node, bound in flow(p).by_name.get(use.id, []) if bound is scope and node is not use
                   and not _target_of(p, node, statement)]  # `x = f(x)`: the use sees the x before
    if not definitions:
        return []
    here = _position(use)
    before = sorted((d for d in definitions if _position(d) < here), key=_position, reverse=True)
    if not before:  # only later assignments: a loop carries one of them here, or the use precedes them all
        return sorted(definitions, key=_position, reverse=True)
    reached = []
    for definition in before:
        reached.append(definition)
        if isinstance(definition, ast.arg) or _dominates(p, definition, use):
            break
    return reached


def _methods(cls: ast.ClassDef, *names: str) -> list[FunctionNode]:
    return [m for m in cls.body if isinstance(m, ast.FunctionDef) and m.name in names]


def _unique(functions: list[FunctionNode]) -> list[FunctionNode]:
    seen, out = set(), []
    for f in functions:
        if id(f) not in seen:
            seen.add(id(f))
            out.append(f)
    return out
