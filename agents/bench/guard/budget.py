"""`no-metric-forgery` of the time budget: training stops on TIME_BUDGET as it is, and all of it is measured.

Followed through what the code does, helpers included (`flow.py`), not through the shape of one loop:
- the stop: training stops on a comparison with TIME_BUDGET itself, not a scaled or shifted copy of it;
- the clock: whatever is compared with TIME_BUDGET (a name, `state["t"]`, `self.elapsed`, a helper's
  parameter) only grows by measured time: differences of clock readings (`time.time() - t0`), followed through
  names, helpers' arguments and returns, stored attributes. Scaling, clamping (`min`), rounding, literal
  seconds, subtracting, or setting the clock inside the loop to anything but itself plus measured time are
  refused;
- the gates: the conditions that decide whether a step's time counts (an `if` around the update, a conditional
  expression or return in a helper that computes it, a conditional assignment of the step time, a `continue`
  that jumps over the update) may be dropped by an edit (every step counts) but not added or widened;
- training happens inside the budget: optimizer steps (and helpers that take them) only inside the loop that
  TIME_BUDGET stops, inside the timed part of its step (between the clock reading the step starts with and the
  one it ends with); no backward pass after that loop. A forward and backward pass before the loop with no
  optimizer step (a compile warm-up) learns nothing and stays allowed.
What static analysis cannot see (a clock started late inside a helper, work hidden in another thread) is caught
at run time: the runner's hard kill and the loop's wall-time check against the baselines (decide.WallTimeLimit).
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass, field

from agents.bench.guard.flow import DEFINITIONS, bound_arguments, definition_value, flow, own_nodes, reaching, returns
from agents.bench.guard.program import FUNCTIONS, LOOPS, Program, pairs
from agents.bench.guard.report import Violation

RULE = "no-metric-forgery"
CLOCK_CALLS = frozenset({"time.time", "time.perf_counter", "time.monotonic", "time.time_ns", "time.perf_counter_ns",
                         "time.monotonic_ns"})
_MAX_DEPTH = 12


def check(p: Program) -> None:
    _check_budget_stop(p)
    clock = find_clock(p)
    if not clock.keys:
        return
    for node, why in _clock_problems(p, clock):
        p.hit(RULE, node, why)
    for node, why in _training_problems(p, clock):
        p.hit(RULE, node, why)


def gate_changes(old: Program, new: Program) -> list[Violation]:
    """The conditions deciding which steps count against TIME_BUDGET (`if step >= EXCLUDED_STEPS`, and any a
    helper, a conditional expression or a `continue` adds): an edit may drop one (every step counts) but not
    add or widen one (uncounted steps train for free)."""
    before = _gates(old, find_clock(old))
    return [new.violation(RULE, node, "changes which training steps count against TIME_BUDGET (a new condition "
                          "on the time account, or a constant in one): steps left uncounted would train past the "
                          "budget")
            for test, node in _gates(new, find_clock(new)).items() if test not in before]


# ---------------------------------------------------------------------------------------------- the stop


def _check_budget_stop(p: Program) -> None:
    """Training stops on a comparison with TIME_BUDGET itself, not a scaled or shifted copy of it."""
    bare = False
    for node in p.of(ast.Compare):
        for operand in [node.left, *node.comparators]:
            if p.is_budget(operand):
                bare = True
            elif any(p.is_budget(n) for n in ast.walk(operand)):
                p.hit(RULE, node, "compares against an altered TIME_BUDGET: training time is measured against "
                                  "prepare's budget as it is")
    if not bare:
        p.hit(RULE, None, "no comparison with TIME_BUDGET is left: training must stop when prepare's time budget is "
                          "spent")


# ---------------------------------------------------------------------------------------------- the clock


@dataclass
class Clock:
    """What is compared with TIME_BUDGET (by key: a name, or the text of `state["t"]` / `self.t`), and the loops
    whose exit that comparison decides."""

    keys: set[str] = field(default_factory=set)
    loops: list[ast.AST] = field(default_factory=list)


def _key(node: ast.AST) -> str | None:
    """A clock's identity: a name, an attribute by its name on whatever object (`timer.seconds` is read where a
    method updates `self.seconds`), an item by its text."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f".{node.attr}"
    if isinstance(node, ast.Subscript):
        return ast.unparse(node)
    return None


