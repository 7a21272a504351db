"""The idea gate: is a proposed idea an experiment already tried? Embeddings retrieve, readings (or an LLM) judge.

Candidates are the experiments that changed the same knobs or parts (the index's structural lookup, however
far their wording is from the idea's) and those nearest in embedding. Only what was tried counts: runs
that were kept, discarded or crashed, and refusals of those; a vetoed or skipped idea never blocks another.

Offline, the idea's structured reading is compared with each candidate's (its fingerprint corrected for what
the code really changed): the same targets with the same values make a repeat. With an LLM judge, the judge
sees the idea and the candidates with their fingerprints and outcomes and names the one it repeats, or none.
Unsure means admit: the nearest related experiments go to the coder as context instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from agents.crew.schemas import Idea
from memory.comparison import Reading, compare
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
    """The judge could not answer this time; the reading decides instead (and the verdict says so)."""


@dataclass
class GateInputs:
    idea: Idea
    reading: Reading
    structural: list[Entry]  # same targets (index lookup), most recent first
    nearest: list[MemoryHit]  # embedding neighbours that were tried, most similar first
    cited: MemoryHit | None  # the experiment retry_of names


def decide(inputs: GateInputs, index: MemoryIndex, fetch: Callable[[list[str]], list[MemoryHit]],
           judge: RepeatJudge | None = None) -> NoveltyVerdict:
    idea, reading = inputs.idea, inputs.reading
    nearest = inputs.nearest[0] if inputs.nearest else None
    offline_match, offline_reason = _offline(reading, inputs, index)
    judged_by, note = "reading", ""
    match_id, reason = offline_match, offline_reason
    if judge is not None:
        candidates = _judge_candidates(inputs, fetch)
        if candidates:
            try:
                match_id, reason = judge.decide(idea, candidates)
                judged_by = judge.name
            except JudgeUnavailable as exc:
                note = f"the judge {judge.name} could not answer ({exc}); the structured reading decided"
                log.warning("memory: %s", note)
    match = _cited_original(match_id, index, fetch) if match_id else None
    related = _related(reading, inputs, index, fetch, exclude=match.id if match else "")
    if match is None:
        why = reason if match_id is None and reason else ""
        if note:
            why = f"{why}; {note}" if why else note
        return idea_verdict(None, why, idea.retry_of, inputs.cited, nearest, related, judged_by)
    verdict = idea_verdict(match, reason + (f"; {note}" if note else ""), idea.retry_of, inputs.cited, nearest,
                           related, judged_by)
    return verdict


def _offline(reading: Reading, inputs: GateInputs, index: MemoryIndex) -> tuple[str | None, str]:
    """The first tried experiment whose reading is the same change (structural candidates first)."""
    seen: set[str] = set()
    closest_reason = ""
    for entry in [*inputs.structural, *(index.entries.get(h.id) for h in inputs.nearest)]:
        if entry is None or entry.id in seen or not entry.tried:
            continue
        seen.add(entry.id)
        result = compare(reading, entry.reading, old_crashed=entry.status == "crash")
        if result.same:
            return entry.id, result.reason
        if not closest_reason and result.same is False:
            closest_reason = result.reason
    return None, closest_reason


def _judge_candidates(inputs: GateInputs, fetch: Callable[[list[str]], list[MemoryHit]]) -> list[MemoryHit]:
    structural = fetch([e.id for e in inputs.structural[:JUDGE_CANDIDATES]])
    seen = {h.id for h in structural}
    out = list(structural)
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


def _related(reading: Reading, inputs: GateInputs, index: MemoryIndex,
             fetch: Callable[[list[str]], list[MemoryHit]], exclude: str) -> list[MemoryHit]:
    """Tried experiments on the same knobs or parts (other values), then the nearest ones: context for the coder."""
    ids = [e.id for e in inputs.structural if e.id != exclude][:RELATED_SHOWN]
    if len(ids) < RELATED_SHOWN and reading.targets:
        for hit in inputs.nearest:
            entry = index.entries.get(hit.id)
            if entry is not None and entry.reading.targets & reading.targets and hit.id not in ids \
                    and hit.id != exclude:
                ids.append(hit.id)
            if len(ids) >= RELATED_SHOWN:
                break
    by_id = {h.id: h for h in inputs.nearest}
    missing = [i for i in ids if i not in by_id]
    by_id.update({h.id: h for h in fetch(missing)} if missing else {})
    return [by_id[i] for i in ids if i in by_id]
