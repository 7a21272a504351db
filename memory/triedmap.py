"""The map of what was tried: per knob or technique, the values tried and how they ended, in a fixed budget.

Built from the index (fingerprints where the code was changed, declared changes or readings otherwise) on the
device profile the run uses, so it does not grow with the number of experiments: each knob gets one line, whose
detail shrinks to a summary ("9 values from 0.01 to 0.09, best 0.035 keep -0.0040") when room is short. Every
constant ever tried keeps its line.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from memory.changes import Changes
from memory.index import Entry

STATUS_RANK = {"keep": 0, "discard": 1, "crash": 2}


@dataclass
class Outcome:
    value: Any
    runs: int = 0
    best_status: str = "crash"
    best_delta: float | None = None
    lesson: str = ""
    last_seq: int = -1

    def add(self, entry: Entry) -> None:
        self.runs += 1
        better = STATUS_RANK.get(entry.status, 3) < STATUS_RANK.get(self.best_status, 3) or (
            entry.status == self.best_status and entry.delta is not None
            and (self.best_delta is None or entry.delta < self.best_delta))
        if better or self.runs == 1:
            self.best_status, self.best_delta = entry.status, entry.delta
            self.lesson = entry.lesson
        self.last_seq = max(self.last_seq, entry.seq)

    def text(self) -> str:
        delta = f" {self.best_delta:+.4f}" if self.best_delta is not None else ""
        times = f" x{self.runs}" if self.runs > 1 else ""
        return f"{_show(self.value)} {self.best_status}{delta}{times}"


@dataclass
class Target:
    name: str
    constant: bool = True  # a constant of train.py (else a part and its techniques)
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return sum(o.runs for o in self.outcomes.values())

    @property
    def last_seq(self) -> int:
        return max((o.last_seq for o in self.outcomes.values()), default=-1)

    def ordered(self) -> list[Outcome]:
        return sorted(self.outcomes.values(), key=lambda o: (_sort_key(o.value), str(o.value)))

    def best(self) -> Outcome:
        return min(self.outcomes.values(), key=lambda o: (STATUS_RANK.get(o.best_status, 3),
                                                          o.best_delta if o.best_delta is not None else 1e9))

    def line(self, detail: int, current: str = "") -> str:
        """One line; `detail` values spelled out (0: the summary alone)."""
        now = f" (now {current})" if current else ""
        values = self.ordered()
        if detail >= len(values):
            return f"- {self.name}{now}: " + " | ".join(o.text() for o in values)
        best = self.best()
        numeric = [o.value for o in values if isinstance(o.value, float)]
        span = f" from {_show(min(numeric))} to {_show(max(numeric))}" if len(numeric) > 1 else ""
        head = f"- {self.name}{now}: {len(values)} values{span}, {self.runs} runs; best {best.text()}"
        if detail <= 0:
            return head
        shown = sorted(values, key=lambda o: (STATUS_RANK.get(o.best_status, 3), -o.last_seq))[:detail]
        return head + "; also " + " | ".join(o.text() for o in shown if o is not best)


def _sort_key(value: Any) -> float:
    if isinstance(value, float):
        return value
    if isinstance(value, tuple) and value and isinstance(value[0], float):
        return value[0]
    return float("inf")


def _show(value: Any) -> str:
    if isinstance(value, float):
        return format(value, ".6g")
    if isinstance(value, tuple):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    return str(value)


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def collect(entries: Iterable[tuple[Entry, Changes]], profile: str) -> dict[str, Target]:
    """Per constant (its value on `profile`) and per part (the technique named), the outcomes of what was tried."""
    targets: dict[str, Target] = {}
    for entry, change in entries:
        tried = [(name, _number(value), True) for name, value in change.on(profile).items()]
        tried += [(part, technique or "changed", False) for part, technique in change.parts.items()]
        for name, value, constant in tried:
            target = targets.setdefault(name, Target(name, constant))
            target.outcomes.setdefault(_show(value), Outcome(value)).add(entry)
    return targets


def render(targets: dict[str, Target], budget_chars: int, current: dict[str, str] | None = None) -> str:
    """The map within `budget_chars`: a summary line for every constant first, then the techniques most tried,
    then more detail for each line while room remains."""
    if not targets:
        return ""
    current = current or {}
    heading = "What was tried, per knob or technique (value, best outcome, delta vs the best then; xN runs):"
    order = sorted(targets.values(), key=lambda t: (not t.constant, -t.runs, -t.last_seq, t.name))
    detail = {t.name: 0 for t in order}
    lines = {t.name: t.line(0, current.get(t.name, "")) for t in order}
    constants = [t for t in order if t.constant]
    if len(heading) + sum(len(lines[t.name]) + 1 for t in constants) > budget_chars:
        return _compact(constants, len(order) - len(constants), budget_chars)
    chosen: list[str] = []
    used = len(heading) + 1
    for target in order:
        cost = len(lines[target.name]) + 1
        if used + cost > budget_chars and not target.constant:
            continue
        chosen.append(target.name)
        used += cost
    grown = True
    while grown:  # spell out more values, one at a time per line, while the budget allows
        grown = False
        for name in chosen:
            target = targets[name]
            if detail[name] >= len(target.outcomes):
                continue
            longer = target.line(detail[name] + 1, current.get(name, ""))
            if used + len(longer) - len(lines[name]) <= budget_chars:
                used += len(longer) - len(lines[name])
                lines[name], detail[name] = longer, detail[name] + 1
                grown = True
    omitted = len(order) - len(chosen)
    tail = [f"- ... {omitted} more techniques tried, not shown"] if omitted else []
    return "\n".join([heading, *(lines[n] for n in chosen), *tail])


def _compact(constants: list[Target], techniques: int, budget_chars: int) -> str:
    """When a line per constant does not fit: every constant on one line with its best value, else by name."""
    more = f" ({techniques} techniques tried too, not shown)" if techniques else ""
    entries = [f"{t.name} ({t.runs} runs, best {_show(t.best().value)} {t.best().best_status})" for t in constants]
    text = "Knobs tried (runs, best value): " + "; ".join(entries) + more
    if len(text) <= budget_chars:
        return text
    return "Knobs tried (ask memory for detail): " + ", ".join(t.name for t in constants) + more
