"""One model of train.py, shared by the crew, the bench and the memory: parsed once per version.

`read(text)` returns a `TrainPy`, an immutable snapshot of one version of the file:

* its profile flags (`CUDA` in `X = A if CUDA else B`, where `CUDA` is not itself a constant) and the device
  profiles they make ("CUDA", "not CUDA"; "default" for a file without flags);
* its module-level constants (every `NAME = expr` at the top level): per profile the evaluated value, one
  canonical spelling (`0.6 * 1.5` and `0.9` both read "0.9"), the branch of the expression that profile takes;
  the expression as written, its line and the comment written beside it;
* its code units (functions, methods, classes, and the module's other statements) with digests in which
  comments, docstrings and formatting do not count.

Snapshots are cached by the text's hash, so every reader of one version (search space, fingerprint, guard,
memory) shares one parse. Threads share them too: nothing in a snapshot changes after `read` returns; the
syntax tree inside is read-only by contract (`private_tree` gives a tree a caller may change).

Every parse happens under one lock: on Python 3.11 `ast.parse` from several threads at once can raise
`SystemError: AST constructor recursion depth mismatch` (CPython gh-106905), and the crew prepares candidates
in several threads. Parses outside this package race with ours too (the standard library's `traceback` parses
source lines to place its carets whenever an exception is formatted, in any thread), so on Pythons before 3.13
importing this module routes `ast.parse` itself through the same lock.
This module imports nothing from the rest of the package, so any part may import it.
"""

from __future__ import annotations

import ast
import bisect
import functools
import hashlib
import io
import itertools
import math
import operator
import sys
import threading
import tokenize
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

EDITABLE_FILE = "train.py"  # the one file the crew edits
DEVICES = ("cpu", "cuda")
DEVICE_FLAG = "CUDA"  # the flag that tells a GPU from a CPU (train.py: `CUDA = torch.cuda.is_available()`)
DEFAULT_PROFILE = "default"
MAX_PROFILE_FLAGS = 3  # 2**3 profiles at most; further flags are treated as opaque values
MODULE_UNIT = "<module>"
CACHE_VERSIONS = 32  # versions kept (the base and a few candidates per worker); about 1 MB each
MAX_DEPTH = 100  # expression nesting evaluated; deeper is opaque


class Opaque(ValueError):
    """The expression does not evaluate from constants alone (a call into torch, an unknown name...)."""


# ------------------------------------------------------------------------------------------ evaluation

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
_LITERAL_NODES = (ast.Constant, ast.UnaryOp, ast.BinOp, ast.Tuple, ast.List, ast.operator, ast.unaryop,
                  ast.expr_context)


def evaluate(node: ast.AST, env: Mapping[str, Any], depth: int = 0) -> Any:
    """The value of a constant expression (numbers, strings, arithmetic, tuples, comparisons, `A if F else B`,
    int/float/round/min/max/abs/bool); names are looked up in `env`. Raises `Opaque` for anything else."""
    if depth > MAX_DEPTH:
        raise Opaque("expression nests too deeply")
    try:
        return _evaluate(node, env, depth + 1)
    except (ArithmeticError, TypeError) as exc:
        raise Opaque(str(exc)) from None


