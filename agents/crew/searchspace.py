"""The offline policy's search space, read from train.py: its tunable constants and known code variants.

`SearchSpace` reads train.py through its one model (`agents.trainpy`: exact positions, constants evaluated per
device profile, the branch `A if CUDA else B` each device takes) and writes edits back as search/replace blocks:
a constant set to a new value, a feature switched to another of its variants, a piece of code removed.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from agents import trainpy
from agents.crew.schemas import EditBlock


class PolicyError(ValueError):
    """Input the policy cannot work with; the message names the problem."""


DEVICES = trainpy.DEVICES
# prepare.py's device profile (docs/ARCHITECTURE.md): train.py imports these, so divisibility checks need them.
PREPARE_CONSTANTS = {"cuda": {"MAX_SEQ_LEN": 2048}, "cpu": {"MAX_SEQ_LEN": 256}}
# Never tuned: seeds, the time budget, evaluation settings, and which steps count as training time. Moving
# any of them games the measurement rather than improving the model (the guard would veto it anyway).
FROZEN_NAME_PARTS = ("SEED", "TIME", "EVAL", "EXCLUDED", "CUDA")


@dataclass(frozen=True, eq=False)
class Knob:
    """One tunable number in train.py: a CAPS constant, or one element of a tuple constant."""

    name: str  # "MATRIX_LR", or "ADAM_BETAS[1]"
    const: str
    kind: str  # a key of policy.STEPS
    value: float | int
    node: ast.expr  # the literal for this device, where an edit writes the new value
    divisor: bool  # appears as `/ NAME`: zero would divide by zero


@dataclass(frozen=True)
class Feature:
    """A piece of train.py that takes one of a few known forms; `code` must occur exactly once to be recognised."""

    name: str
    category: str
    variants: tuple[tuple[str, str, str], ...]  # (label, code, trailing comment of the line or "")
    lean: str = ""  # the label that means less code: choosing it is a simplification
    why: str = ""


@dataclass(frozen=True)
class Removal:
    """Code to delete: every pattern (regex, multiline) must match exactly once; whole-line matches vanish."""

    title: str
    sites: tuple[tuple[str, str], ...]  # (pattern, replacement; may use the pattern's groups, as \1)
    why: str


FEATURES = (
    Feature("MLP activation", "architecture", (
        ("ReLU^2", "F.relu(self.c_fc(x)).square()", "ReLU^2"),
        ("GELU", "F.gelu(self.c_fc(x))", "GELU"),
        ("SiLU", "F.silu(self.c_fc(x))", "SiLU"),
    ), why="the MLP non-linearity changes how fast a small model fits within a short budget"),
    Feature("QK-norm", "architecture", (
        ("on", "norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))", "QK-norm"),
        ("off", "apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)", ""),
    ), lean="off", why="normalising queries and keys stabilises attention logits but costs two norms per layer"),
    Feature("embedding norm", "architecture", (
        ("on", "x = x0 = norm(self.wte(idx))", ""),
        ("off", "x = x0 = self.wte(idx)", ""),
    ), lean="off", why="the embedding is initialised at unit scale already, so its norm may be redundant"),
)


REMOVALS = (
    Removal("Remove the logit soft-cap", (
        (r"^[ \t]*if LOGIT_SOFTCAP:\n[ \t]*logits = LOGIT_SOFTCAP \* torch\.tanh\(logits / LOGIT_SOFTCAP\)\n", ""),
        (r"^LOGIT_SOFTCAP = .*\n", ""),
    ), "the soft-cap guards against logit blow-up in long runs; a short run may not need it"),
    Removal("Remove the zero-init of output projections", (
        (r"^[ \t]*nn\.init\.zeros_\(block\.attn\.c_proj\.weight\).*\n", ""),
        (r"^[ \t]*nn\.init\.zeros_\(block\.mlp\.c_proj\.weight\).*\n", ""),
    ), "blocks that start as the identity may learn slower in a short budget than default-initialised ones"),
    Removal("Remove Muon's shape-dependent step scale", (
        (r"^[ \t]*scale = max\(1\.0, p\.size\(0\) / p\.size\(1\)\) \*\* 0\.5.*\n", ""),
        (r"(alpha=-[^,()]+?) \* scale\b", r"\1"),
    ), "the aspect-ratio correction only matters for very tall matrices; without it the update is simpler"),
    Removal("Drop Nesterov momentum in Muon", (
        (r"newton_schulz\(p\.grad\.lerp\(buf, [^()]+\), ", "newton_schulz(buf, "),
    ), "orthogonalising the momentum buffer itself is simpler than the Nesterov look-ahead and may do as well"),
)


class SearchSpace:
    """train.py as the policy sees it for one device: its knobs, features, removals and divisibility checks.

    Read-only once built (the preparing threads share one per version and device)."""

    def __init__(self, text: str, device: str):
        if device not in DEVICES:
            raise PolicyError(f"device must be one of {DEVICES}, not {device!r}")
        if not isinstance(text, str) or not text.strip():
            raise PolicyError("train.py text is empty")
        try:
            self.model = trainpy.read(text)
        except SyntaxError as exc:
            raise PolicyError(f"train.py does not parse (line {exc.lineno}: {exc.msg})") from exc
        self.text, self.device = text, device
        self.profile = self.model.profile(device).name
        self.constants = MappingProxyType(self._literal_constants())
        self.knobs: Mapping[str, Knob] = MappingProxyType({k.name: k for k in self._read_knobs()})
        self.checks = tuple(self._divisibility_checks())
        # feature name -> the variant train.py has; removal title -> the blocks deleting it (present ones only)
        self.features = MappingProxyType(
            {f.name: label for f in FEATURES if (label := self._find_variant(f)) is not None})
        self.removals = MappingProxyType(
            {r.title: blocks for r in REMOVALS if (blocks := self._deletion_blocks(r)) is not None})

    # ----------------------------------------------------------------- constants and knobs
    def _editable(self) -> Iterator[trainpy.Constant]:
        """CAPS constants assigned once (a constant assigned twice has no single place to edit)."""
        return (c for c in self.model.constants.values() if c.name.isupper() and c.assignments == 1)

    def _literal_constants(self) -> dict[str, Any]:
        """prepare's constants and those train.py writes as numbers for this device: what a knob change moves.
        Constants computed from others are left to `local` in the checks, so they follow a changed knob."""
        env: dict[str, Any] = dict(PREPARE_CONSTANTS[self.device])
        env.update({c.name: c.values[self.profile] for c in self._editable() if c.is_literal(self.profile)})
        return env

    def _read_knobs(self) -> Iterator[Knob]:
        used = {n.id for n in self.model.of(ast.Name) if isinstance(n.ctx, ast.Load)}
        for constant in self._editable():
            name = constant.name
            if name not in used or any(part in name for part in FROZEN_NAME_PARTS) or name not in self.constants:
                continue  # unused constants are dead code: tuning them teaches nothing
            node = constant.branches[self.profile]
            value = self.constants[name]
            divisor = re.search(rf"/\s*{name}\b", self.text) is not None
            if isinstance(node, ast.Tuple):
                for i, element in enumerate(node.elts):
                    if kind_of(name, value[i]) == "beta":
                        yield Knob(f"{name}[{i}]", name, "beta", value[i], element, divisor)
            else:
                kind = kind_of(name, value)
                if kind is not None:
                    yield Knob(name, name, kind, value, node, divisor)

    # ----------------------------------------------------------------- divisibility
    def _divisibility_checks(self) -> Iterator[tuple[ast.expr, ast.expr, Mapping[str, ast.expr]]]:
        """`A % B` tested in an `if`/`assert` where A and B resolve to constants: train.py refuses a remainder."""
        assigned: dict[str, list[ast.expr]] = {}
        for node in self.model.of(ast.Assign):
            if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                assigned.setdefault(node.targets[0].id, []).append(node.value)
        # unambiguous names, evaluated when a check needs them (so a derived size follows a changed knob)
        local = MappingProxyType({name: values[0] for name, values in assigned.items() if len(values) == 1})
        for node in self.model.of(ast.If, ast.Assert, ast.While):
            for sub in ast.walk(node.test):
                if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Mod):
                    scope = _Scope(self.constants, local)
                    try:
                        trainpy.evaluate(sub.left, scope)
                        trainpy.evaluate(sub.right, scope)
                    except trainpy.Opaque:
                        continue
                    yield sub.left, sub.right, local

    def allows(self, knob: Knob, value: float | int) -> bool:
        """Whether train.py would accept `value` for `knob` (its divisibility checks still hold)."""
        return self.accepts({knob.name: value})

    def accepts(self, values: dict[str, float | int]) -> bool:
        """Whether train.py's divisibility checks hold with these knob values (the rest as they are)."""
        env = dict(self.constants)
        for name, value in values.items():
            knob = self.knobs[name]
            if knob.name != knob.const:
                items = list(env[knob.const])
                items[int(knob.name[knob.name.index("[") + 1:-1])] = value
                env[knob.const] = tuple(items)
            else:
                env[knob.name] = value
        for left, right, local in self.checks:
            scope = _Scope(env, local)
            try:
                a, b = trainpy.evaluate(left, scope), trainpy.evaluate(right, scope)
                if not b or a % b:
                    return False
            except (ValueError, ArithmeticError, TypeError):
                return False
        return True

    # ----------------------------------------------------------------- edits
    def knob_edit(self, knob: Knob, value: float | int) -> EditBlock:
        start, end = self.span(knob)
        return _line_block(self.text, start, end, _render(knob, value))

    def with_knobs(self, values: dict[str, float | int]) -> str:
        """The text with several knobs set at once (replaced back to front, so positions stay valid)."""
        text = self.text
        for start, end, literal in sorted(((*self.span(self.knobs[n]), _render(self.knobs[n], v))
                                           for n, v in values.items()), reverse=True):
            text = text[:start] + literal + text[end:]
        return text

    def span(self, knob: Knob) -> tuple[int, int]:
        """Character positions of the knob's literal in the text."""
        return self.model.span(knob.node)

    def _find_variant(self, feature: Feature) -> str | None:
        """The label of the variant train.py has now, None if it has none of them (or several)."""
        found = [label for label, code, _ in feature.variants if self.text.count(code) == 1]
        return found[0] if len(found) == 1 else None

    def feature_edit(self, feature: Feature, target: str) -> EditBlock:
        current = self.features.get(feature.name)
        if current is None:
            raise PolicyError(f"train.py has no recognisable {feature.name}")
        old = next(v for v in feature.variants if v[0] == current)
        new = next((v for v in feature.variants if v[0] == target), None)
        if new is None:
            raise PolicyError(f"{feature.name} has no variant {target!r}")
        start = self.text.index(old[1])
        line_end = self.text.find("\n", start)
        line_end = len(self.text) if line_end < 0 else line_end
        rest = self.text[start + len(old[1]):line_end]
        if old[2] and rest.rstrip().endswith(f"# {old[2]}"):  # the comment named the old form
            rest = rest.rstrip()[: -len(f"# {old[2]}")].rstrip()
            rest += f"  # {new[2]}" if new[2] else ""
        return _line_block(self.text, start, line_end, new[1] + rest)

    def _deletion_blocks(self, removal: Removal) -> tuple[EditBlock, ...] | None:
        """The blocks deleting `removal`, each built against the text the previous ones leave; None if absent."""
        text, blocks = self.text, []
        for pattern, replacement in removal.sites:
            matches = list(re.finditer(pattern, text, flags=re.M))
            if len(matches) != 1:
                return None
            m = matches[0]
            block = _line_block(text, m.start(), m.end(), m.expand(replacement))
            blocks.append(block)
            text = text.replace(block.search, block.replace, 1)
        return tuple(blocks)


