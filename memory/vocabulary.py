"""What train.py calls its knobs, learned from train.py itself: names, comments and how the code uses them.

`MATRIX_LR` is "matrix" + "learning rate" by its name, and also "the Muon learning rate" because the code
passes it as `lr=` to `Muon(...)`; `ROPE_BASE` is "the rotary base" because it is the `base` parameter of
`rotary_tables`; `ASPECT_RATIO`'s comment `model width = DEPTH * ASPECT_RATIO` lets an idea that speaks of
the model width be read as a change of ASPECT_RATIO. The general synonyms of the field come from
`memory.lexicon`; nothing here is specific to one train.py.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from memory.fingerprint import module_constants
from memory.lexicon import FILLER_PHRASES, GENERIC, MULTI_PARTS, PARTS, QUANTITIES, RESTRICTIVE
from memory.techniques import FAMILIES, SWITCHES
from memory.wording import PhraseMatcher, normalise, phrase_table, tokenize

PART_CONCEPTS = frozenset(PARTS) | {"adamw", "muon"}  # where a change applies: a part, or an optimizer's group
_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")
_FORMULA = re.compile(r"^\s*([A-Za-z][\w\s-]*?)\s*=\s*([^,;()]+(?:\([^)]*\))?[^,;]*)")


def lexicon_matcher(extra: dict[str, set[str]] | None = None) -> PhraseMatcher:
    table = phrase_table((QUANTITIES, ""), (PARTS, ""), (SWITCHES, "switch:"),
                         *[(members, f"{family}:") for family, members in FAMILIES.items()])
    for concepts, phrases in MULTI_PARTS.items():
        for phrase in phrases:
            table.setdefault(phrase, set()).update(concepts)
    for phrase in FILLER_PHRASES:
        table[phrase] = set()
    for phrase in FAMILIES["schedule"]["linear"] + FAMILIES["schedule"]["cosine"]:  # "linear decay" is a warmdown
        if any(word in phrase for word in ("decay", "cooldown", "warmdown", "anneal")):
            table[phrase].add("warmdown")
    for phrase, concepts in (extra or {}).items():
        table.setdefault(phrase, set()).update(concepts)
    return PhraseMatcher(table)


def concepts_of(text: str, matcher: PhraseMatcher) -> list[frozenset[str]]:
    """The concepts named in a text, one set per phrase found."""
    return [c for _, _, c in matcher.match(tokenize(normalise(text)))]


@dataclass
class Knob:
    """A module-level numeric constant of train.py and the ways an idea may name it."""

    name: str
    values: dict[str, Any]  # profile -> current value (a number, or a tuple of numbers)
    concepts: frozenset[str]  # every concept its name, comment and uses bring
    aliases: list[frozenset[str]]  # concept sets, any one of which, fully named, means this knob
    scope: frozenset[str] = frozenset()  # the parts / optimizer groups it acts on
    elements: tuple[str, ...] = ()  # for a tuple: the concept naming each element (beta1, beta2)
    off_value: float = 0.0

    def current(self, profile: str) -> Any:
        return self.values.get(profile)


@dataclass
class Derived:
    """A quantity train.py's comments define from constants: `model width = DEPTH * ASPECT_RATIO`."""

    concepts: frozenset[str]
    expression: ast.expr
    solve_for: str


