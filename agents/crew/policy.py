"""The offline search policy: a deterministic optimiser over train.py that plays every role without an LLM.

It is the default when no API key is set and the baseline every LLM crew is compared against. In a fixed
search space classic hyperparameter optimisation beats LLM agents (arXiv 2603.24647), so this is a real
optimiser, kept small:

* The search space is read from train.py itself: its CAPS constants, parsed with `ast` (exact positions, the
  branch `A if CUDA else B` for the current device), and a short catalogue of structural variants whose code it
  recognises (activation, QK-norm, ...) or can delete (a simplification).
* Each constant moves on a grid: learning rates and scales by factors of 2**(1/4), ratios by 0.05, betas by
  factors of 2**(1/4) on 1 - beta, integers by 1, batch sizes by 2. Along one constant it runs compass search
  (Kolda, Lewis & Torczon, SIAM Review 2003): a kept step is followed by a step twice as long the same way;
  a failed step is tried the other way, then halved. When nothing near is left, steps widen to the bounds.
* Which constant or feature to move next is a bandit, UCB1 (Auer et al. 2002) over "arms" credited with the
  keeps they earned; right after a keep the same arm continues. An arm that keeps failing is set aside until
  everything else near is exhausted.

Everything follows from (seed, train.py, history, titles refused in this run): the same inputs give the same
idea. A (constant, value) pair is never proposed twice.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.crew.schemas import Analysis, CodeEdit, EditBlock, Idea, Review
from agents.record.results import ExperimentRecord

DEVICES = ("cpu", "cuda")
# prepare.py's device profile (docs/ARCHITECTURE.md): train.py imports these, so divisibility checks need them.
PREPARE_CONSTANTS = {"cuda": {"MAX_SEQ_LEN": 2048}, "cpu": {"MAX_SEQ_LEN": 256}}
# Never tuned: seeds, the time budget, evaluation settings, and which steps count as training time. Moving
# any of them games the measurement rather than improving the model (the guard would veto it anyway).
FROZEN_NAME_PARTS = ("SEED", "TIME", "EVAL", "EXCLUDED", "CUDA")

# kind: (first step, longest local step, widest step), in grid units
STEPS = {"log": (2, 8, 32), "linear": (2, 6, 20), "beta": (2, 8, 24), "int": (1, 2, 16), "pow2": (1, 2, 6)}
UCB_C = 0.5  # exploration weight; rewards are 1 for a keep, 0 otherwise
GIVE_UP_AFTER = 3  # failures in a row before an arm waits until everything else near is tried
INFORMATIVE = ("keep", "discard", "crash")  # statuses that say something about the objective

_KNOB_TITLE = re.compile(r"^(?P<arm>[A-Z][A-Z0-9_]*(?:\[\d+\])?) (?P<old>\S+) -> (?P<new>\S+)$")
_FEATURE_TITLE = re.compile(r"^(?P<arm>[^:]+): (?P<old>.+) -> (?P<new>.+)$")
_QUOTED = re.compile(r"'([^'\n]+)'")


class PolicyError(ValueError):
    """Input the policy cannot work with; the message names the problem."""


class UnknownIdea(PolicyError):
    """The offline coder was handed an idea the policy did not propose in this run."""


class SearchExhausted(RuntimeError):
    """Every move in the search space has been tried or refused."""


# ---------------------------------------------------------------------------------------------- the space


@dataclass(eq=False)
class Knob:
    """One tunable number in train.py: a CAPS constant, or one element of a tuple constant."""

    name: str  # "MATRIX_LR", or "ADAM_BETAS[1]"
    const: str
    kind: str  # a key of STEPS
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


class TrainPy:
    """train.py as the policy sees it for one device: its knobs, features, removals and divisibility checks."""

    def __init__(self, text: str, device: str):
        if device not in DEVICES:
            raise PolicyError(f"device must be one of {DEVICES}, not {device!r}")
        if not isinstance(text, str) or not text.strip():
            raise PolicyError("train.py text is empty")
        try:
            self.tree = ast.parse(text)
        except SyntaxError as exc:
            raise PolicyError(f"train.py does not parse (line {exc.lineno}: {exc.msg})") from exc
        self.text, self.device = text, device
        self._nodes = list(ast.walk(self.tree))  # one walk, shared by the readers below
        self.constants = self._module_constants()
        self.knobs = {k.name: k for k in self._read_knobs()}
        self.checks = self._divisibility_checks()
        # feature name -> the variant train.py has; removal title -> the blocks deleting it (present ones only)
        self.features = {f.name: label for f in FEATURES if (label := self._find_variant(f)) is not None}
        self.removals = {r.title: blocks for r in REMOVALS if (blocks := self._deletion_blocks(r)) is not None}

    # ----------------------------------------------------------------- constants and knobs
    def _caps_assigns(self) -> Iterator[tuple[str, ast.expr]]:
        counts: dict[str, int] = {}
        found = []
        for stmt in self.tree.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                name = stmt.targets[0].id
                if name.isupper():
                    counts[name] = counts.get(name, 0) + 1
                    found.append((name, stmt.value))
        # a constant assigned twice has no single place to edit
        return ((name, value) for name, value in found if counts[name] == 1)

    def _branch(self, value: ast.expr) -> ast.expr:
        if isinstance(value, ast.IfExp) and isinstance(value.test, ast.Name) and value.test.id == "CUDA":
            return value.body if self.device == "cuda" else value.orelse
        return value

    def _module_constants(self) -> dict[str, Any]:
        env: dict[str, Any] = dict(PREPARE_CONSTANTS[self.device])
        for name, value in self._caps_assigns():
            try:
                env[name] = _evaluate(self._branch(value), {}, {})
            except ValueError:
                continue
        return env

    def _read_knobs(self) -> Iterator[Knob]:
        used = {n.id for n in self._nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        for name, value in self._caps_assigns():
            if name not in used or any(part in name for part in FROZEN_NAME_PARTS) or name not in self.constants:
                continue  # unused constants are dead code: tuning them teaches nothing
            node = self._branch(value)
            divisor = re.search(rf"/\s*{name}\b", self.text) is not None
            if isinstance(node, ast.Tuple):
                for i, element in enumerate(node.elts):
                    kind = _kind(name, self.constants[name][i])
                    if kind == "beta":
                        yield Knob(f"{name}[{i}]", name, kind, self.constants[name][i], element, divisor)
            else:
                kind = _kind(name, self.constants[name])
                if kind is not None:
                    yield Knob(name, name, kind, self.constants[name], node, divisor)

    # ----------------------------------------------------------------- divisibility
    def _divisibility_checks(self) -> list[tuple[ast.expr, ast.expr, dict[str, ast.expr]]]:
        """`A % B` tested in an `if`/`assert` where A and B resolve to constants: train.py refuses a remainder."""
        assigned: dict[str, list[ast.expr]] = {}
        for node in self._nodes:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                assigned.setdefault(node.targets[0].id, []).append(node.value)
        local = {name: values[0] for name, values in assigned.items() if len(values) == 1}  # unambiguous names
        checks = []
        for node in self._nodes:
            if not isinstance(node, ast.If | ast.Assert | ast.While):
                continue
            for sub in ast.walk(node.test):
                if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Mod):
                    try:
                        _evaluate(sub.left, self.constants, local)
                        _evaluate(sub.right, self.constants, local)
                    except (ValueError, ZeroDivisionError, TypeError):
                        continue
                    checks.append((sub.left, sub.right, local))
        return checks

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
            try:
                a, b = _evaluate(left, env, local), _evaluate(right, env, local)
                if not b or a % b:
                    return False
            except (ValueError, ZeroDivisionError, TypeError):
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
        return (_char_offset(self.text, knob.node.lineno, knob.node.col_offset),
                _char_offset(self.text, knob.node.end_lineno, knob.node.end_col_offset))

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

    def _deletion_blocks(self, removal: Removal) -> list[EditBlock] | None:
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
        return blocks


@functools.lru_cache(maxsize=16)
def read_train_py(text: str, device: str) -> TrainPy:
    """TrainPy for (text, device), cached: every role call reads the same few texts again (treat it read-only)."""
    return TrainPy(text, device)


# ---------------------------------------------------------------------------------------------- moves


@dataclass(frozen=True)
class Move:
    """One proposal: which arm, to what, and how it reads as an Idea."""

    arm: str
    kind: str  # "knob" | "feature" | "removal"
    target: str  # the new value (as written in the title), a variant label, or "" for a removal
    title: str
    category: str
    rationale: str
    expected_effect: str
    device: str

    def idea(self) -> Idea:
        return Idea(title=self.title, rationale=self.rationale, expected_effect=self.expected_effect,
                    category=self.category)

    def edit(self, text: str) -> CodeEdit:
        """The edit against `text` (the current train.py, which may have moved on since the proposal)."""
        space = read_train_py(text, self.device)
        if self.kind == "knob":
            knob = space.knobs.get(self.arm)
            if knob is None:
                raise PolicyError(f"{self.arm} is no longer a tunable constant in train.py")
            value = _parse_number(self.target, knob.kind)
            if _fmt(knob.value) == _fmt(value):
                raise PolicyError(f"{self.arm} is already {self.target} in train.py")
            blocks = [space.knob_edit(knob, value)]
        elif self.kind == "feature":
            feature = next(f for f in FEATURES if f.name == self.arm)
            if space.features.get(feature.name) == self.target:
                raise PolicyError(f"{feature.name} is already {self.target} in train.py")
            blocks = [space.feature_edit(feature, self.target)]
        else:
            blocks = space.removals.get(self.arm)
            if blocks is None:
                raise PolicyError(f"cannot '{self.arm}': the code it deletes is not in train.py")
        return CodeEdit(path="train.py", blocks=blocks, summary=self.title)


@dataclass
class ArmState:
    """What the history says about one arm."""

    tried: set[str] = field(default_factory=set)  # values / labels / titles already run, refused or proposed
    origin: float | None = None  # a knob's value before its first move in this run (the bounds are around it)
    n: int = 0  # informative experiments (keep, discard, crash)
    wins: int = 0
    # the latest informative step: ("keep" | "promising" (better, but within noise) | "fail", signed grid units)
    last: tuple[str, float] | None = None
    fails_in_a_row: int = 0
    crashes: int = 0
    walls: list[tuple[float, int]] = field(default_factory=list)  # (value, direction): crashed at or beyond

    @property
    def set_aside(self) -> bool:
        return self.fails_in_a_row >= GIVE_UP_AFTER or self.crashes >= 2


# ---------------------------------------------------------------------------------------------- the policy


class OfflinePolicy:
    """Plays the four roles deterministically; one instance per run so the roles share what was proposed."""

    def __init__(self, seed: int = 42):
        self.seed = int(seed)
        self._proposed: dict[str, Move] = {}  # title -> move, in proposal order
        self._refused: set[str] = set()
        self._remembered: set[str] = set()  # titles memory recalled from earlier runs in this repository
        self._last_title: str | None = None

    # ------------------------------------------------------------------ hypothesis
    def propose(self, train_py: str, history: Sequence[ExperimentRecord] = (), device: str = "cpu",
                feedback: str = "", recall: str = "") -> Idea:
        """The next experiment; raises SearchExhausted when every move has been tried or refused.

        `recall` (memory's text) may name experiments of earlier runs in this repository: those count as tried,
        since the novelty gate would refuse them as repeats anyway.
        """
        self.note_feedback(feedback)
        self._remembered.update(_titles_in(recall))
        return self.adopt(self._choose(read_train_py(train_py, device), list(history)))

    def note_feedback(self, feedback: str) -> None:
        """Remember refused titles: those quoted in the feedback, else the last proposal."""
        if not feedback or not feedback.strip():
            return
        quoted = [t for t in _QUOTED.findall(feedback) if _KNOB_TITLE.match(t) or _FEATURE_TITLE.match(t)
                  or t in {r.title for r in REMOVALS}]
        self._refused.update(quoted)
        if not quoted and self._last_title:
            self._refused.add(self._last_title)

    @property
    def refused_titles(self) -> frozenset[str]:
        return frozenset(self._refused)

    def _choose(self, space: TrainPy, history: list[ExperimentRecord]) -> Move:
        arms = self._arms(space)
        states = self._arm_states(space, arms, history)
        seen = {r.description for r in history}
        pending = {m.arm for t, m in self._proposed.items() if t not in seen and t not in self._refused}
        total = sum(s.n for s in states.values())

        def order(arm: str) -> tuple:
            s = states[arm]
            if s.n == 0:  # untried arms first; deletions before the rest, since an equal result with less code wins
                score = math.inf if arms[arm][1] else 1e9
            else:
                score = s.wins / s.n + UCB_C * math.sqrt(math.log(total + 1) / s.n)
            return (arm in pending, -score, _hash(self.seed, arm))

        ranked = sorted(arms, key=order)
        last = next((r for r in reversed(history) if r.status in INFORMATIVE), None)
        momentum = _arm_of(last.description) if last is not None and last.status == "keep" else None
        if momentum in arms and momentum not in pending:
            ranked.remove(momentum)
            ranked.insert(0, momentum)  # a kept step is followed up at once, twice as long
        for tier in (0, 1, 2):
            for arm in ranked:
                if tier == 0 and states[arm].set_aside:
                    continue
                move = next(self._candidates(space, arm, arms[arm][0], states[arm], tier), None)
                if move is not None:
                    return move
        raise SearchExhausted(f"every move of the offline policy has been tried or refused ({len(history)} "
                              f"experiments, {len(self._refused)} refusals); edit train.py by hand or use an LLM crew")

    def _arms(self, space: TrainPy) -> dict[str, tuple[str, bool]]:
        """arm -> (kind, is a deletion) for everything train.py offers right now."""
        arms = {name: ("knob", False) for name in space.knobs}
        for f in FEATURES:
            if f.name in space.features:
                arms[f.name] = ("feature", space.features[f.name] != f.lean and bool(f.lean))
        arms.update({title: ("removal", True) for title in space.removals})
        return arms

    def _arm_states(self, space: TrainPy, arms: dict[str, tuple[str, bool]],
                    history: list[ExperimentRecord]) -> dict[str, ArmState]:
        states: dict[str, ArmState] = {arm: ArmState() for arm in arms}
        refused = [(t, "repeat", None) for t in sorted(self._refused | self._remembered)] + \
            [(t, "proposed", None) for t in self._proposed]
        for title, status, delta in [(r.description, r.status, r.delta) for r in history] + refused:
            arm = _arm_of(title)
            if arm not in states:
                continue
            s = states[arm]
            m = _KNOB_TITLE.match(title) or _FEATURE_TITLE.match(title)
            old, new = (m.group("old"), m.group("new")) if m else ("", "")
            s.tried.update(_canonical(v, space.knobs.get(arm)) for v in (old, new) if v)
            s.tried.add(title)
            if s.origin is None and arm in space.knobs and m is not None:
                try:
                    s.origin = float(old)
                except ValueError:
                    pass
            if status not in INFORMATIVE:
                continue
            s.n += 1
            s.wins += status == "keep"
            s.fails_in_a_row = 0 if status == "keep" else s.fails_in_a_row + 1
            s.crashes += status == "crash"
            units = 0.0
            knob = space.knobs.get(arm)
            if knob is not None and m is not None:
                try:
                    units = grid_units(knob.kind, float(old), float(new))
                except (ValueError, ZeroDivisionError):
                    units = 0.0
                if status == "crash" and units:
                    s.walls.append((float(new), 1 if units > 0 else -1))
            s.last = (_outcome(status, delta), units)
        return states

    def _candidates(self, space: TrainPy, arm: str, kind: str, state: ArmState, tier: int) -> Iterator[Move]:
        if kind == "knob":
            yield from self._knob_moves(space, space.knobs[arm], state, tier)
            return
        if tier > 0:
            return  # features and removals have nothing wider to offer
        if kind == "feature":
            feature = next(f for f in FEATURES if f.name == arm)
            current = space.features[feature.name]
            for label, _, _ in feature.variants:
                title = f"{feature.name}: {current} -> {label}"
                if label != current and label not in state.tried and self._fresh(title):
                    yield Move(arm, "feature", label, title, "simplification" if label == feature.lean else
                               feature.category, f"Switch {feature.name} from {current} to {label}: {feature.why}.",
                               "val_bpb at or below the best; equal counts as a win when the code gets simpler.",
                               space.device)
        elif arm not in state.tried and self._fresh(arm):
            removal = next(r for r in REMOVALS if r.title == arm)
            why = f"{removal.why[0].upper()}{removal.why[1:]}; an equal result with less code is a win."
            yield Move(arm, "removal", "", arm, "simplification", why,
                       "val_bpb within noise of the best with fewer lines, or better.", space.device)

    def _knob_moves(self, space: TrainPy, knob: Knob, state: ArmState, tier: int) -> Iterator[Move]:
        first, local, widest = STEPS[knob.kind]
        direction = 1 if _hash(self.seed, knob.name) % 2 else -1
        if tier == 0:
            steps = _preferred_steps(state.last, first, local, direction)
        elif tier == 1:
            steps = [sign * u for u in range(1, local + 1) for sign in (direction, -direction)]
        else:
            steps = [sign * u for u in range(local + 1, widest + 1) for sign in (direction, -direction)]
        low, high = grid_bounds(knob, float(knob.value) if state.origin is None else state.origin)
        current = _fmt(knob.value)
        for units in steps:
            value = grid_step(knob.kind, knob.value, units)
            text = _fmt(value)
            if text == current or text in state.tried or not (low <= value <= high):
                continue
            if any((value - wall) * d >= 0 for wall, d in state.walls) or not space.allows(knob, value):
                continue
            title = f"{knob.name} {current} -> {text}"
            if self._fresh(title):
                yield _knob_move(knob, value, title, state.last, space.device)

    def options(self, train_py: str, history: Sequence[ExperimentRecord], device: str = "cpu") -> list[Move]:
        """Every move still open, in no order of preference (for baselines that pick among them)."""
        space = read_train_py(train_py, device)
        arms = self._arms(space)
        states = self._arm_states(space, arms, list(history))
        moves = [m for arm in arms for tier in (0, 1, 2) for m in self._candidates(space, arm, arms[arm][0],
                                                                                    states[arm], tier)]
        return list({m.title: m for m in moves}.values())

    def adopt(self, move: Move) -> Idea:
        """Record `move` as proposed (so `code` implements it) and return its idea."""
        self._proposed[move.title] = move
        self._last_title = move.title
        return move.idea()

    def _fresh(self, title: str) -> bool:
        return title not in self._proposed and title not in self._refused and title not in self._remembered

    # ------------------------------------------------------------------ coder
    def code(self, idea: Idea, train_py: str) -> CodeEdit:
        """The edit for an idea this policy proposed, built against the current train.py."""
        move = self._proposed.get(idea.title)
        if move is None:
            raise UnknownIdea(f"the offline coder only implements ideas the offline policy proposed in this run; "
                              f"{idea.title!r} is not one of them")
        return move.edit(train_py)

    # ------------------------------------------------------------------ reviewer
    def review(self, idea: Idea, diff: str, guard_ok: bool, guard_report: str = "") -> Review:
        """Approve what the guard passed, unless the diff only touches seeds or data order."""
        if not guard_ok:
            reasons = [line.strip() for line in guard_report.splitlines() if line.strip()]
            return Review(verdict="reject", reasons=reasons or ["the deterministic guard failed"])
        changed = [line[1:] for line in diff.splitlines()
                   if line[:1] in "+-" and not line.startswith(("+++", "---")) and line[1:].strip()]
        if not changed:
            return Review(verdict="reject", reasons=["the diff changes no code"])
        if all(_SEED_OR_ORDER.search(line) for line in changed):
            return Review(verdict="reject", reasons=["the edit only changes the seed or the data order: any gain "
                                                     "would be noise, not a better model"])
        reasons = ["the deterministic guard passed", f"one change, as titled: {idea.title}"]
        return Review(verdict="approve", reasons=reasons)

    # ------------------------------------------------------------------ analyst
    def analyse(self, idea: Idea, record: ExperimentRecord) -> Analysis:
        """A factual reading of the numbers and a lesson phrased for recall."""
        title = idea.title or record.description
        sigma_units = _sigma_units(record)
        if record.status == "crash" or record.val_bpb is None:
            cause = ((record.error or record.decision_reason).strip() or "no result").splitlines()[-1][:200]
            explanation = f"'{title}' produced no val_bpb ({record.status}): {cause}."
        else:
            against = f" against the best {record.best_bpb_before:.6f}" if record.best_bpb_before is not None else ""
            delta = f", delta {record.delta:+.6f}" if record.delta is not None else ""
            noise = f" ({sigma_units:+.1f} sigma)" if sigma_units is not None else ""
            reason = f"; rule: {record.decision_reason}" if record.decision_reason else ""
            explanation = (f"'{title}' reached val_bpb {record.val_bpb:.6f}{against}{delta}{noise}; "
                           f"status {record.status}{reason}.")
        borderline = record.status == "keep" and sigma_units is not None and sigma_units > -3
        return Analysis(explanation=explanation, lesson=self._lesson(title, record), rerun=borderline)

    def _lesson(self, title: str, record: ExperimentRecord) -> str:
        effect = _effect(record)
        m = _KNOB_TITLE.match(title)
        if m is None:
            outcome = {"keep": "keep it", "crash": "fix the cause before retrying"}.get(record.status, "leave it out")
            return f"'{title}' {effect} ({record.status}); {outcome}."
        name, old, new = m.group("arm"), m.group("old"), m.group("new")
        try:
            a, b = float(old), float(new)
        except ValueError:
            return f"'{title}' {effect} ({record.status})."
        verb = "Raising" if b > a else "Lowering"
        if record.status == "crash":
            advice = f"do not go to {new} or beyond"
        elif record.status not in INFORMATIVE:
            advice = "it was not run"
        else:
            advice = _next_step_advice(name, a, b, new, _outcome(record.status, record.delta))
        return f"{verb} {name} from {old} to {new} {effect} ({record.status}); {advice}."

    # ------------------------------------------------------------------ dispatch for OfflineLLM
    def answer(self, role: str, inputs: dict[str, Any]) -> Idea | CodeEdit | Review | Analysis:
        """The role's schema from the role's inputs (docs/ARCHITECTURE.md, "Roles: what each one is given")."""
        try:
            if role == "hypothesis":
                return self.propose(inputs["train_py"], inputs.get("history") or [], inputs.get("device", "cpu"),
                                    inputs.get("feedback", ""), inputs.get("recall", ""))
            if role == "coder":
                return self.code(_as_idea(inputs["idea"]), inputs["train_py"])
            if role == "reviewer":
                return self.review(_as_idea(inputs["idea"]), inputs.get("diff", ""), bool(inputs["guard_ok"]),
                                   inputs.get("guard_report", ""))
            if role == "analyst":
                return self.analyse(_as_idea(inputs["idea"]), inputs["record"])
        except KeyError as exc:
            raise PolicyError(f"{role} inputs lack {exc.args[0]!r}") from None
        raise PolicyError(f"unknown role {role!r}; expected hypothesis, coder, reviewer or analyst")


# ---------------------------------------------------------------------------------------------- helpers

_SEED_OR_ORDER = re.compile(r"seed|SEED|shuffle|permut|randperm|generator|\border\b", re.I)


def _arm_of(title: str) -> str | None:
    """The knob, feature or removal a title is about (None for titles not in the policy's grammar)."""
    if title in {r.title for r in REMOVALS}:
        return title
    m = _KNOB_TITLE.match(title) or _FEATURE_TITLE.match(title)
    return m.group("arm") if m else None


_KNOB_IN_TEXT = re.compile(r"\b[A-Z][A-Z0-9_]*(?:\[\d+\])? [-+0-9.e]+ -> [-+0-9.e]+(?=[\s,;)']|$)", re.M)


def _next_step_advice(name: str, old: float, new: float, new_text: str, outcome: str) -> str:
    """The step the search takes next on this constant, from where train.py now stands, as advice."""
    as_int = re.fullmatch(r"-?\d+", new_text) is not None
    const = name.split("[")[0]
    kind = _kind(const, int(old) if as_int else old) or _kind(const, int(new) if as_int else new) or "log"
    first, local, _ = STEPS[kind]
    try:
        units = grid_units(kind, old, new) or (1.0 if new > old else -1.0)
        step = _preferred_steps((outcome, units), first, local, 1)[0]
        target = _fmt(grid_step(kind, new if outcome == "keep" else old, step))
    except (ValueError, ZeroDivisionError):  # a title from elsewhere with values off the policy's grids
        return "keep it" if outcome == "keep" else "leave it"
    return f"the gain is within noise: try {target} next" if outcome == "promising" else f"try {target} next"


def _outcome(status: str, delta: float | None) -> str:
    """keep; promising (discarded, but val_bpb went down: the gain was within noise); or fail."""
    if status == "keep":
        return "keep"
    return "promising" if status == "discard" and delta is not None and delta < 0 else "fail"


def _titles_in(text: str) -> set[str]:
    """Titles in the policy's own grammar quoted anywhere in a text (memory's recall lines)."""
    if not text:
        return set()
    found = set(_KNOB_IN_TEXT.findall(text))
    for f in FEATURES:
        found.update(re.findall(rf"{re.escape(f.name)}: \S+ -> \S+", text))
    found.update(r.title for r in REMOVALS if r.title in text)
    return found


def _kind(name: str, value: Any) -> str | None:
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


def grid_step(kind: str, value: float, units: float) -> float | int:
    """`value` moved by `units` grid steps of its kind, rounded to the grid's resolution."""
    if kind == "log":
        return float(f"{value * 2 ** (units / 4):.2g}")
    if kind == "linear":
        return round(value + 0.05 * units, 2)
    if kind == "beta":
        return round(1 - (1 - value) * 2 ** (-units / 4), 3)
    if kind == "int":
        return int(value + units)
    return int(value * 2 ** units) if value * 2 ** units >= 1 else 0


def grid_units(kind: str, old: float, new: float) -> float:
    """Signed distance from old to new in grid units (the inverse of _step, before rounding)."""
    if kind == "log":
        return 4 * math.log2(new / old)
    if kind == "linear":
        return (new - old) / 0.05
    if kind == "beta":
        return 4 * math.log2((1 - old) / (1 - new))
    if kind == "int":
        return new - old
    return math.log2(new / old)


def grid_bounds(knob: Knob, origin: float) -> tuple[float, float]:
    """The widest values the search gives a knob that started the run at `origin`."""
    if knob.kind == "log":
        return origin / 16, origin * 16
    if knob.kind == "linear":
        return (0.05 if knob.divisor else 0.0), 1.0
    if knob.kind == "beta":
        return 0.5, 0.999
    if knob.kind == "int":
        return 1, max(2 * origin, origin + 4)
    return max(1.0, origin / 8), origin * 8


def _preferred_steps(last: tuple[str, float] | None, first: int, local: int, direction: int) -> list[int]:
    """Compass search: continue a kept step twice as long; after a failure reverse it, then halve it.

    A step that improved val_bpb but not beyond the noise ("promising") is continued twice as long: under a
    noise threshold a longer step is what can show its gain, a shorter one never could.
    """
    if last is None or not last[1]:
        return list(dict.fromkeys(u for u in (direction * first, -direction * first, direction * (first // 2),
                                              -direction * (first // 2)) if u))
    d, s = (1 if last[1] > 0 else -1), max(1, round(abs(last[1])))
    if last[0] == "keep":
        steps = [d * min(2 * s, local), d * s, d * (s // 2), -d * (s // 2)]
    elif last[0] == "promising":
        steps = [d * min(2 * s, local), -d * s, d * (s // 2), -d * (s // 2)]
    else:
        steps = [-d * s, -d * (s // 2), d * (s // 2)]
    return list(dict.fromkeys(u for u in steps if u))


def _knob_move(knob: Knob, value: float | int, title: str, last: tuple[str, float] | None, device: str) -> Move:
    way = "raise" if value > knob.value else "lower"
    same_way = last is not None and (value > knob.value) == (last[1] > 0)
    if last is None or not last[1]:
        why = f"First probe of {knob.name}: {way} it one step from {_fmt(knob.value)}"
    elif last[0] == "keep" and same_way:
        why = f"The last step on {knob.name} was kept, so continue the same way"
    elif last[0] == "promising" and same_way:
        why = f"The last step on {knob.name} helped, but within the noise: go further the same way"
    elif same_way:
        why = f"The last step on {knob.name} went too far: {way} it by a shorter step"
    else:
        why = f"The last step on {knob.name} did not help, so {way} it instead"
    category = _category(knob)
    rationale = f"{why}. {_CATEGORY_WHY[category]}"
    expected = f"val_bpb below the best by more than the noise if {knob.name} was off its optimum; no gain otherwise."
    return Move(knob.name, "knob", _fmt(value), title, category, rationale, expected, device)


def _category(knob: Knob) -> str:
    name = knob.const
    if "BATCH" in name:
        return "batch_size"
    if "LR" in name.split("_"):
        return "learning_rate"
    if "DECAY" in name or "DROPOUT" in name:
        return "regularization"
    if knob.kind == "linear":
        return "schedule"
    if knob.kind == "beta" or "STEPS" in name:
        return "optimizer"
    return "architecture"


_CATEGORY_WHY = {
    "batch_size": "Batch size trades gradient noise against the number of optimizer steps within the budget.",
    "learning_rate": "Under a fixed time budget the best step size moves with model size and step count; a factor "
                     "of about 1.4 is the smallest change that reliably shows.",
    "regularization": "Weight decay trades fitting speed against keeping the weights small.",
    "schedule": "The schedule shape decides how much of the budget runs at full rate and how much anneals.",
    "optimizer": "The optimizer's averaging and iteration counts trade noise, lag and cost per step.",
    "architecture": "Model shape trades capacity against steps: under a fixed budget another size may learn more.",
}


def _fmt(value: float | int) -> str:
    """The canonical text of a value, as in titles (ints plain, floats by repr)."""
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def _canonical(text: str, knob: Knob | None) -> str:
    """A title's value token in the same canonical form as `_fmt` (labels of features pass through)."""
    if knob is None:
        return text
    try:
        return _fmt(_parse_number(text, knob.kind))
    except ValueError:
        return text


def _parse_number(text: str, kind: str) -> float | int:
    number = float(text)
    if kind in ("int", "pow2"):
        if not number.is_integer():
            raise ValueError(f"{text!r} is not an integer")
        return int(number)
    return number


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


_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b,
           ast.Pow: lambda a, b: a**b}


def _evaluate(node: ast.expr, env: dict[str, Any], local: dict[str, ast.expr], depth: int = 0) -> Any:
    """A constant expression's value (numbers, arithmetic, tuples), names looked up in env, then local."""
    if depth > 20:
        raise ValueError("expression nests too deeply")
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _evaluate(node.operand, env, local, depth + 1)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _evaluate(node.left, env, local, depth + 1), _evaluate(node.right, env, local, depth + 1)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        return _BINOPS[type(node.op)](left, right)
    if isinstance(node, ast.Tuple):
        return tuple(_evaluate(e, env, local, depth + 1) for e in node.elts)
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        if node.id in local:
            return _evaluate(local[node.id], env, local, depth + 1)
    raise ValueError(f"not a constant expression: {ast.dump(node)[:80]}")


def _char_offset(text: str, lineno: int, col_bytes: int) -> int:
    """Character index of an ast position (1-based line, UTF-8 byte column)."""
    lines = text.splitlines(keepends=True)
    before = sum(len(line) for line in lines[: lineno - 1])
    return before + len(lines[lineno - 1].encode()[:col_bytes].decode())


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


def _hash(seed: int, key: str) -> int:
    """A stable per-run tie-breaker (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big")


def _sigma_units(record: ExperimentRecord) -> float | None:
    """delta in units of the noise, from the decision rule's reason ("... sigma 0.002000 / sqrt(2)")."""
    m = re.search(r"(?:sigma|σ)\s*[=:]?\s*(\d+(?:\.\d+)?(?:e-?\d+)?)(?:\s*/\s*sqrt\((\d+)\))?",
                  record.decision_reason or "")
    if m is None or record.delta is None or float(m.group(1)) <= 0:
        return None
    return record.delta / (float(m.group(1)) / math.sqrt(int(m.group(2) or 1)))


def _effect(record: ExperimentRecord) -> str:
    if record.val_bpb is None or record.status == "crash":
        return "crashed"
    if record.delta is None:
        return f"reached val_bpb {record.val_bpb:.6f}"
    if record.delta < 0:
        return f"improved val_bpb by {-record.delta:.4f}"
    if record.delta > 0:
        return f"worsened val_bpb by {record.delta:.4f}"
    return "left val_bpb unchanged"


def _as_idea(value: Any) -> Idea:
    if isinstance(value, Idea):
        return value
    if isinstance(value, dict):
        return Idea.model_validate(value)
    raise PolicyError(f"expected an Idea, got {type(value).__name__}")
