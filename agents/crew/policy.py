"""The offline search policy: a deterministic optimiser over train.py that plays every role without an LLM.

It is the default when no API key is set and the baseline every LLM crew is compared against. In a fixed
search space classic hyperparameter optimisation beats LLM agents (arXiv 2603.24647), so this is a real
optimiser, kept small:

* The search space is read from train.py itself (searchspace.py): its CAPS constants, parsed with `ast`
  (exact positions, the branch `A if CUDA else B` for the current device), and a short catalogue of
  structural variants whose code it recognises (activation, QK-norm, ...) or can delete (a simplification).
* Each constant moves on a grid: learning rates and scales by factors of 2**(1/4), ratios by 0.05, betas by
  factors of 2**(1/4) on 1 - beta, integers by 1, batch sizes by 2. Along one constant it runs compass search
  (Kolda, Lewis & Torczon, SIAM Review 2003): a kept step is followed by a step twice as long the same way;
  a failed step is tried the other way, then halved. When nothing near is left, steps widen to the bounds.
* Which constant or feature to move next is a bandit, UCB1 (Auer et al. 2002) over "arms" credited with the
  keeps they earned; right after a keep the same arm continues. An arm that keeps failing is set aside until
  everything else near is exhausted.
* Untried arms come first, in the order of a prior on where a short fixed-time run gains (PRIOR: learning rates
  and the schedule, then the batch, the model's shape, the optimizer's averaging, code variants). Deletions
  come last, and only once something was kept: before that there is nothing to simplify against, and with
  equal meaning "within the noise" a run of deletions would only ratchet the code down (their keeps are
  confirmed by a re-run, decide.py).

Everything follows from (seed, train.py, history, titles refused in this run): the same inputs give the same
idea. A (constant, value) pair is never proposed twice.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.bench.noop import noop_reason
from agents.crew.edits import apply_edit
from agents.crew.schemas import Analysis, CodeEdit, ConstantChange, Idea, PartChange, Review
from agents.crew.searchspace import (  # noqa: F401 (PolicyError, Feature and Removal are part of the policy's interface)
    FEATURES,
    REMOVALS,
    Feature,
    Knob,
    PolicyError,
    Removal,
    SearchSpace,
    kind_of,
    read_train_py,
)
from agents.record.results import ExperimentRecord
from agents.trainpy import EDITABLE_FILE

# kind: (first step, longest local step, widest step), in grid units
STEPS = {"log": (2, 8, 32), "linear": (2, 6, 20), "beta": (2, 8, 24), "int": (1, 2, 16), "pow2": (1, 2, 6)}
UCB_C = 0.5  # exploration weight; rewards are 1 for a keep, 0 otherwise
GIVE_UP_AFTER = 3  # failures in a row before an arm waits until everything else near is tried
# Where an untried arm stands, by the category of its change: what most often moves val_bpb in a short run at a
# fixed time budget (step size and schedule first, then tokens per step, the model's shape...). Deletions rank
# below all of these; an arm that was tried ranks by UCB1 (scores in [0, ~2]) below every untried one.
PRIOR = {"learning_rate": 100, "schedule": 90, "batch_size": 80, "architecture": 60, "optimizer": 50,
         "regularization": 40, "feature": 45, "deletion": 10}
PRIOR_BY_NAME = {"DEVICE_BATCH_SIZE": 20, "ROPE_BASE": 30, "NS_STEPS": 30}  # change speed or little at this scale
INFORMATIVE = ("keep", "discard", "crash")  # statuses that say something about the objective

_KNOB_TITLE = re.compile(r"^(?P<arm>[A-Z][A-Z0-9_]*(?:\[\d+\])?) (?P<old>\S+) -> (?P<new>\S+)$")
_FEATURE_TITLE = re.compile(r"^(?P<arm>[^:]+): (?P<old>.+) -> (?P<new>.+)$")
_QUOTED = re.compile(r"'([^'\n]+)'")


class UnknownIdea(PolicyError):
    """The offline coder was handed an idea the policy did not propose in this run."""


class SearchExhausted(RuntimeError):
    """Every move in the search space has been tried or refused."""


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
    changes: tuple[ConstantChange | PartChange, ...] = ()  # what the edit will do, as memory compares it

    def idea(self) -> Idea:
        return Idea(title=self.title, rationale=self.rationale, expected_effect=self.expected_effect,
                    category=self.category, changes=list(self.changes))

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
        return CodeEdit(path=EDITABLE_FILE, blocks=blocks, summary=self.title)


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

    def _choose(self, space: SearchSpace, history: list[ExperimentRecord]) -> Move:
        arms = self._arms(space)
        states = self._arm_states(space, arms, history)
        seen = {r.description for r in history}
        pending = {m.arm for t, m in self._proposed.items() if t not in seen and t not in self._refused}
        total = sum(s.n for s in states.values())

        def order(arm: str) -> tuple:
            s = states[arm]
            if s.n == 0:  # untried arms first, best bets of the prior first
                score = 1e3 + self._prior(space, arm, arms[arm])
            else:
                score = s.wins / s.n + UCB_C * math.sqrt(math.log(total + 1) / s.n)
            return (arm in pending, -score, _hash(self.seed, arm))

        # deletions wait for something to simplify against: a change kept in this run
        simplify = any(r.status == "keep" for r in history)
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
                if tier < 2 and arms[arm][1] and not simplify:  # until nothing else near is left
                    continue
                move = next(self._candidates(space, arm, arms[arm][0], states[arm], tier), None)
                if move is not None:
                    return move
        raise SearchExhausted(f"every move of the offline policy has been tried or refused ({len(history)} "
                              f"experiments, {len(self._refused)} refusals); edit train.py by hand or use an LLM crew")

    @staticmethod
    def _prior(space: SearchSpace, arm: str, kind_and_deletion: tuple[str, bool]) -> float:
        kind, deletion = kind_and_deletion
        if deletion:
            return PRIOR["deletion"]
        if kind == "knob":
            knob = space.knobs[arm]
            return PRIOR_BY_NAME.get(knob.const, PRIOR[_category(knob)])
        return PRIOR["feature"]

    def _arms(self, space: SearchSpace) -> dict[str, tuple[str, bool]]:
        """arm -> (kind, is a deletion) for everything train.py offers right now."""
        arms = {name: ("knob", False) for name in space.knobs}
        for f in FEATURES:
            if f.name in space.features:
                arms[f.name] = ("feature", space.features[f.name] != f.lean and bool(f.lean))
        # a deletion of code this device never runs (the logit soft-cap where it is 0) would be refused untested
        arms.update({title: ("removal", True) for title, blocks in space.removals.items()
                     if noop_reason(space.text, apply_edit(space.text, CodeEdit(path="train.py", blocks=blocks, summary="")),
                                    space.device) is None})
        return arms

    def _arm_states(self, space: SearchSpace, arms: dict[str, tuple[str, bool]],
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

    def _candidates(self, space: SearchSpace, arm: str, kind: str, state: ArmState, tier: int) -> Iterator[Move]:
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
                    code = next(c for lab, c, _ in feature.variants if lab == current)
                    parts = _units_at(space, [space.text.index(code)])
                    yield Move(arm, "feature", label, title, "simplification" if label == feature.lean else
                               feature.category, f"Switch {feature.name} from {current} to {label}: {feature.why}.",
                               "val_bpb at or below the best; equal counts as a win when the code gets simpler.",
                               space.device, tuple(PartChange(part=p, technique=f"{feature.name} {label}")
                                                   for p in parts))
        elif arm not in state.tried and self._fresh(arm):
            removal = next(r for r in REMOVALS if r.title == arm)
            why = f"{removal.why[0].upper()}{removal.why[1:]}; an equal result with less code is a win."
            sites = [m.start() for pattern, _ in removal.sites for m in re.finditer(pattern, space.text, re.M)]
            yield Move(arm, "removal", "", arm, "simplification", why,
                       "val_bpb within noise of the best with fewer lines, or better.", space.device,
                       tuple(PartChange(part=p, technique=removal.title) for p in _units_at(space, sites)))

    def _knob_moves(self, space: SearchSpace, knob: Knob, state: ArmState, tier: int) -> Iterator[Move]:
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
                yield _knob_move(knob, value, title, state.last, space.device, _assigned(space, knob, value))

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
    def review(self, idea: Idea, diff: str, guard_ok: bool, guard_report: str = "",
               findings: Sequence[str] = ()) -> Review:
        """Approve what the guard passed, unless the diff only touches seeds or data order, or does something
        other than the idea declares (its fingerprint's findings): then ask for a revision naming them."""
        if findings:
            return Review(verdict="revise", reasons=[f"the edit does not do what the idea declares: {f}"
                                                     for f in findings])
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
                                   inputs.get("guard_report", ""), inputs.get("findings") or ())
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
    kind = kind_of(const, int(old) if as_int else old) or kind_of(const, int(new) if as_int else new) or "log"
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


def _assigned(space: SearchSpace, knob: Knob, value: float | int) -> ConstantChange:
    """The knob's constant as its line will read: `DEPTH = 8 if CUDA else 3` gives value '8 if CUDA else 3'."""
    start, end = space.model.span(space.model.constants[knob.const].expression)
    new_text = space.with_knobs({knob.name: value})
    return ConstantChange(constant=knob.const,
                          value=" ".join(new_text[start:end + len(new_text) - len(space.text)].split()))


def _units_at(space: SearchSpace, offsets: list[int]) -> list[str]:
    """The functions or methods (else classes) of train.py holding these character offsets, in order."""
    found: list[str] = []
    for offset in offsets:
        line = space.model.line_of(offset)
        holding = [u for u in space.model.units.values() if u.kind != "module" and u.line <= line <= u.end_line]
        inner = [u for u in holding if u.kind != "class"] or holding
        for unit in inner[:1]:
            if unit.name not in found:
                found.append(unit.name)
    return found


def _knob_move(knob: Knob, value: float | int, title: str, last: tuple[str, float] | None, device: str,
               change: ConstantChange) -> Move:
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
    return Move(knob.name, "knob", _fmt(value), title, category, rationale, expected, device, (change,))


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