def find_clock(p: Program) -> Clock:
    clock = Clock()
    fl = flow(p)
    for compare in p.of(ast.Compare):
        operands = [compare.left, *compare.comparators]
        if not any(p.is_budget(o) for o in operands):
            continue
        for operand in operands:
            if not p.is_budget(operand):
                clock.keys |= _clock_keys(p, operand, 0)
        loop = p.enclosing(compare, LOOPS)
        if loop is not None:
            clock.loops.append(loop)
            continue
        func = p.enclosing(compare, DEFINITIONS)  # the comparison sits in a helper the loop calls
        for site in fl.call_sites(func) if func is not None else []:
            if (outer := p.enclosing(site, LOOPS)) is not None:
                clock.loops.append(outer)
    return clock


def _clock_keys(p: Program, node: ast.AST, depth: int) -> set[str]:
    """The clock behind an operand: itself, what an alias of it was read from, what a helper was handed."""
    if depth > 4:
        return set()
    key = _key(node)
    keys = {key} if key else set()
    if isinstance(node, ast.Name):
        for definition in reaching(p, node):
            kind, value = definition_value(p, definition)
            if kind == "assign" and isinstance(value, ast.Name | ast.Attribute | ast.Subscript):
                keys |= _clock_keys(p, value, depth + 1)
            elif kind == "param":
                func = p.enclosing(definition, DEFINITIONS)
                for site in flow(p).call_sites(func) if func is not None else []:
                    argument = bound_arguments(func, site).get(node.id)
                    if argument is not None:
                        keys |= _clock_keys(p, argument, depth + 1)
    elif isinstance(node, ast.Call):
        for func in flow(p).callees(node.func):
            for value in returns(func):
                keys |= _clock_keys(p, value, depth + 1)
    return keys


def _updates(p: Program, clock: Clock) -> list[tuple[ast.AST, ast.AST, ast.AST, bool]]:
    """(statement, target, value, augmented) for every assignment to the clock, in any function."""
    found = []
    for node in p.of(ast.AugAssign):
        if _key(node.target) in clock.keys:
            found.append((node, node.target, node, True))
    for node in p.of(ast.Assign):
        for target, value in pairs(node):
            if _key(target) in clock.keys:
                found.append((node, target, value, False))
    return found


@dataclass
class _Frame:
    func: ast.AST | None
    bound: dict[str, tuple[ast.AST, _Frame]] = field(default_factory=dict)


@dataclass
class _Flow:
    """What flows into the clock: problems found, conditions met on the way, whether the clock itself is part of
    the value on every path, and the clock readings that start a timed span (t0 = time.time())."""

    problems: list[tuple[ast.AST, str]] = field(default_factory=list)
    conditions: list[ast.AST] = field(default_factory=list)
    has_clock: bool = False
    starts: list[tuple[ast.AST, ast.AST]] = field(default_factory=list)  # (start statement, end node)

    def __iadd__(self, other: _Flow) -> _Flow:
        self.problems += other.problems
        self.conditions += other.conditions
        self.starts += other.starts
        return self


