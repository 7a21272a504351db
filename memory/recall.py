"""The hypothesis role's view of memory: what matters for the next idea, within a token budget.

Four parts, each bounded so the cost does not grow with the number of experiments: the best result so far
and the chain of kept changes of the run (one filtered query per run, then kept in step by the store), the
past experiments nearest to the current direction (every run in this repository; an n_results-limited vector
query), and the recent failures with their lessons (the store's window of the latest experiments). Tokens
are approximated as characters / 4: tiktoken's encodings download their files on first use, and the budget
is a soft limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from memory.records import MemoryHit

if TYPE_CHECKING:
    from memory.store import ExperimentMemory

CHARS_PER_TOKEN = 4
NEAREST_SHOWN = 8
RECENT_WINDOW = 200  # failures shown at most (the budget usually stops far earlier)
FAILURE_STATUSES = ["discard", "crash", "veto", "skipped"]
MAX_LINE_CHARS = 320
SHARES = {"nearest": 0.45, "chain": 0.30, "failures": 0.25}  # of the budget left after the header and the map
MAP_SHARE = 0.4  # of the budget for the map of what was tried (it takes more if every constant needs it)


@dataclass
class Section:
    key: str
    heading: str
    lines: list[str]  # best first: the order lines are dropped in is from the end
    chronological: bool = False  # shown oldest first once chosen (the chain of kept changes)
    chosen: list[str] = field(default_factory=list)

    def render(self) -> str:
        if not self.chosen:
            return ""
        lines = list(reversed(self.chosen)) if self.chronological else list(self.chosen)
        omitted = len(self.lines) - len(self.chosen)
        if omitted:
            lines.append(f"- ... {omitted} more not shown")
        return "\n".join([self.heading, *lines])


def build_recall(memory: ExperimentMemory, direction: str, *, token_budget: int = 1500, tag: str | None = None) -> str:
    total = memory.next_seq
    if total == 0:
        return "Memory is empty: no earlier experiments in this repository."
    recent = memory.recent()
    if tag is None and recent:
        tag = recent[-1].tag  # the run going on now
    chain = memory.chain(tag) if tag else []
    kept = [h for h in chain if h.status == "keep"]
    query, about = _query(direction, kept, recent)
    nearest = [h for h in memory.nearest(memory.embed(query), NEAREST_SHOWN + 4) if h.status != "repeat"]
    failures = _recent_failures(memory, recent, tag)
    budget = token_budget * CHARS_PER_TOKEN
    tried = memory.tried_map(int(budget * MAP_SHARE))

    header = [f"Memory: {total} earlier experiments in this repository."]
    best = min((h for h in chain if h.val_bpb is not None), key=lambda h: h.val_bpb, default=None)
    if best is not None:
        header.append(f"Best so far in run {tag}: val_bpb {best.val_bpb:.6f} ({best.id}: {best.title}).")
    if tried:
        header += ["", tried]
    sections = [
        Section("chain", f"Kept changes in run {tag} (oldest first):", [_line(h) for h in reversed(kept)],
                chronological=True),
        Section("nearest", f"Past experiments nearest to {about}:",
                [_line(h, similarity=True) for h in nearest[:NEAREST_SHOWN]]),
        Section("failures", "Recent failures and their lessons (newest first):", [_line(h) for h in failures]),
    ]
    return _fit(header, sections, budget)


def _query(direction: str, kept: list[MemoryHit], recent: list[MemoryHit]) -> tuple[str, str]:
    """What to look for: the direction asked, else the current best's changes, else what was tried last (the
    category being explored). Never empty: an empty query finds an arbitrary neighbourhood."""
    if direction.strip():
        return direction, repr(_clip(direction, 80))
    if kept:
        titles = "; ".join(h.title for h in kept[-3:])
        return titles, f"the current best's changes ({_clip(titles, 80)!r})"
    latest = [h for h in recent if h.status != "baseline"][-3:]
    if latest:
        categories = ", ".join(dict.fromkeys(h.category for h in latest if h.category)) or "the latest ideas"
        return "; ".join(h.title for h in latest), f"what was explored last ({_clip(categories, 60)})"
    return "baseline training run", "the baseline"


def _recent_failures(memory: ExperimentMemory, recent: list[MemoryHit], tag: str | None) -> list[MemoryHit]:
    """Failures among the latest experiments (of the run, when given), newest first; a run that is not among
    the latest is looked up by a filter (its own failures are bounded by its length)."""
    hits = [h for h in recent if h.status in FAILURE_STATUSES and (tag is None or h.tag == tag)]
    if not hits and tag and not any(h.tag == tag for h in recent):
        hits = memory.where({"$and": [{"status": {"$in": FAILURE_STATUSES}}, {"tag": tag}]})
    return list(reversed(hits))[:RECENT_WINDOW]


def _line(hit: MemoryHit, similarity: bool = False) -> str:
    parts = [f"- [{hit.status}] {hit.id}"]
    if similarity and hit.similarity:
        parts.append(f"(sim {hit.similarity:.2f})")
    parts.append(hit.title)
    if hit.val_bpb is not None:
        delta = f", {hit.delta:+.4f} vs best" if hit.delta is not None else ""
        parts.append(f"-> val_bpb {hit.val_bpb:.4f}{delta}")
    if hit.lesson:
        parts.append(f"| lesson: {hit.lesson}")
    elif hit.note:
        parts.append(f"| {hit.note}")
    return _clip(" ".join(parts), MAX_LINE_CHARS)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reserve(section: Section) -> int:
    """Characters a shown section costs besides its lines: blank line, heading, "... more not shown"."""
    return 2 + len(section.heading) + 1 + 30


def _fit(header: list[str], sections: list[Section], budget_chars: int) -> str:
    """Give each section its share of the budget, then hand what is left to the sections in priority
    order (nearest, chain, failures), line by line."""
    head = "\n".join(header)
    room = budget_chars - len(head)
    by_key = {s.key: s for s in sections}
    spent = 0
    for key, share in SHARES.items():
        section = by_key[key]
        allowance = int(room * share) - _reserve(section)
        used = 0
        for line in section.lines:
            if used + len(line) + 1 > allowance:
                break
            section.chosen.append(line)
            used += len(line) + 1
        spent += used + (_reserve(section) if section.chosen else 0)
    for key in SHARES:
        section = by_key[key]
        for line in section.lines[len(section.chosen):]:
            cost = len(line) + 1 + (0 if section.chosen else _reserve(section))
            if spent + cost > room:
                break
            section.chosen.append(line)
            spent += cost
    parts = [head] + [text for text in (s.render() for s in sections) if text]
    return "\n\n".join(parts)
