"""Whether an edit of train.py changes anything on the device profile that runs here.

train.py holds two profiles (`A if CUDA else B`): an edit may touch only the other one's constants, or code
this profile never runs (`if LOGIT_SOFTCAP:` where LOGIT_SOFTCAP is 0 here). Such a run would measure the
unchanged model and could at most be "kept" for noise: `noop_reason` says why an edit is such a no-op, so
the crew refuses it before training.

What it decides, from the code alone (the shared model of train.py, agents.trainpy, and memory.fingerprint's
per-profile constants):
- constants whose value changed only in another profile;
- code inside `if`/`while` statements and `A if TEST else B` expressions whose test is decided by module
  constants and profile flags here (`if CUDA:`, `if LOGIT_SOFTCAP:`, `if WARMUP_RATIO > 0:`), compared after
  cutting the branches this profile never takes;
- a constant whose value changed here but that no code running here reads (removed with the only branch
  that used it).
What it does not decide (and so never refuses): branches on runtime values (`x.is_cuda`, a tensor's
shape), functions defined but never called, and changes that are dead for numerical reasons (a factor of 1).
"""

from __future__ import annotations

import ast
import copy
from typing import Any

from agents import trainpy
from memory.fingerprint import ChangeFingerprint, fingerprint_or_none

RULE = "no-op-here"
_UNDECIDED = object()


def noop_reason(old_text: str, new_text: str, device: str) -> str | None:
    """Why the edit from `old_text` to `new_text` does nothing on `device`'s profile ("cpu" or "cuda"); None if it
    does something here, or if that cannot be told from the code (either text does not parse)."""
    fp = fingerprint_or_none(old_text, new_text)
    if fp is None:
        return None
    try:
        old, new = trainpy.read(old_text), trainpy.read(new_text)
    except (SyntaxError, ValueError, RecursionError):
        return None
    here = _profiles_here(old, device)
    if [p.name for p in here] != [p.name for p in _profiles_here(new, device)]:
        return None  # the edit added or removed a profile flag: nothing is decided
    for profile in here:  # every profile this device may run (other flags than CUDA are not known before a run)
        old_live, new_live = _LiveCode(old, profile), _LiveCode(new, profile)
        if old_live.dump != new_live.dump:
            return None
        if any(name in old_live.reads or name in new_live.reads for name in _changed_here(fp, profile.name)):
            return None
    return _explain(fp, [p.name for p in here], device)


def _profiles_here(model: trainpy.TrainPy, device: str) -> list[trainpy.Profile]:
    on_gpu = device == "cuda"
    return [p for p in model.profiles if p.flags.get(trainpy.DEVICE_FLAG, on_gpu) == on_gpu]


def _changed_here(fp: ChangeFingerprint, profile: str) -> list[str]:
    out = []
    for name, per_profile in fp.constants.items():
        pair = per_profile.get(profile)
        if pair is None:  # a file without profile flags: one value for every profile
            pairs = {tuple(p) for p in per_profile.values()}
            pair = next(iter(pairs)) if len(pairs) == 1 else (None, "?")
        if pair[0] != pair[1]:
            out.append(name)
    return out


def _explain(fp: ChangeFingerprint, profiles: list[str], device: str) -> str:
    changed_here = {name for p in profiles for name in _changed_here(fp, p)}
    parts = []
    for name, per_profile in sorted(fp.constants.items()):
        if name in changed_here:
            old, new = per_profile.get(profiles[0]) or next(iter(per_profile.values()))
            parts.append(f"{name} {_shown(old)} -> {_shown(new)} here, but no code that runs here reads it")
        else:
            elsewhere = [f"{_shown(o)} -> {_shown(n)} ({p})" for p, (o, n) in per_profile.items() if o != n]
            parts.append(f"{name} changes only on another device: {', '.join(elsewhere)}")
    if fp.units:
        parts.append(f"the code changed ({', '.join(sorted(fp.units))}) only in branches this device never takes")
    what = "; ".join(parts) or "no change to the code"
    return (f"does nothing on this device ({device}, profile '{' / '.join(profiles)}'): {what}. It cannot be "
            f"measured here, so it is neither trained nor kept")


def _shown(value: str | None) -> str:
    return "(absent)" if value is None else value