@dataclass
class Vocabulary:
    knobs: dict[str, Knob]
    derived: list[Derived]
    present: frozenset[str]  # family members and switches train.py has now (for "replace X with Y")
    profiles: list[str]
    matcher: PhraseMatcher
    digest: str = ""
    identifiers: dict[str, frozenset[str]] = field(default_factory=dict)

    @property
    def optimizer_parts(self) -> dict[str, frozenset[str]]:
        """The parts each optimizer of train.py updates, from the knobs configuring it (AdamW: embeddings...)."""
        out: dict[str, set[str]] = {}
        for knob in self.knobs.values():
            for optimizer in knob.scope & {"adamw", "muon"}:
                out.setdefault(optimizer, set()).update(knob.scope - {"adamw", "muon"})
        return {k: frozenset(v) for k, v in out.items() if v}

    def value_env(self, profile: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        env = {name: knob.current(profile) for name, knob in self.knobs.items() if knob.current(profile) is not None}
        env.update(overrides or {})
        return env


# ------------------------------------------------------------------------------------------------ learning


def _name_concepts(name: str, matcher: PhraseMatcher) -> list[frozenset[str]]:
    return concepts_of(name.replace("_", " "), matcher)


def _required(name_sets: list[frozenset[str]]) -> frozenset[str]:
    """The concepts a mention must name: the knob's head noun (its last non-generic phrase) and any restrictive
    qualifier (eval, device, embedding...). `MUON_MOMENTUM` is "momentum"; `EVAL_BATCH_SIZE` is eval + batch."""
    plain = [frozenset(c for c in concepts if ":" not in c) for concepts in name_sets]
    required = {c for concepts in plain for c in concepts if c in RESTRICTIVE}
    heads = [concepts - GENERIC for concepts in plain if concepts - GENERIC]
    if heads:
        required |= heads[-1]
    return frozenset(required or {c for concepts in plain for c in concepts})


def _comment_of(lines: list[str], lineno: int) -> str:
    line = lines[lineno - 1] if 0 < lineno <= len(lines) else ""
    return line.split("#", 1)[1].strip() if "#" in line else ""


class _Uses(ast.NodeVisitor):
    """Collects, for each constant, the concepts of the places it is used: enclosing class, the call it is an
    argument of (and the parameter it binds), and the identifiers beside it in that call or dict."""

    def __init__(self, names: set[str], params: dict[str, list[str]]):
        self.names, self.params = names, params
        self.stack: list[str] = []
        self.calls: list[ast.Call] = []
        self.uses: dict[str, list[tuple[list[str], list[str], list[str], list[str]]]] = {}

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.stack.append(node.name)
        self.generic_visit(node)
        self.stack.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.stack.append(node.name)
        self.generic_visit(node)
        self.stack.pop()

    def visit_Call(self, node: ast.Call) -> None:
        self.calls.append(node)
        self.generic_visit(node)
        self.calls.pop()

    def visit_Name(self, node: ast.Name) -> None:
        if node.id not in self.names or not self.stack:
            return
        binding, callee, group, args = [], [], [], []
        for call in reversed(self.calls):
            func = _dotted(call.func)
            binding += [kw.arg for kw in call.keywords if kw.arg and _contains(kw.value, node)]
            if func in ("dict", "list", "tuple", "float", "int"):
                if any(kw.arg == "params" for kw in call.keywords):  # an optimizer's parameter group
                    group += _identifiers(call, exclude=node.id)
                continue
            callee.append(func.rsplit(".", 1)[-1])
            for index, arg in enumerate(call.args):
                if _contains(arg, node):
                    params = self.params.get(func.rsplit(".", 1)[-1], [])
                    if index < len(params):
                        binding.append(params[index])
                else:
                    args += _identifiers(arg, exclude=node.id)
            break
        self.uses.setdefault(node.id, []).append((self.stack[:1] + binding, callee, group, args))


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _contains(tree: ast.AST, target: ast.AST) -> bool:
    return any(n is target for n in ast.walk(tree))


def _identifiers(tree: ast.AST, exclude: str) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id != exclude:
            out.append(node.id)
        elif isinstance(node, ast.Attribute):
            out.append(node.attr)
    return out


def _function_params(tree: ast.Module) -> dict[str, list[str]]:
    params = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            params[node.name] = [a.arg for a in node.args.args]
        elif isinstance(node, ast.ClassDef):
            init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
            if init is not None:
                params[node.name] = [a.arg for a in init.args.args[1:]]
    return params


def _class_parts(tree: ast.Module, matcher: PhraseMatcher) -> dict[str, frozenset[str]]:
    """Attributes a class builds in __init__ (self.c_q = ...) belong to the parts its name names."""
    out: dict[str, frozenset[str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", node.name)
        parts = frozenset(c for cs in concepts_of(words, matcher) for c in cs if c in PARTS)
        if not parts:
            continue
        for item in ast.walk(node):
            if isinstance(item, ast.Attribute) and isinstance(item.value, ast.Name) and item.value.id == "self" \
                    and isinstance(item.ctx, ast.Store):
                out.setdefault(item.attr, parts)
    return out


def _schedule_shape(source: str, knobs: dict[str, Knob]) -> frozenset[str]:
    """The learning-rate schedule train.py has, from its code: a warmup and a warmdown knob mean warmup, a stable
    phase, then decay (WSD); a function reading the warmdown with no cosine, square root or exponential in it
    decays linearly."""
    phases = {name for name, knob in knobs.items() if knob.concepts & {"warmup", "warmdown"}}
    if not any("warmdown" in knobs[n].concepts for n in phases):
        return frozenset()
    found = {"schedule:wsd"} if len(phases) >= 2 else set()
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return frozenset(found)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and phases & {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}:
            called = {getattr(n.func, "attr", getattr(n.func, "id", "")) for n in ast.walk(node)
                      if isinstance(n, ast.Call)}
            if not called & {"cos", "sqrt", "exp", "pow", "rsqrt"} and not any(
                    isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow) for n in ast.walk(node)):
                found.add("schedule:linear")
    return frozenset(found)


def _present_features(source: str, matcher: PhraseMatcher) -> frozenset[str]:
    """Family members and techniques train.py has: named in its code or comments, and not switched off there
    (`bias=False`, "untied from wte")."""
    found: set[str] = set()
    for line in source.splitlines():
        tokens = tokenize(normalise(line))
        for s, e, concepts in matcher.match(tokens):
            after = [t.text for t in tokens[e : e + 2]]
            if after == ["=", "fals"] or s and tokens[s - 1].text in ("not", "no", "without"):
                continue
            found.update(c for c in concepts if ":" in c)
    return frozenset(found)


def _derived(comment: str, owner: str, names: set[str], matcher: PhraseMatcher) -> Derived | None:
    match = _FORMULA.match(comment)
    if not match:
        return None
    left, right = match.group(1), match.group(2).strip()
    try:
        expression = ast.parse(right, mode="eval").body
    except SyntaxError:
        return None
    used = {n.id for n in ast.walk(expression) if isinstance(n, ast.Name)}
    if owner not in used or not used <= names:
        return None
    concepts = frozenset(c for cs in concepts_of(left, matcher) for c in cs if ":" not in c) - {"size"}
    return Derived(concepts, expression, owner) if concepts else None


@lru_cache(maxsize=16)
def learn_vocabulary(source: str) -> Vocabulary:
    """The vocabulary of one train.py (cached by its text)."""
    tree = ast.parse(source)
    base = lexicon_matcher()
    class_parts = _class_parts(tree, base)
    identifiers = {name: parts for name, parts in class_parts.items() if not concepts_of(name.replace("_", " "), base)}
    matcher = lexicon_matcher({name.replace("_", " "): set(parts) for name, parts in identifiers.items()})
    constants = module_constants(tree)
    lines = source.splitlines()
    names = {n for n in constants.numbers if _NAME.match(n)}
    uses = _Uses(names, _function_params(tree))
    uses.visit(tree)
    knobs: dict[str, Knob] = {}
    derived: list[Derived] = []
    for name in sorted(names):
        values = constants.numbers[name]
        if not all(_numeric(v) for v in values.values()):
            continue
        name_sets = _name_concepts(name, matcher)
        concepts = {c for cs in name_sets for c in cs}
        aliases = [_required(name_sets)]
        scope: set[str] = set()
        comment = _comment_of(lines, constants.lines.get(name, 0))
        formula = _derived(comment, name, names, matcher)
        if formula is not None:
            derived.append(formula)
        elif comment:
            comment_sets = concepts_of(re.split(r"[(;:,]", comment)[0], matcher)
            concepts.update(c for cs in comment_sets for c in cs)
            specific = frozenset(c for cs in comment_sets for c in cs if c not in GENERIC and ":" not in c)
            if len(specific) >= 2:
                aliases.append(specific)
        for binding, callee, group, args in uses.uses.get(name, []):
            def concepts_in(words: list[str]) -> set[str]:
                return {c for word in words for cs in _name_concepts(word, matcher) for c in cs}

            bound, called = concepts_in(binding), concepts_in(callee)
            # the parameters an optimizer call or group is given are where the knob acts
            beside = concepts_in(group) | (concepts_in(args) if called & {"muon", "adamw", "optimizer"} else set())
            concepts.update(bound | called | beside)
            scope.update(c for c in called | beside if c in PART_CONCEPTS)
            head = frozenset(c for c in bound if c not in GENERIC and c not in PARTS and ":" not in c)
            for qualifier in called | beside:
                if head and qualifier in PART_CONCEPTS:
                    aliases.append(head | {qualifier})
        elements: tuple[str, ...] = ()
        sample = next(iter(values.values()))
        if isinstance(sample, tuple) and "beta" in concepts and len(sample) == 2:
            elements = ("beta1", "beta2")
        off = 0.0
        knobs[name] = Knob(name, dict(values), frozenset(concepts), _distinct(aliases), frozenset(scope), elements, off)
    _drop_shared_aliases(knobs)
    present = _present_features(source, matcher) | _schedule_shape(source, knobs)
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    return Vocabulary(knobs, derived, present, constants.profiles, matcher, digest, identifiers)


def _numeric(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, tuple) and bool(value) and all(_numeric(v) for v in value)


def _distinct(aliases: Iterable[frozenset[str]]) -> list[frozenset[str]]:
    return list(dict.fromkeys(a for a in aliases if a))


def _drop_shared_aliases(knobs: dict[str, Knob]) -> None:
    """An alias learned from use that several knobs share (AdamW + lr) names none of them."""
    counts: dict[frozenset[str], int] = {}
    for knob in knobs.values():
        for alias in knob.aliases:
            counts[alias] = counts.get(alias, 0) + 1
    for knob in knobs.values():
        knob.aliases = [knob.aliases[0]] + [a for a in knob.aliases[1:] if counts[a] == 1]


def default_train_py(memory_path: Path) -> str:
    """The train.py of the repository the memory belongs to (`<repo>/.autoresearch/memory`), else the one in the
    working directory, else the project's own; "" when there is none."""
    shipped = Path(__file__).resolve().parents[1] / "train.py"  # the project's own, in a source checkout
    for candidate in (memory_path.parent.parent / "train.py", Path.cwd() / "train.py", shipped):
        try:
            return candidate.read_text()
        except OSError:
            continue
    return ""
