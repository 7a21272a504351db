"""The idea gate: is a proposed idea an experiment already tried? Structure decides; for parts, a judge.

Candidates are the tried experiments that changed the same constants or parts (the index's lookup, however far
their wording is from the idea's) and those nearest in embedding. Only what ran counts: a vetoed or skipped idea
never blocks another.

- Constants: the same constants with the same values on the run's device profile are the same experiment (by
  value: `0.6 * 0.05` is `0.03`), whatever the titles say; another value, another constant, or code changed
  besides is another experiment. No judge is asked.
- Parts: with an LLM judge (an LLM crew), the judge sees the idea and the candidates with what they changed and
  names the one it repeats, or none; offline, or when the judge cannot answer, the same part with the same
  technique name decides.
- Ideas that came without changes are read by `memory.reader`; a reading that is not sure of everything its
  title asks goes to the judge, else it admits.
Unsure means admit: the related experiments go to the coder as context instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from agents.crew.schemas import Idea
from memory.changes import Changes, same
from memory.index import Entry, MemoryIndex
from memory.novelty import NoveltyVerdict, idea_verdict
from memory.records import MemoryHit

log = logging.getLogger("memory")

JUDGE_CANDIDATES = 8  # past experiments an LLM judge is shown
RELATED_SHOWN = 3


class RepeatJudge(Protocol):
    """An LLM judge (memory.judge.LLMJudge): names the candidate the idea repeats, or None."""

    name: str

    def decide(self, idea: Idea, candidates: Sequence[MemoryHit]) -> tuple[str | None, str]: ...


class JudgeUnavailable(RuntimeError):
    """The judge could not answer this time; the structure decides instead (and the verdict says so)."""


@dataclass
class GateInputs:
    idea: Idea
    change: Changes  # declared (resolved against the idea's train.py) or read from its words
    profile: str  # the device profile the run uses: values are compared there
    structural: list[Entry]  # same constants or parts (index lookup), most recent first
    nearest: list[MemoryHit]  # embedding neighbours that were tried, most similar first
    cited: MemoryHit | None  # the experiment retry_of names


def decide(inputs: GateInputs, index: MemoryIndex, fetch: Callable[[list[str]], list[MemoryHit]],
           judge: RepeatJudge | None = None) -> NoveltyVerdict:
    idea, change = inputs.idea, inputs.change
    nearest = inputs.nearest[0] if inputs.nearest else None
    match_id, reason = _structural(inputs, index)
    judged_by = "structure" if change.source == "declared" else "reading"
    note = ""
    if judge is not None and (change.parts or change.source == "reading" and not change.complete):
        candidates = _judge_candidates(inputs, fetch)
        if candidates:
            try:
                match_id, reason = judge.decide(idea, candidates)
                judged_by = judge.name
            except JudgeUnavailable as exc:
                note = f"the judge {judge.name} could not answer ({exc}); the structure decided"
                log.warning("memory: %s", note)
    match = _cited_original(match_id, index, fetch) if match_id else None
    related = _related(inputs, index, fetch, exclude=match.id if match else "")
    reason = "; ".join(x for x in (reason, note) if x)
    return idea_verdict(match, reason, idea.retry_of, inputs.cited, nearest, related, judged_by)


def _structural(inputs: GateInputs, index: MemoryIndex) -> tuple[str | None, str]:
    """The first tried experiment that is the same change (structural candidates first), else why the closest
    one is not."""
    seen: set[str] = set()
    closest = ""
    for entry in [*inputs.structural, *(index.entries.get(h.id) for h in inputs.nearest)]:
        if entry is None or entry.id in seen or not entry.tried:
            continue
        seen.add(entry.id)
        verdict, reason = same(inputs.change, index.change(entry.id), inputs.profile)
        if verdict:
            return entry.id, reason
        if not closest and verdict is False:
            closest = reason
    return None, closest


def _judge_candidates(inputs: GateInputs, fetch: Callable[[list[str]], list[MemoryHit]]) -> list[MemoryHit]:
    out = fetch([e.id for e in inputs.structural[:JUDGE_CANDIDATES]])
    seen = {h.id for h in out}
    for hit in inputs.nearest:
        if len(out) >= JUDGE_CANDIDATES:
            break
        if hit.id not in seen:
            out.append(hit)
            seen.add(hit.id)
    return out


def _cited_original(record_id: str, index: MemoryIndex, fetch: Callable[[list[str]], list[MemoryHit]]
                    ) -> MemoryHit | None:
    """The experiment to cite: a refused repeat is cited through the experiment it repeated."""
    entry = index.entries.get(record_id)
    if entry is not None and entry.status == "repeat" and entry.repeat_of in index.entries:
        record_id = entry.repeat_of
    hits = fetch([record_id])
    return hits[0] if hits else None


def _related(inputs: GateInputs, index: MemoryIndex, fetch: Callable[[list[str]], list[MemoryHit]],
             exclude: str) -> list[MemoryHit]:
    """Tried experiments on the same constants or parts (other values), then the nearest ones that touch them:
    context for the coder."""
    ids = [e.id for e in inputs.structural if e.id != exclude][:RELATED_SHOWN]
    ours = set(inputs.change.constants) | inputs.change.roots
    for hit in inputs.nearest:
        if len(ids) >= RELATED_SHOWN:
            break
        entry = index.entries.get(hit.id)
        if entry is not None and hit.id not in ids and hit.id != exclude:
            theirs = index.change(hit.id)
            if ours & (set(theirs.constants) | theirs.roots) or not ours:
                ids.append(hit.id)
    by_id = {h.id: h for h in inputs.nearest}
    missing = [i for i in ids if i not in by_id]
    by_id.update({h.id: h for h in fetch(missing)} if missing else {})
    return [by_id[i] for i in ids if i in by_id]