class _LiveCode:
    """A version of train.py as one profile runs it: branches decided by constants cut, docstrings and the
    assignments of evaluable constants left out (their values are compared apart). `dump` compares two versions;
    `reads` is every name the remaining code loads. The shared tree is only read: what is cut is a copy."""

    def __init__(self, model: trainpy.TrainPy, profile: trainpy.Profile):
        self.env: dict[str, Any] = {**profile.flags, **model.values(profile.name)}
        evaluable = set(model.values(profile.name))
        body = []
        for stmt in model.tree.body:
            target = _assigned_name(stmt)
            if target is not None and (target in evaluable or target in model.flags):
                continue
            body.extend(self._statements([stmt], frozenset()))
        module = ast.Module(body=body, type_ignores=[])
        self.dump = ast.dump(module, annotate_fields=False, include_attributes=False)
        self.reads = {n.id for n in ast.walk(module) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}

    def _statements(self, stmts: list[ast.stmt], local: frozenset[str]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in stmts:
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
                continue  # a docstring or a bare string: does nothing
            if isinstance(stmt, ast.If | ast.While):
                taken = self._test(stmt.test, local)
                if taken is not _UNDECIDED:
                    if isinstance(stmt, ast.If):
                        out.extend(self._statements(stmt.body if taken else stmt.orelse, local))
                    elif not taken:
                        out.extend(self._statements(stmt.orelse, local))
                    else:
                        out.append(self._node(stmt, local))
                    continue
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner = local | _names_stored(stmt)
                stmt = copy.copy(stmt)
                stmt.body = self._statements(stmt.body, inner)
                stmt.decorator_list = [self._node(d, local) for d in stmt.decorator_list]
                if not isinstance(stmt, ast.ClassDef):
                    stmt.args = self._node(stmt.args, inner)
                out.append(stmt)
                continue
            out.append(self._node(stmt, local))
        return out

    def _node(self, node: ast.AST, local: frozenset[str]) -> ast.AST:
        """The node with its decided `A if TEST else B` expressions and nested branches cut."""
        live = self

        class Cut(ast.NodeTransformer):
            def visit_IfExp(self, expr: ast.IfExp) -> ast.AST:
                taken = live._test(expr.test, local)
                if taken is _UNDECIDED:
                    return self.generic_visit(expr)
                return self.visit(expr.body if taken else expr.orelse)

            def generic_visit(self, sub: ast.AST) -> ast.AST:
                for field, value in ast.iter_fields(sub):
                    if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                        setattr(sub, field, live._statements(value, local))
                    elif isinstance(value, list):
                        setattr(sub, field, [self.visit(v) if isinstance(v, ast.AST) else v for v in value])
                    elif isinstance(value, ast.AST):
                        setattr(sub, field, self.visit(value))
                return sub

        return Cut().visit(copy.deepcopy(node))

    def _test(self, test: ast.expr, local: frozenset[str]) -> Any:
        """The truth of a branch test from constants and flags alone, else _UNDECIDED."""
        value = _value(test, self.env, local)
        return _UNDECIDED if value is _UNDECIDED else bool(value)


def _value(node: ast.expr, env: dict[str, Any], local: frozenset[str]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id] if node.id in env and node.id not in local else _UNDECIDED
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _value(node.operand, env, local)
        return inner if inner is _UNDECIDED else not inner
    if isinstance(node, ast.BoolOp):
        values = [_value(v, env, local) for v in node.values]
        if _UNDECIDED in values:
            return _UNDECIDED
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        left, right = _value(node.left, env, local), _value(node.comparators[0], env, local)
        if _UNDECIDED in (left, right):
            return _UNDECIDED
        compare = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
                   ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b}
        op = compare.get(type(node.ops[0]))
        try:
            return _UNDECIDED if op is None else op(left, right)
        except TypeError:
            return _UNDECIDED
    return _UNDECIDED


def _assigned_name(stmt: ast.stmt) -> str | None:
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
        return stmt.targets[0].id
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
        return stmt.target.id
    return None


def _names_stored(scope: ast.AST) -> frozenset[str]:
    """Names a function or class binds itself (parameters, assignments): there a module constant's name is not it."""
    names = {n.id for n in ast.walk(scope) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store | ast.Del)}
    if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
        args = scope.args
        names |= {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg] if a}
    return frozenset(names)
