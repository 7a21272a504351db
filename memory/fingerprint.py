"""A change fingerprint: what an edit of train.py does, described canonically from the code itself.

Both versions are parsed (ast) and their module-level constants evaluated, so `MATRIX_LR = 0.6 * 1.5` and
`MATRIX_LR = 0.9` are the same value, and `X = A if CUDA else B` has one value per device profile. The
fingerprint lists each constant whose value changed (old -> new, per profile) and each function, method or
class whose normalised code changed (comments, docstrings and formatting do not count). Two edits with the
same fingerprint are the same experiment, whatever their titles say.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import math
import operator
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

DEFAULT_PROFILE = "default"
MAX_PROFILE_FLAGS = 3  # 2**3 profiles at most; more flags than that are treated as opaque values
_MODULE_UNIT = "<module>"

_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}
_CALLS = {"int": int, "float": float, "round": round, "min": min, "max": max, "abs": abs, "bool": bool}


class _Opaque(Exception):
    """The expression cannot be evaluated from constants alone (a call into torch, an import...)."""


# ------------------------------------------------------------------------------------------ evaluation


def _evaluate(node: ast.AST, env: Mapping[str, Any]) -> Any:
    """Value of a constant expression; `env` maps names to values (profile flags are booleans)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str | bool | type(None)):
        return node.value
    if isinstance(node, ast.Tuple | ast.List):
        return tuple(_evaluate(e, env) for e in node.elts)
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        raise _Opaque(node.id)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand, env))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left, env), _evaluate(node.right, env)
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
            raise _Opaque("power too large to evaluate")
        try:
            return _BINARY[type(node.op)](left, right)
        except (ArithmeticError, TypeError, ValueError) as exc:
            raise _Opaque(str(exc)) from None
    if isinstance(node, ast.IfExp):
        return _evaluate(node.body if _evaluate(node.test, env) else node.orelse, env)
    if isinstance(node, ast.BoolOp):
        values = [_evaluate(v, env) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
        return _COMPARE[type(node.ops[0])](_evaluate(node.left, env), _evaluate(node.comparators[0], env))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS \
            and not node.keywords:
        try:
            return _CALLS[node.func.id](*(_evaluate(a, env) for a in node.args))
        except (ArithmeticError, TypeError, ValueError) as exc:
            raise _Opaque(str(exc)) from None
    raise _Opaque(type(node).__name__)


def canonical_value(value: Any) -> str:
    """One spelling per value: 0.6 * 1.5 and 0.9 both give '0.9'; 2**19 gives '524288'; tuples keep their shape."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return format(value, ".10g")
    if isinstance(value, tuple):
        return "(" + ", ".join(canonical_value(v) for v in value) + ")"
    return repr(value)


@dataclass
class ModuleConstants:
    """Module-level constants of a source file, evaluated once per device profile."""

    profiles: list[str]
    values: dict[str, dict[str, str]]  # name -> profile -> canonical value (or the normalised expression)
    numbers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> profile -> evaluated value
    lines: dict[str, int] = field(default_factory=dict)  # name -> line of its assignment
    flags: list[str] = field(default_factory=list)

    def value(self, name: str, profile: str) -> Any:
        return self.numbers.get(name, {}).get(profile)


def _assignments(tree: ast.Module) -> Iterable[tuple[str, ast.expr, int]]:
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            yield stmt.targets[0].id, stmt.value, stmt.lineno
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            yield stmt.target.id, stmt.value, stmt.lineno


def _profile_flags(tree: ast.Module) -> list[str]:
    """Names used as the condition of `A if FLAG else B` in module-level assignments whose own value is not
    a constant (CUDA = torch.cuda.is_available()): each one splits the file into two device profiles."""
    opaque, flags = set(), []
    for name, value, _ in _assignments(tree):
        try:
            _evaluate(value, {})
        except _Opaque:
            opaque.add(name)
    for _, value, _ in _assignments(tree):
        for node in ast.walk(value):
            if isinstance(node, ast.IfExp) and isinstance(node.test, ast.Name) and node.test.id in opaque \
                    and node.test.id not in flags:
                flags.append(node.test.id)
    return flags[:MAX_PROFILE_FLAGS]


def profile_names(flags: list[str]) -> list[tuple[str, dict[str, bool]]]:
    """(name, flag values) per profile: 'CUDA' and 'not CUDA' for one flag; 'default' without flags."""
    if not flags:
        return [(DEFAULT_PROFILE, {})]
    out = []
    for combo in itertools.product((True, False), repeat=len(flags)):
        name = ", ".join(flag if on else f"not {flag}" for flag, on in zip(flags, combo, strict=True))
        out.append((name, dict(zip(flags, combo, strict=True))))
    return out


def module_constants(tree: ast.Module) -> ModuleConstants:
    flags = _profile_flags(tree)
    profiles = profile_names(flags)
    result = ModuleConstants([name for name, _ in profiles], {}, flags=flags)
    envs = {name: dict(env) for name, env in profiles}
    for name, value, line in _assignments(tree):
        if name in flags:
            continue
        result.lines[name] = line
        per_profile, numbers = {}, {}
        for profile, env in envs.items():
            try:
                evaluated = _evaluate(value, env)
            except _Opaque:
                per_profile[profile] = ast.unparse(value)
                env.pop(name, None)  # an opaque value must not leak an older constant of the same name
                continue
            env[name] = evaluated
            numbers[profile] = evaluated
            per_profile[profile] = canonical_value(evaluated)
        result.values[name] = per_profile
        if numbers:
            result.numbers[name] = numbers
    return result


# -------------------------------------------------------------------------------------------- code units


def _strip_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[1:]
    return body


def _code_digest(nodes: Iterable[ast.AST]) -> str:
    text = "\n".join(ast.dump(n, annotate_fields=False, include_attributes=False) for n in nodes)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def code_units(tree: ast.Module, source: str) -> dict[str, str]:
    """Normalised digest of every function, method and class body (methods apart from their class), and of
    the module's remaining statements (imports, the main guard): comments and docstrings do not count."""
    return {name: _segment_digest(kind, text) for name, (kind, text) in _unit_sources(tree, source).items()}


def _unit_sources(tree: ast.Module, source: str) -> dict[str, tuple[str, str]]:
    """Each unit's kind and source text (cheap to compare: equal text is equal code)."""
    lines = source.splitlines()

    def text(node: ast.AST) -> str:
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        return "\n".join(lines[start - 1 : node.end_lineno])

    units: dict[str, tuple[str, str]] = {}
    rest: list[str] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            units[stmt.name] = ("def", text(stmt))
        elif isinstance(stmt, ast.ClassDef):
            own = []
            for item in stmt.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    units[f"{stmt.name}.{item.name}"] = ("def", textwrap.dedent(text(item)))
                else:
                    own.append(textwrap.dedent(text(item)))
            header = lines[stmt.lineno - 1]
            units[stmt.name] = ("class", "\n".join([header.strip(), *own]))
        elif isinstance(stmt, ast.Assign | ast.AnnAssign):
            continue  # module constants are compared by value
        else:
            rest.append(text(stmt))
    if rest:
        units[_MODULE_UNIT] = ("module", "\n".join(rest))
    return units


@lru_cache(maxsize=4096)
def _segment_digest(kind: str, text: str) -> str:
    """Digest of one unit's code with comments, docstrings and formatting gone (the ast, dumped)."""
    if kind == "class":
        header, _, body = text.partition("\n")
        header = header.rstrip(":") + ": pass" if header.endswith(":") else header
        try:
            nodes: list[ast.AST] = [*ast.parse(header).body, *_strip_docstring(ast.parse(body).body)]
        except SyntaxError:
            return hashlib.sha256(text.encode()).hexdigest()[:12]
        return _code_digest(nodes)
    try:
        body = ast.parse(text).body
    except SyntaxError:
        return hashlib.sha256(text.encode()).hexdigest()[:12]
    if kind == "def" and body and isinstance(body[0], ast.FunctionDef | ast.AsyncFunctionDef):
        fn = body[0]
        return _code_digest([fn.args, *fn.decorator_list, *_strip_docstring(fn.body)])
    return _code_digest(_strip_docstring(body))


@lru_cache(maxsize=32)
def _analyse(text: str) -> tuple[ModuleConstants, dict[str, tuple[str, str]]]:
    """Constants and unit sources of one file (cached: the base of many edits is the same file)."""
    tree = ast.parse(text)
    return module_constants(tree), _unit_sources(tree, text)


# ---------------------------------------------------------------------------------------------- the print


@dataclass(frozen=True)
class ChangeFingerprint:
    """Constants old -> new per profile, and code units changed / added / removed, in canonical order."""

    constants: dict[str, dict[str, list[str | None]]]  # name -> profile -> [old, new] (None: absent)
    units: dict[str, list[str | None]]  # unit -> [old digest, new digest] (None: absent)

    @property
    def empty(self) -> bool:
        return not self.constants and not self.units

    def to_json(self) -> str:
        return json.dumps({"constants": self.constants, "units": self.units}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ChangeFingerprint | None:
        """The fingerprint stored with an experiment; None for an empty or unreadable field."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(dict(data.get("constants", {})), dict(data.get("units", {})))
        except (ValueError, AttributeError, TypeError):
            return None

    @property
    def key(self) -> str:
        """Equal for the same change, whatever its formatting, comments or the idea's title."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:32]

    def changed_constants(self, existing_only: bool = False) -> dict[str, dict[str, str]]:
        """name -> profile -> new value, for profiles where the value changed (`existing_only`: not added ones)."""
        out: dict[str, dict[str, str]] = {}
        for name, per_profile in self.constants.items():
            if existing_only and all(old is None for old, _ in per_profile.values()):
                continue
            changed = {p: new for p, (old, new) in per_profile.items() if old != new and new is not None}
            if changed:
                out[name] = changed
        return out

    def describe(self) -> str:
        """One line, e.g. `MATRIX_LR 0.04 -> 0.03 (CUDA), 0.05 -> 0.04 (not CUDA); code: MLP.forward changed`."""
        parts = []
        for name, per_profile in sorted(self.constants.items()):
            pairs = {(old, new) for old, new in per_profile.values()}
            if len(pairs) == 1:
                old, new = next(iter(pairs))
                parts.append(f"{name} {_shown(old)} -> {_shown(new)}")
            else:
                parts.append(f"{name} " + ", ".join(
                    f"{_shown(old)} -> {_shown(new)} ({profile})"
                    for profile, (old, new) in per_profile.items() if old != new))
        if self.units:
            how = {(True, False): "added", (False, True): "removed"}
            parts.append("code: " + ", ".join(
                f"{unit} {how.get((old is None, new is None), 'changed')}"
                for unit, (old, new) in sorted(self.units.items())))
        return "; ".join(parts) if parts else "no change to the code"


def _shown(value: str | None) -> str:
    return "(absent)" if value is None else value


def fingerprint(old_text: str, new_text: str) -> ChangeFingerprint:
    """The canonical change from `old_text` to `new_text`. SyntaxError if either does not parse."""
    (old_consts, old_sources), (new_consts, new_sources) = _analyse(old_text), _analyse(new_text)
    profiles = list(dict.fromkeys(old_consts.profiles + new_consts.profiles))
    constants: dict[str, dict[str, list[str | None]]] = {}
    for name in sorted(set(old_consts.values) | set(new_consts.values)):
        before, after = old_consts.values.get(name), new_consts.values.get(name)
        if before == after:
            continue
        constants[name] = {p: [_for_profile(before, p), _for_profile(after, p)] for p in profiles}
    units: dict[str, list[str | None]] = {}
    for name in sorted(set(old_sources) | set(new_sources)):
        before, after = old_sources.get(name), new_sources.get(name)
        if before == after:
            continue  # the same text is the same code (the common case: skip parsing it again)
        old_digest = _segment_digest(*before) if before else None
        new_digest = _segment_digest(*after) if after else None
        if old_digest != new_digest:
            units[name] = [old_digest, new_digest]
    return ChangeFingerprint(constants, units)


def _for_profile(values: dict[str, str] | None, profile: str) -> str | None:
    if values is None:
        return None
    if profile in values:
        return values[profile]
    distinct = set(values.values())  # a file without profile flags has one value for every profile
    return next(iter(distinct)) if len(distinct) == 1 else None


def fingerprint_or_none(old_text: str, new_text: str) -> ChangeFingerprint | None:
    """`fingerprint`, or None when either text does not parse (the normalised diff hash still applies)."""
    try:
        return fingerprint(old_text, new_text)
    except (SyntaxError, ValueError, RecursionError):
        return None