class _Tracer:
    """Follows a value that flows into the clock back to where it comes from."""

    def __init__(self, p: Program, clock: Clock):
        self.p, self.clock, self.fl = p, clock, flow(p)
        self._active: set[tuple[int, int]] = set()

    def trace(self, node: ast.AST, frame: _Frame, depth: int = 0) -> _Flow:
        marker = (id(node), id(frame.func))
        if depth > _MAX_DEPTH or marker in self._active:
            return _Flow()
        self._active.add(marker)
        try:
            return self._trace(node, frame, depth + 1)
        finally:
            self._active.discard(marker)

    def _trace(self, node: ast.AST, frame: _Frame, depth: int) -> _Flow:
        p = self.p
        if _key(node) in self.clock.keys:
            return _Flow(has_clock=True)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, int | float) and not isinstance(node.value, bool) and node.value != 0:
                return _Flow([(node, f"adds a literal {node.value!r} seconds")])
            return _Flow()
        if isinstance(node, ast.Name):
            return self._name(node, frame, depth)
        if isinstance(node, ast.BinOp):
            left, right = self.trace(node.left, frame, depth), self.trace(node.right, frame, depth)
            if isinstance(node.op, ast.Add):
                out = _Flow(has_clock=left.has_clock or right.has_clock)
            elif isinstance(node.op, ast.Sub):
                out = _Flow(has_clock=left.has_clock)
                if right.has_clock:
                    out.problems.append((node, "subtracts from the clock"))
                out.starts += self._timer_starts(node)
            else:
                return _Flow([(node, f"{ast.unparse(node)} scales or transforms measured time")])
            out += left
            out += right
            return out
        if isinstance(node, ast.IfExp):
            body, orelse = self.trace(node.body, frame, depth), self.trace(node.orelse, frame, depth)
            out = _Flow(conditions=[node.test], has_clock=body.has_clock and orelse.has_clock)
            out += body
            out += orelse
            return out
        if isinstance(node, ast.Call):
            return self._call(node, frame, depth)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
            out = _Flow(has_clock=True)
            values = self.fl.attribute_values.get(node.attr, [])
            for value in values:
                traced = self.trace(value, _Frame(p.enclosing(value, DEFINITIONS)), depth)
                out.has_clock = out.has_clock and traced.has_clock
                out += traced
            if not values:
                return _Flow([(node, f"{ast.unparse(node)} is not a measured time")])
            return out
        return _Flow([(node, f"{ast.unparse(node)} is not a measured time (only differences of clock readings "
                             "count)")])

    def _name(self, node: ast.Name, frame: _Frame, depth: int) -> _Flow:
        p = self.p
        definitions = reaching(p, node)
        if not definitions:
            if p.resolve(node) is not None:
                return _Flow([(node, f"{node.id} is not a measured time")])
            return _Flow()
        out = _Flow(has_clock=True)
        for definition in definitions:
            traced = self._definition(definition, node, frame, depth)
            out.has_clock = out.has_clock and traced.has_clock
            out += traced
            if len(definitions) > 1 or not _unconditional(p, definition):
                out.conditions += _enclosing_tests(p, definition)
        return out

    def _definition(self, definition: ast.AST, use: ast.Name, frame: _Frame, depth: int) -> _Flow:
        p = self.p
        same = p.enclosing(definition, DEFINITIONS) is frame.func
        here = frame if same else _Frame(p.enclosing(definition, DEFINITIONS))
        kind, value = definition_value(p, definition)
        if kind == "param":
            bound = frame.bound.get(use.id) if same else None
            return self.trace(bound[0], bound[1], depth) if bound else _Flow()
        if kind == "assign":
            return self.trace(value, here, depth)
        if kind == "augassign":
            if not isinstance(value.op, ast.Add):
                return _Flow([(value, f"{ast.unparse(value)} changes the step time other than by adding")])
            before = _Flow()
            for prior in reaching(p, definition):
                before += self._definition(prior, use, here, depth)
            before += self.trace(value.value, here, depth)
            return before
        if isinstance(definition, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            return _Flow([(use, f"{use.id} is not a measured time")])
        return _Flow([(use, f"{use.id} is not a measured time (only differences of clock readings count)")])

    def _call(self, node: ast.Call, frame: _Frame, depth: int) -> _Flow:
        qual = self.p.resolve(node.func) or ""
        if qual in CLOCK_CALLS:
            return _Flow()
        if qual == "builtins.float" and len(node.args) == 1:
            return self.trace(node.args[0], frame, depth)
        targets = self.fl.callees(node.func)
        if not targets:
            shown = qual.removeprefix("builtins.") or ast.unparse(node.func)
            return _Flow([(node, f"{shown}() is not a measured time (clamping, rounding or another source)")])
        out = _Flow(has_clock=True)
        for func in targets:
            inner = _Frame(func, {k: (v, frame) for k, v in bound_arguments(func, node).items()})
            values = returns(func)
            if not values:
                return _Flow([(node, f"{ast.unparse(node.func)}() returns no time")])
            for value in values:
                traced = self.trace(value, inner, depth)
                out.has_clock = out.has_clock and traced.has_clock
                out += traced
                if len(values) > 1 or not _unconditional(self.p, value):
                    out.conditions += _enclosing_tests(self.p, value)
        return out

    def _timer_starts(self, node: ast.BinOp) -> list[tuple[ast.AST, ast.AST]]:
        """`time.time() - t0`: the statement that set t0 from a clock starts the span this node ends."""
        p = self.p
        if not (isinstance(node.left, ast.Call) and (p.resolve(node.left.func) or "") in CLOCK_CALLS
                and isinstance(node.right, ast.Name)):
            return []
        starts = []
        for definition in reaching(p, node.right):
            kind, value = definition_value(p, definition)
            if kind == "assign" and isinstance(value, ast.Call) and (p.resolve(value.func) or "") in CLOCK_CALLS:
                starts.append((definition, node))
        return starts


def _clock_problems(p: Program, clock: Clock) -> list[tuple[ast.AST, str]]:
    tracer = _Tracer(p, clock)
    found = []
    for statement, target, value, augmented in _updates(p, clock):
        name = ast.unparse(target)
        frame = _Frame(p.enclosing(statement, DEFINITIONS))
        in_loop = _in_loop_context(p, statement)
        if augmented:
            if not isinstance(statement.op, ast.Add):
                found.append((statement, f"{name} is compared with TIME_BUDGET, so it may only grow by measured "
                                         "time (no scaling or subtracting)"))
                continue
            traced = tracer.trace(statement.value, frame)
        else:
            traced = tracer.trace(value, frame)
            # inside the loop the clock either accumulates (itself plus measured time) or reads the time elapsed
            # since a mark set before the loop; anything else (a reset, a mark moved inside the loop) loses time
            elapsed = bool(traced.starts) and not any(_in_loop_context(p, start) for start, _ in traced.starts)
            if in_loop and not traced.has_clock and not elapsed:
                found.append((statement, f"{name} is compared with TIME_BUDGET and is set inside the training loop "
                                         "to something other than itself plus measured time, or the time since a "
                                         "mark set before the loop: steps before that would not count"))
        for node, why in traced.problems:
            shown = f" ({_line_of(p, node)})" if getattr(node, "lineno", None) != getattr(statement, "lineno", 0) \
                else ""
            found.append((statement, f"{name} is compared with TIME_BUDGET, so it may only grow by measured time: "
                                     f"{why}{shown}"))
    return found


def _gates(p: Program, clock: Clock) -> dict[str, ast.AST]:
    """Every condition on the way to an update of the clock inside the training loop, by its text with module
    constants replaced by their values."""
    constants = {t.id: node.value for node in p.tree.body if isinstance(node, ast.Assign)
                 for t in node.targets if isinstance(t, ast.Name)}
    tracer = _Tracer(p, clock)
    gates: dict[str, ast.AST] = {}
    for statement, _target, value, augmented in _updates(p, clock):
        if not _in_loop_context(p, statement):
            continue
        tests = list(_enclosing_tests(p, statement))
        tests += _call_site_tests(p, statement)
        tests += _skipping_tests(p, statement, clock)
        traced = tracer.trace(statement.value if augmented else value, _Frame(p.enclosing(statement, DEFINITIONS)))
        tests += traced.conditions
        for test in tests:
            key = ast.dump(_Substitute(constants).visit(copy.deepcopy(test)))
            gates.setdefault(key, test)
    return gates


def _enclosing_tests(p: Program, node: ast.AST) -> list[ast.AST]:
    """The tests of the `if`s (and conditional expressions) around a node, up to its function."""
    tests, child, parent = [], node, p.parents.get(node)
    while parent is not None and not isinstance(parent, FUNCTIONS):
        if isinstance(parent, ast.If | ast.IfExp) and child is not parent.test:
            tests.append(parent.test)
        child, parent = parent, p.parents.get(parent)
    return tests


def _unconditional(p: Program, node: ast.AST) -> bool:
    return not _enclosing_tests(p, node)


def _call_site_tests(p: Program, statement: ast.AST, depth: int = 0) -> list[ast.AST]:
    """When the update is in a helper: the conditions around the calls that run it, and the helper's early exits."""
    func = p.enclosing(statement, DEFINITIONS)
    if func is None or depth > 3:
        return []
    tests = []
    for node in own_nodes(func):
        if isinstance(node, ast.Return) and _before(node, statement):
            tests += _enclosing_tests(p, node)
    for site in flow(p).call_sites(func):
        tests += _enclosing_tests(p, site) + _call_site_tests(p, site, depth + 1)
    return tests


def _skipping_tests(p: Program, statement: ast.AST, clock: Clock) -> list[ast.AST]:
    """A `continue` in the training loop before the update (or the call that makes it) skips the account."""
    anchors = [statement] + [site for site in _sites_up(p, statement)]
    tests = []
    for loop in clock.loops:
        for anchor in anchors:
            if not p.inside(anchor, loop):
                continue
            for node in ast.walk(loop):
                if isinstance(node, ast.Continue) and p.enclosing(node, LOOPS) is loop and _before(node, anchor):
                    tests += _enclosing_tests(p, node) or [node]
    return tests


def _sites_up(p: Program, node: ast.AST, depth: int = 0) -> list[ast.AST]:
    func = p.enclosing(node, DEFINITIONS)
    if func is None or depth > 3:
        return []
    sites = list(flow(p).call_sites(func))
    return sites + [s for site in sites for s in _sites_up(p, site, depth + 1)]


def _before(a: ast.AST, b: ast.AST) -> bool:
    return (getattr(a, "lineno", 0), getattr(a, "col_offset", 0)) < (getattr(b, "lineno", 0),
                                                                      getattr(b, "col_offset", 0))


def _in_loop_context(p: Program, node: ast.AST, depth: int = 0) -> bool:
    """Inside a loop, or in a function some loop calls."""
    if p.enclosing(node, LOOPS) is not None and p.enclosing(p.enclosing(node, LOOPS), DEFINITIONS) is \
            p.enclosing(node, DEFINITIONS):
        return True
    func = p.enclosing(node, DEFINITIONS)
    if func is None or depth > 3:
        return False
    return any(_in_loop_context(p, site, depth + 1) for site in flow(p).call_sites(func))


def _line_of(p: Program, node: ast.AST) -> str:
    line_no = getattr(node, "lineno", 0)
    return f"line {line_no}: {p.lines[line_no - 1].strip()}" if 0 < line_no <= len(p.lines) else ast.unparse(node)


class _Substitute(ast.NodeTransformer):
    def __init__(self, constants: dict[str, ast.AST]):
        self.constants = constants

    def visit_Name(self, node: ast.Name):
        return copy.deepcopy(self.constants[node.id]) if node.id in self.constants else node


# ---------------------------------------------------------------------------------------------- training


def _training_problems(p: Program, clock: Clock) -> list[tuple[ast.AST, str]]:
    """Optimizer steps only inside the budget loop's timed step; no backward pass after the loop."""
    if not clock.loops:
        return []
    kinds = _trainer_kinds(p, clock)
    inside = _budget_only_functions(p, clock)
    spans = _timed_spans(p, clock)
    runners = {id(p.enclosing(loop, DEFINITIONS)) for loop in clock.loops}  # what runs the loop is reported inside
    found = []
    for node, kind in _training_sites(p, kinds):
        if isinstance(node, ast.Call) and any(id(f) in runners for f in flow(p).callees(node.func)):
            continue
        loop = next((loop for loop in clock.loops if p.inside(node, loop)), None)
        func = p.enclosing(node, DEFINITIONS)
        if loop is not None:
            problem = _outside_span(p, node, loop, spans.get(id(loop)))
            if problem:
                found.append((node, problem))
            continue
        if func is not None and id(func) in inside:
            continue
        if kind == "step":
            found.append((node, "an optimizer step outside the loop TIME_BUDGET stops (before it starts or after it "
                                "ends): training the budget does not count"))
        elif _after_loops(p, node, clock):
            found.append((node, "a backward pass after the loop TIME_BUDGET stops: training after the budget is "
                                "spent"))
    return found


def _trainer_kinds(p: Program, clock: Clock) -> dict[int, str]:
    """Functions that take optimizer steps ('step') or only backward passes ('backward'), transitively, outside the
    budget loops (the function that runs the budget loop trains inside it, as it should)."""
    fl = flow(p)
    kinds: dict[int, str] = {}
    functions = [f for f in p.of(ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)]
    changed = True
    while changed:
        changed = False
        for func in functions:
            kind = kinds.get(id(func))
            for node in own_nodes(func):
                if not isinstance(node, ast.Call) or any(p.inside(node, loop) for loop in clock.loops):
                    continue
                found = _direct_kind(p, node) or max((kinds.get(id(t), "") for t in fl.callees(node.func)
                                                      if t is not func), default="", key=_rank)
                if found and _rank(found) > _rank(kind or ""):
                    kind = found
            if kind and kinds.get(id(func)) != kind:
                kinds[id(func)] = kind
                changed = True
    return kinds


def _rank(kind: str) -> int:
    return {"": 0, "backward": 1, "step": 2}[kind]


def _direct_kind(p: Program, call: ast.Call) -> str:
    if isinstance(call.func, ast.Attribute):
        if call.func.attr == "backward" or (p.resolve(call.func) or "") in ("torch.autograd.backward",
                                                                            "torch.autograd.grad"):
            return "backward"
        if call.func.attr == "step" and not _is_scheduler(p, call.func.value):
            return "step"
    return ""


def _is_scheduler(p: Program, receiver: ast.AST) -> bool:
    text = ast.unparse(receiver).lower()
    return "sched" in text or "lr_scheduler" in (p.resolve(receiver) or "")


def _training_sites(p: Program, kinds: dict[int, str]) -> list[tuple[ast.AST, str]]:
    """Calls that train: backward, optimizer steps, and calls of functions that do, outside those functions."""
    fl = flow(p)
    sites = []
    for call in p.of(ast.Call):
        kind = _direct_kind(p, call)
        if not kind:
            kind = max((kinds.get(id(t), "") for t in fl.callees(call.func)), default="", key=_rank)
        if kind:
            sites.append((call, kind))
    return sites


def _budget_only_functions(p: Program, clock: Clock) -> set[int]:
    """Functions called only from inside the budget loops (or from other such functions)."""
    fl = flow(p)
    functions = list(p.of(ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
    inside: set[int] = set()
    changed = True
    while changed:
        changed = False
        for func in functions:
            if id(func) in inside:
                continue
            sites = fl.call_sites(func)
            if sites and all(any(p.inside(s, loop) for loop in clock.loops) or
                             id(p.enclosing(s, DEFINITIONS)) in inside for s in sites):
                inside.add(id(func))
                changed = True
    return inside


def _timed_spans(p: Program, clock: Clock) -> dict[int, tuple[int, int]]:
    """Per budget loop: the indexes of the statements of its body that start and end the timed step."""
    tracer = _Tracer(p, clock)
    spans: dict[int, tuple[int, int]] = {}
    for statement, _target, value, augmented in _updates(p, clock):
        traced = tracer.trace(statement.value if augmented else value, _Frame(p.enclosing(statement, DEFINITIONS)))
        for start, end in traced.starts:
            for loop in clock.loops:
                first, last = _body_index(p, loop, start), _body_index(p, loop, end)
                if first is not None and last is not None and first <= last:
                    spans.setdefault(id(loop), (first, last))
    return spans


def _body_index(p: Program, loop: ast.AST, node: ast.AST) -> int | None:
    body = getattr(loop, "body", [])
    while node is not None:
        if node in body:
            return body.index(node)
        node = p.parents.get(node)
    return None


def _outside_span(p: Program, node: ast.AST, loop: ast.AST, span: tuple[int, int] | None) -> str | None:
    if span is None:
        return None
    index = _body_index(p, loop, node)
    if index is None or span[0] <= index <= span[1]:
        return None
    return ("trains outside the timed part of the step (before the clock reading that starts it or after the one "
            "that ends it): that training is not counted against TIME_BUDGET")


def _after_loops(p: Program, node: ast.AST, clock: Clock, depth: int = 0) -> bool:
    """The node runs after a budget loop ended: after it in the loop's own function, or in a helper called there."""
    for loop in clock.loops:
        if p.enclosing(node, DEFINITIONS) is p.enclosing(loop, DEFINITIONS):
            if getattr(node, "lineno", 0) > getattr(loop, "end_lineno", 0):
                return True
    func = p.enclosing(node, DEFINITIONS)
    if func is None or depth > 3:
        return False
    return any(_after_loops(p, site, clock, depth + 1) for site in flow(p).call_sites(func))
