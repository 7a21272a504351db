"""What a reading is, and when two readings are the same experiment.

A `Reading` lists the `Change`s an idea makes (target and value, or only a direction). `compare` decides:
the same targets with the same values (up to rounding) make the same experiment; another target, another
value, a value on one side only, or another direction make a different one; a reading that recognises
nothing decides nothing (None), and the gate then admits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from memory.amounts import values_match


@dataclass(frozen=True)
class Change:
    """One target changed: a knob (`MATRIX_LR`, `WEIGHT_DECAY@embedding`), a family (`activation@mlp`), a
    technique (`switch:dropout@*`) or unresolved words (`q:lr`). `values` are the alternatives the new value
    may be (one per device profile for a relative change); empty when only a direction is known."""

    target: str
    values: tuple[Any, ...] = ()
    direction: int = 0

    def describe(self) -> str:
        if self.values:
            shown = " or ".join(show_value(v) for v in self.values)
            return f"{self.target} = {shown}"
        return f"{self.target} {'up' if self.direction > 0 else 'down' if self.direction < 0 else 'changed'}"


def show_value(value: Any) -> str:
    if isinstance(value, float):
        return format(value, ".6g")
    if isinstance(value, tuple):
        return "(" + ", ".join(show_value(v) for v in value) + ")"
    return str(value)


@dataclass(frozen=True)
class Reading:
    changes: tuple[Change, ...] = ()
    topic: frozenset[str] = frozenset()
    extras: frozenset[float] = frozenset()  # whole numbers in the title that no change explains (300 steps)
    unread: frozenset[str] = frozenset()  # words of a title clause that asks for a change the reading did not get

    @property
    def targets(self) -> frozenset[str]:
        return frozenset(c.target for c in self.changes)

    @property
    def signature(self) -> str:
        """The targets, sorted: ideas with the same signature change the same things."""
        return "&".join(sorted(self.targets))

    def describe(self) -> str:
        return "; ".join(c.describe() for c in self.changes) or "(no recognised change)"

    def to_json(self) -> str:
        return json.dumps({"c": [[c.target, [_plain(v) for v in c.values], c.direction] for c in self.changes],
                           "t": sorted(self.topic), "x": sorted(self.extras), "u": sorted(self.unread)},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Reading:
        try:
            data = json.loads(text) if text else {}
            changes = tuple(Change(t, tuple(_unplain(v) for v in vals), int(d)) for t, vals, d in data.get("c", []))
            return cls(changes, frozenset(data.get("t", [])), frozenset(data.get("x", [])),
                       frozenset(data.get("u", [])))
        except (ValueError, TypeError):
            return cls()


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _unplain(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


# ------------------------------------------------------------------------------------------------ compare


@dataclass(frozen=True)
class Comparison:
    same: bool | None  # None: the readings cannot tell
    reason: str


def compare(new: Reading, old: Reading, *, old_crashed: bool = False) -> Comparison:
    """Is `new` the experiment `old` was? A crashed `old` also matches a new idea that adds a fix to it."""
    if old_crashed:
        new = _placed_as(new, old)
    if not new.changes or not old.changes:
        if new.topic and new.topic == old.topic:
            return Comparison(True, "the same words")
        return Comparison(None, "no recognised change on " + ("either side" if not new.changes and not old.changes
                                                            else "one side"))
    if new.targets != old.targets:
        if old_crashed and old.targets < new.targets:
            extra = ", ".join(sorted(new.targets - old.targets))
            agree = compare(Reading(tuple(c for c in new.changes if c.target in old.targets)), old)
            if agree.same:
                return Comparison(True, f"the crashed experiment again, with a fix ({extra})")
        return Comparison(False, f"changes other things ({_targets(new)} vs {_targets(old)})")
    if new.extras and old.extras and new.extras != old.extras:
        return Comparison(False, f"other numbers differ ({_nums(new.extras)} vs {_nums(old.extras)})")
    old_by = {c.target: c for c in old.changes}
    for change in new.changes:
        other = old_by[change.target]
        if change.values and other.values:
            if not any(values_match(a, b) for a in change.values for b in other.values):
                return Comparison(False, f"{change.target}: {_values(change)} vs {_values(other)}")
        elif change.values or other.values:
            return Comparison(False, f"{change.target}: a value on one side only ({change.describe()} vs "
                                     f"{other.describe()})")
        elif change.direction != other.direction:
            return Comparison(False, f"{change.target}: opposite directions")
    if new.unread != old.unread and not old_crashed:  # "tie the embeddings and scale the logits by 1/sqrt(d)": a change not understood
        return Comparison(None, "a change the reading did not understand: " + " ".join(sorted(new.unread ^ old.unread)))
    return Comparison(True, "same change: " + new.describe())


def _placed_as(new: Reading, old: Reading) -> Reading:
    """A crashed idea proposed again names its technique without repeating where it acts ("Lion again, with ..."):
    the place is the crashed one's."""
    bases: dict[str, list[str]] = {}
    for change in old.changes:
        bases.setdefault(change.target.split("@")[0], []).append(change.target)
    changes = []
    for change in new.changes:
        base, _, place = change.target.partition("@")
        if place == "*" and len(bases.get(base, [])) == 1 and change.target not in old.targets:
            change = Change(bases[base][0], change.values, change.direction)
        changes.append(change)
    return Reading(tuple(changes), new.topic, new.extras, new.unread)


def _nums(values: frozenset[float]) -> str:
    return ", ".join(show_value(v) for v in sorted(values))


def _targets(reading: Reading) -> str:
    return ", ".join(sorted(reading.targets))


def _values(change: Change) -> str:
    return " or ".join(show_value(v) for v in change.values)