@functools.lru_cache(maxsize=16)
def read_train_py(text: str, device: str) -> SearchSpace:
    """The search space of (text, device), cached: every role call reads the same few texts again."""
    return SearchSpace(text, device)


class _Scope(Mapping[str, Any]):
    """Names a divisibility check sees: the constants given, then train.py's unambiguous assignments, each
    evaluated when asked for (a name that needs itself is unknown)."""

    def __init__(self, env: Mapping[str, Any], local: Mapping[str, ast.expr]):
        self.env, self.local = env, local
        self._open: set[str] = set()

    def __getitem__(self, name: str) -> Any:
        if name in self.env:
            return self.env[name]
        if name not in self.local or name in self._open:
            raise KeyError(name)
        self._open.add(name)
        try:
            return trainpy.evaluate(self.local[name], self)
        finally:
            self._open.discard(name)

    def __iter__(self) -> Iterator[str]:
        return iter({**self.local, **self.env})

    def __len__(self) -> int:
        return len({**self.local, **self.env})


def kind_of(name: str, value: Any) -> str | None:
    """How a constant moves, from its name and value; None for what the policy leaves alone."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        power_of_two = value > 0 and value & (value - 1) == 0
        if power_of_two and ("BATCH" in name or value >= 16):
            return "pow2"
        return "int" if value >= 1 else None
    if ("MOMENTUM" in name or "BETA" in name) and 0 < value < 1:
        return "beta"
    if 0 <= value <= 1 and any(w in name for w in ("RATIO", "FRAC", "DECAY", "DROPOUT")):
        return "linear"
    return "log" if value > 0 else None


def _render(knob: Knob, value: float | int) -> str:
    """The literal to write into train.py, keeping the `2**k` form where the file used it."""
    node = knob.node
    if isinstance(value, int):
        written_as_power = isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) \
            and isinstance(node.left, ast.Constant) and node.left.value == 2
        if written_as_power and value > 0 and value & (value - 1) == 0:
            return f"2**{value.bit_length() - 1}"
        return str(value)
    return repr(float(value))


def _line_block(text: str, start: int, end: int, replacement: str) -> EditBlock:
    """Replace text[start:end] by `replacement`, as a block of whole lines made long enough to be unique."""
    first = text.rfind("\n", 0, start) + 1
    last = text.find("\n", max(end - 1, start))
    last = len(text) if last < 0 else last + 1
    if end > start and text[end - 1] == "\n":  # the span already ends a line
        last = end
    while True:
        search = text[first:last]
        if text.count(search) == 1 or (first == 0 and last == len(text)):
            break
        if first > 0:
            first = text.rfind("\n", 0, first - 1) + 1
        else:
            nxt = text.find("\n", last)
            last = len(text) if nxt < 0 else nxt + 1
    return EditBlock(search=search, replace=text[first:start] + replacement + text[end:last])