def _evaluate(node: ast.AST, env: Mapping[str, Any], depth: int) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float | str | bool | type(None)):
        return node.value
    if isinstance(node, ast.Tuple | ast.List):
        return tuple(evaluate(e, env, depth) for e in node.elts)
    if isinstance(node, ast.Name):
        try:
            return env[node.id]
        except KeyError:
            raise Opaque(node.id) from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](evaluate(node.operand, env, depth))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = evaluate(node.left, env, depth), evaluate(node.right, env, depth)
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 1e6):
            raise Opaque("power too large to evaluate")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.IfExp):
        return evaluate(node.body if evaluate(node.test, env, depth) else node.orelse, env, depth)
    if isinstance(node, ast.BoolOp):
        values = [evaluate(v, env, depth) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
        return _COMPARE[type(node.ops[0])](evaluate(node.left, env, depth), evaluate(node.comparators[0], env, depth))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _CALLS \
            and not node.keywords:
        try:
            return _CALLS[node.func.id](*(evaluate(a, env, depth) for a in node.args))
        except ValueError as exc:
            raise Opaque(str(exc)) from None
    raise Opaque(type(node).__name__)


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


def is_literal(node: ast.AST) -> bool:
    """Written as a number or a tuple of numbers, arithmetic allowed (`2**19`, `(0.8, 0.95)`), no names or calls."""
    return all(isinstance(n, _LITERAL_NODES) for n in ast.walk(node))


# ------------------------------------------------------------------------------------------ the snapshot


@dataclass(frozen=True)
class Profile:
    """One device profile: a value for each profile flag."""

    name: str  # "CUDA", "not CUDA", "CUDA, not BF16"; "default" without flags
    flags: Mapping[str, bool]


@dataclass(frozen=True, eq=False)
class Constant:
    """A module-level `NAME = expr`, evaluated per profile (the last assignment where a name has several)."""

    name: str
    line: int  # first line of the assignment
    end_line: int
    expression: ast.expr  # the right-hand side as written (read-only)
    source: str  # its text, as written
    comment: str  # the comment on the assignment's line(s), without '#'; "" for none
    values: Mapping[str, Any]  # profile -> value; absent where the expression is not constant there
    spellings: Mapping[str, str]  # profile -> canonical value, or the normalised expression where opaque
    branches: Mapping[str, ast.expr]  # profile -> the part of the expression it takes (`A if CUDA else B`)
    assignments: int  # module-level assignments of the name: only 1 leaves one place to edit

    def is_literal(self, profile: str) -> bool:
        """Whether this profile's branch is written as a number (so setting it means rewriting that literal)."""
        return profile in self.values and is_literal(self.branches[profile])


@dataclass(frozen=True, eq=False)
class CodeUnit:
    """A function, a method (`Class.method`), a class's own statements, or the module's remaining statements."""

    name: str  # "norm", "GPT.forward", "GPT", "<module>"
    kind: str  # "function" | "method" | "class" | "module"
    line: int
    end_line: int
    digest: str  # equal for equal code: comments, docstrings and formatting do not count


@dataclass(frozen=True, eq=False)
class TrainPy:
    """One version of train.py, read once. Shared between threads: treat `tree` and its nodes as read-only."""

    text: str
    sha256: str
    tree: ast.Module
    nodes: tuple[ast.AST, ...]  # ast.walk order, walked once
    lines: tuple[str, ...]
    flags: tuple[str, ...]
    profiles: tuple[Profile, ...]
    constants: Mapping[str, Constant]  # in the order of the file
    units: Mapping[str, CodeUnit]
    _by_type: Mapping[type, tuple[ast.AST, ...]]
    _line_starts: tuple[int, ...]

    def of(self, *kinds: type) -> tuple:
        """The nodes of these exact AST types, in walk order."""
        if len(kinds) == 1:
            return self._by_type.get(kinds[0], ())
        return tuple(n for n in self.nodes if type(n) in kinds)

    def profile(self, device: str) -> Profile:
        """The profile a device runs: `CUDA` true on "cuda", false on "cpu"; other flags take their first value."""
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
        wanted = device == "cuda"
        return next(p for p in self.profiles if p.flags.get(DEVICE_FLAG, wanted) == wanted)

    def values(self, profile: str) -> dict[str, Any]:
        """name -> value of every constant that evaluates in this profile."""
        return {name: c.values[profile] for name, c in self.constants.items() if profile in c.values}

    def offset(self, line: int, col_bytes: int) -> int:
        """Character index of an AST position (1-based line, UTF-8 byte column)."""
        return _offset(self.text, self._line_starts, line, col_bytes)

    def span(self, node: ast.AST) -> tuple[int, int]:
        """Character positions of a node in the text: text[start:end] is its source."""
        return self.offset(node.lineno, node.col_offset), self.offset(node.end_lineno, node.end_col_offset)

    def line_of(self, offset: int) -> int:
        """1-based line of a character index."""
        return bisect.bisect_right(self._line_starts, offset)


# ------------------------------------------------------------------------------------------ reading

_lock = threading.RLock()  # every parse in the process, and the cache (re-entrant: a parse may format a traceback)


def _serialise_every_parse() -> None:
    """Route `ast.parse` through `_lock`, wherever it is called from (CPython gh-106905 is fixed from 3.13)."""
    if sys.version_info >= (3, 13) or getattr(ast.parse, "serialised_by", None) is _lock:
        return
    unlocked = ast.parse

    @functools.wraps(unlocked)
    def parse(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            return unlocked(*args, **kwargs)

    parse.serialised_by = _lock  # type: ignore[attr-defined]
    ast.parse = parse


_serialise_every_parse()
_cache: OrderedDict[str, TrainPy] = OrderedDict()


def read(text: str) -> TrainPy:
    """The model of one version of train.py (cached by its hash). SyntaxError if it does not parse."""
    if not isinstance(text, str):
        raise TypeError(f"train.py text must be a str, not {type(text).__name__}")
    key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    with _lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
        model = _build(text, key)
        _cache[key] = model
        if len(_cache) > CACHE_VERSIONS:
            _cache.popitem(last=False)
        return model


def private_tree(text: str) -> ast.Module:
    """A fresh syntax tree of `text` that the caller owns and may change (parsed under the same lock)."""
    with _lock:
        return ast.parse(text)


def _build(text: str, key: str) -> TrainPy:
    tree = ast.parse(text)
    nodes = tuple(ast.walk(tree))
    by_type: dict[type, list[ast.AST]] = {}
    for node in nodes:
        by_type.setdefault(type(node), []).append(node)
    flags, profiles, constants = constants_of(tree, text)
    return TrainPy(
        text=text, sha256=key, tree=tree, nodes=nodes, lines=tuple(text.splitlines()), flags=flags,
        profiles=profiles, constants=MappingProxyType(constants), units=MappingProxyType(_units(tree)),
        _by_type=MappingProxyType({t: tuple(ns) for t, ns in by_type.items()}), _line_starts=_line_starts(text),
    )


def _line_starts(text: str) -> tuple[int, ...]:
    starts = [0]
    for line in text.splitlines(keepends=True)[:-1]:
        starts.append(starts[-1] + len(line))
    return tuple(starts)


def _offset(text: str, starts: tuple[int, ...], line: int, col_bytes: int) -> int:
    start = starts[line - 1]
    end = starts[line] if line < len(starts) else len(text)
    return start + len(text[start:end].encode()[:col_bytes].decode(errors="ignore"))


def assignments(tree: ast.Module) -> Iterator[tuple[str, ast.stmt, ast.expr]]:
    """(name, statement, value) of every module-level `NAME = expr` and `NAME: T = expr`, in order."""
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            yield stmt.targets[0].id, stmt, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            yield stmt.target.id, stmt, stmt.value


def _profile_flags(tree: ast.Module) -> tuple[str, ...]:
    """Names used as the condition of `A if FLAG else B` in module-level assignments whose own value is not
    a constant (CUDA = torch.cuda.is_available()): each one splits the file into two device profiles."""
    opaque, flags = set(), []
    for name, _, value in assignments(tree):
        try:
            evaluate(value, {})
        except Opaque:
            opaque.add(name)
    for _, _, value in assignments(tree):
        for node in ast.walk(value):
            if isinstance(node, ast.IfExp) and isinstance(node.test, ast.Name) and node.test.id in opaque \
                    and node.test.id not in flags:
                flags.append(node.test.id)
    return tuple(flags[:MAX_PROFILE_FLAGS])


def profile_names(flags: list[str]) -> list[tuple[str, dict[str, bool]]]:
    """(name, flag values) per profile: 'CUDA' and 'not CUDA' for one flag; 'default' without flags."""
    if not flags:
        return [(DEFAULT_PROFILE, {})]
    out = []
    for combo in itertools.product((True, False), repeat=len(flags)):
        name = ", ".join(flag if on else f"not {flag}" for flag, on in zip(flags, combo, strict=True))
        out.append((name, dict(zip(flags, combo, strict=True))))
    return out


def _branch(value: ast.expr, env: Mapping[str, Any]) -> ast.expr:
    """The part of `A if TEST else B` (nested or not) that a profile takes, where TEST evaluates there (a profile
    flag, or a constant); the expression itself otherwise."""
    while isinstance(value, ast.IfExp):
        try:
            test = evaluate(value.test, env)
        except Opaque:
            break
        value = value.body if test else value.orelse
    return value


def _comment(lines: list[str], first: int, last: int) -> str:
    """The comments on lines first..last (1-based) of a statement, without '#' (a '#' in a string is not one)."""
    source = "".join(lines[first - 1 : last])
    try:
        found = [t.string.lstrip("#").strip() for t in tokenize.generate_tokens(io.StringIO(source).readline)
                 if t.type == tokenize.COMMENT]
    except (tokenize.TokenError, SyntaxError):
        return ""  # lines shared with another statement: comments are a courtesy
    return " ".join(found)


def constants_of(tree: ast.Module, text: str = "") -> tuple[tuple[str, ...], tuple[Profile, ...], dict[str, Constant]]:
    """The profile flags, profiles and constants of a tree (its source `text` gives comments and spelling as
    written). For a tree parsed elsewhere; `read(text).constants` is the same, parsed once and shared."""
    flags = _profile_flags(tree)
    profiles = tuple(Profile(name, MappingProxyType(env)) for name, env in profile_names(list(flags)))
    return flags, profiles, _constants(tree, text, flags, profiles)


def _constants(tree: ast.Module, text: str, flags: tuple[str, ...], profiles: tuple[Profile, ...]) -> dict[str, Constant]:
    lines, starts = text.splitlines(keepends=True), _line_starts(text)
    envs: dict[str, dict[str, Any]] = {p.name: dict(p.flags) for p in profiles}
    counts: dict[str, int] = {}
    found: dict[str, Constant] = {}
    for name, stmt, value in assignments(tree):
        if name in flags:
            continue
        counts[name] = counts.get(name, 0) + 1
        values, spellings, branches = {}, {}, {}
        for profile in profiles:
            env = envs[profile.name]
            branches[profile.name] = _branch(value, env)
            try:
                evaluated = evaluate(value, env)
            except Opaque:
                spellings[profile.name] = ast.unparse(value)
                env.pop(name, None)  # an opaque value must not leak an older constant of the same name
                continue
            env[name] = evaluated
            values[profile.name] = evaluated
            spellings[profile.name] = canonical_value(evaluated)
        found.pop(name, None)  # a later assignment takes the earlier one's place, at its own position
        end_line = stmt.end_lineno or stmt.lineno
        source = text[_offset(text, starts, value.lineno, value.col_offset):
                      _offset(text, starts, value.end_lineno, value.end_col_offset)] if text else ast.unparse(value)
        found[name] = Constant(
            name=name, line=stmt.lineno, end_line=end_line, expression=value, source=source,
            comment=_comment(lines, stmt.lineno, end_line) if text else "",
            values=MappingProxyType(values), spellings=MappingProxyType(spellings),
            branches=MappingProxyType(branches), assignments=counts[name])
    return found  # the last assignment of a name is built last, so it carries the full count


# ------------------------------------------------------------------------------------------ code units


def _units(tree: ast.Module) -> dict[str, CodeUnit]:
    """Every function, method and class (a class's digest covers its own statements, not its methods), and the
    module's statements that are neither (imports, the main guard): module constants are compared by value."""
    units: dict[str, CodeUnit] = {}
    rest: list[ast.stmt] = []

    def first_line(node: ast.AST) -> int:
        return min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])

    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            units[stmt.name] = CodeUnit(stmt.name, "function", first_line(stmt), stmt.end_lineno, _function_digest(stmt))
        elif isinstance(stmt, ast.ClassDef):
            own = []
            for item in stmt.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    name = f"{stmt.name}.{item.name}"
                    units[name] = CodeUnit(name, "method", first_line(item), item.end_lineno, _function_digest(item))
                else:
                    own.append(item)
            # the header as `class Name(bases): pass` (decorators apart), then the class's own statements
            header = ast.ClassDef(name=stmt.name, bases=stmt.bases, keywords=stmt.keywords, body=[ast.Pass()],
                                  decorator_list=[])
            units[stmt.name] = CodeUnit(stmt.name, "class", first_line(stmt), stmt.end_lineno,
                                        _digest([header, *_without_docstring(own)]))
        elif not isinstance(stmt, ast.Assign | ast.AnnAssign):
            rest.append(stmt)
    if rest:
        units[MODULE_UNIT] = CodeUnit(MODULE_UNIT, "module", rest[0].lineno, rest[-1].end_lineno,
                                      _digest(_without_docstring(rest)))
    return units


def _function_digest(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    return _digest([fn.args, *fn.decorator_list, *_without_docstring(fn.body)])


def _without_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[1:]
    return body


def _digest(nodes: Iterable[ast.AST]) -> str:
    text = "\n".join(ast.dump(n, annotate_fields=False, include_attributes=False) for n in nodes)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
