"""The guard's view of one train.py, shared by every rule family: scopes, what each name stands for, reporting.

The parse itself is the one model of train.py (`agents.trainpy.read`: one parse per version, shared and
read-only); `Program` adds what the rules need on top of it, per check.

Names are resolved through the file's imports and simple aliases (`import prepare as p`,
`F = torch.nn.functional`, `tok = Tokenizer.from_directory()`), so `p.evaluate_bpb = ...` is the same offence
as `prepare.evaluate_bpb = ...`. Objects made by prepare (the tokenizer, the dataloader) count as prepare's
too: the evaluator relies on them.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterable, Iterator

from agents.bench.guard.report import Violation
from agents.trainpy import TrainPy

SCOPES = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp,
          ast.DictComp, ast.GeneratorExp)
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.Module)
LOOPS = (ast.For, ast.AsyncFor, ast.While, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
EVALUATE = "prepare.evaluate_bpb"
BUDGET = "prepare.TIME_BUDGET"


class Program:
    """A train.py as the rules see it; the rule families (one module each) read it and report through `hit`."""

    def __init__(self, model: TrainPy):
        self.model = model
        self.lines = model.lines
        self.tree = model.tree  # shared with every reader of this version: never changed here
        self.nodes = model.nodes  # walked once; every rule iterates this tuple (or `of`)
        self.parents = {child: node for node in self.nodes for child in ast.iter_child_nodes(node)}
        self.found: list[Violation] = []
        # A forbidden import is reported under its specific rule; with that rule off it is still a new import.
        self.fallbacks: dict[Violation, str] = {}
        self.globals: dict[ast.AST, set[str]] = {}  # names a function declares `global`
        for node in self.of(ast.Global):
            self.globals.setdefault(self.scope_of(node), set()).update(node.names)
        self.bindings = [(name, node, self._binding_scope(node, name)) for name, node in bindings(self.nodes)]
        self.scope_names: dict[ast.AST, set[str]] = {}
        for name, _, scope in self.bindings:
            self.scope_names.setdefault(scope, set()).add(name)
        # (scope, name) -> the dotted name it stands for: imports first, then simple aliases of them
        self.aliases: dict[tuple[ast.AST, str], str] = {}
        for name, node, scope in self.bindings:
            if (source := import_source(node, name)) is not None:
                self.aliases[(scope, name)] = source
        self.imported = set(self.aliases)
        self._follow_aliases()
        self.prepare_from = {name for name, node, _ in self.bindings
                             if isinstance(node, ast.ImportFrom) and node.module == "prepare"}
        self.prepare_modules = {(scope, name) for name, node, scope in self.bindings
                                if isinstance(node, ast.Import) and import_source(node, name) == "prepare"}
        self.bpb_names = {(scope, name) for name, node, scope in self.bindings
                          if isinstance(node, ast.Name) and self.assigned_from_evaluate(node)}

    def of(self, *kinds: type) -> tuple:
        """The nodes of these exact AST types, in walk order."""
        return self.model.of(*kinds)

    # ---------------------------------------------------------------- scopes and name resolution
    def scope_of(self, node: ast.AST) -> ast.AST | None:
        """The innermost function, lambda, class, comprehension or module strictly around node."""
        parent = self.parents.get(node)
        while parent is not None and not isinstance(parent, SCOPES):
            parent = self.parents.get(parent)
        return parent

    def _binding_scope(self, node: ast.AST, name: str) -> ast.AST:
        scope = self.scope_of(node)
        return self.tree if scope is None or name in self.globals.get(scope, ()) else scope

    def defining_scope(self, node: ast.Name) -> ast.AST | None:
        """The scope whose binding of node.id this use refers to (class bodies are not seen from methods)."""
        scope, innermost = self.scope_of(node), True
        while scope is not None:
            if (innermost or not isinstance(scope, ast.ClassDef)) and node.id in self.scope_names.get(scope, ()):
                return scope
            scope, innermost = self.scope_of(scope), False
        return None

    def _follow_aliases(self) -> None:
        """`x = <module thing>` and `x = <prepare call>()` make x stand for that thing (two passes: chains)."""
        for _ in range(2):
            for name, node, scope in self.bindings:
                assign = self.parents.get(node)
                if not (isinstance(assign, ast.Assign | ast.AnnAssign) and assign.value is not None) or \
                        (scope, name) in self.imported or not isinstance(node, ast.Name):
                    continue
                qual = self.resolve(assign.value)
                if qual is None or qual.startswith("builtins."):
                    continue
                if isinstance(assign.value, ast.Call) and not qual.startswith("prepare."):
                    continue  # results of torch calls are ordinary objects; prepare's are the evaluator's
                self.aliases[(scope, name)] = qual

    def resolve(self, node: ast.AST) -> str | None:
        """The dotted name an expression stands for ('prepare.evaluate_bpb', 'time.time'), if it is one."""
        if isinstance(node, ast.Name):
            scope = self.defining_scope(node)
            if scope is None:
                return f"builtins.{node.id}" if hasattr(builtins, node.id) else None
            return self.aliases.get((scope, node.id))
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Subscript):
            base = self.resolve(node.value)
            return f"{base}[]" if base else None
        if isinstance(node, ast.Call):
            func = self.resolve(node.func)
            if func == "builtins.getattr" and len(node.args) >= 2 and literal_str(node.args[1]) is not None:
                base = self.resolve(node.args[0])
                return f"{base}.{literal_str(node.args[1])}" if base else None
            return f"{func}()" if func else None
        return None

    def is_evaluate_result(self, value: ast.AST) -> bool:
        if isinstance(value, ast.Call) and self.resolve(value.func) == "builtins.float" and len(value.args) == 1:
            value = value.args[0]
        return isinstance(value, ast.Call) and self.resolve(value.func) == EVALUATE

    def assigned_from_evaluate(self, name: ast.Name) -> bool:
        parent = self.parents.get(name)
        return isinstance(parent, ast.Assign | ast.AnnAssign) and parent.value is not None and \
            self.is_evaluate_result(parent.value)

    def is_bpb_name(self, node: ast.AST) -> bool:
        return isinstance(node, ast.Name) and (self.defining_scope(node), node.id) in self.bpb_names

    def is_budget(self, node: ast.AST) -> bool:
        return isinstance(node, ast.Name | ast.Attribute) and self.resolve(node) == BUDGET

    def budget_clocks(self) -> set[str]:
        """Names compared directly with TIME_BUDGET (`training_time >= TIME_BUDGET`): the training-time clock."""
        clocks = set()
        for node in self.of(ast.Compare):
            operands = [node.left, *node.comparators]
            if any(self.is_budget(o) for o in operands):
                clocks |= {o.id for o in operands if isinstance(o, ast.Name) and not self.is_budget(o)}
        return clocks

    # ---------------------------------------------------------------- the tree around a node
    def enclosing(self, node: ast.AST, kinds: tuple) -> ast.AST | None:
        parent = self.parents.get(node)
        while parent is not None and not isinstance(parent, kinds):
            parent = self.parents.get(parent)
        return parent

    def inside(self, node: ast.AST, ancestor: ast.AST) -> bool:
        parent = self.parents.get(node)
        while parent is not None and parent is not ancestor:
            parent = self.parents.get(parent)
        return parent is ancestor

    def is_docstring(self, node: ast.Constant) -> bool:
        return isinstance(self.parents.get(node), ast.Expr)

    # ---------------------------------------------------------------- reporting
    def violation(self, rule: str, node: ast.AST | None, message: str) -> Violation:
        line_no = getattr(node, "lineno", 0) if node is not None else 0
        line = self.lines[line_no - 1].strip() if 0 < line_no <= len(self.lines) else ""
        return Violation(rule, line_no, line, message)

    def hit(self, rule: str, node: ast.AST | None, message: str, fallback: str | None = None) -> None:
        found = self.violation(rule, node, message)
        self.found.append(found)
        if fallback is not None:
            self.fallbacks[found] = fallback


# -------------------------------------------------------------------- small AST helpers shared by the families


def literal_str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def keyword(call: ast.Call, name: str, position: int | None = None) -> ast.AST | None:
    """The argument passed as `name=` (or at `position`), or None."""
    found = next((k.value for k in call.keywords if k.arg == name), None)
    if found is None and position is not None and len(call.args) > position:
        found = call.args[position]
    return found


def pairs(node: ast.Assign) -> Iterator[tuple[ast.AST, ast.AST]]:
    """(target, value) pairs of an assignment, unpacking `a, b = x, y`."""
    for target in node.targets:
        if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple) and \
                len(target.elts) == len(node.value.elts):
            yield from zip(target.elts, node.value.elts, strict=True)
        else:
            yield target, node.value


def import_source(node: ast.AST, name: str) -> str | None:
    """What an import statement bound to `name` ('prepare.SEED', 'torch'); None for other statements."""
    if isinstance(node, ast.Import):
        return next((a.name for a in node.names if (a.asname or a.name.split(".")[0]) == name), None)
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return next((f"{node.module}.{a.name}" for a in node.names if (a.asname or a.name) == name), None)
    return None


def bindings(nodes: Iterable[ast.AST]) -> Iterator[tuple[str, ast.AST]]:
    """Every place a name is bound or deleted: assignments, loop/with targets, defs, arguments, imports, except."""
    for node in nodes:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            yield node.id, node
        elif isinstance(node, ast.arg):
            yield node.arg, node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield node.name, node
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for a in node.names:
                if a.name != "*":
                    yield (a.asname or a.name.split(".")[0]), node
        elif isinstance(node, ast.ExceptHandler) and node.name:
            yield node.name, node
