"""What was tried, indexed by what it changed: the gate's structural lookup and the map the hypothesis sees.

Built once from the collection's metadata (one scan) and kept in step with every write. Each experiment is
known by its effective reading: the constants its fingerprint says changed (the code's own word, when it was
coded) and the techniques its idea names. `lookup` returns the experiments that changed exactly the same
things (so a repeat is found however many near-misses surround it); `tried_map` summarises, per knob or
technique, the values tried and how they ended.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from memory.comparison import Change, Reading
from memory.fingerprint import ChangeFingerprint

TRIED_STATUSES = ("keep", "discard", "crash")  # ran: these are what "already tried" means
MAX_SUBSET_TARGETS = 6  # a crashed idea is found again inside a fix with at most this many extra changes


@dataclass
class Entry:
    id: str
    status: str
    seq: int
    title: str
    reading: Reading
    val_bpb: float | None = None
    delta: float | None = None
    lesson: str = ""
    repeat_of: str = ""
    fp_key: str = ""

    @property
    def tried(self) -> bool:
        return self.status in TRIED_STATUSES or (self.status == "repeat" and bool(self.repeat_of))


def effective_reading(reading: Reading, fingerprint_json: str) -> Reading:
    """The reading of an idea corrected by its fingerprint: constants the code really changed replace those the
    words named; techniques named in words stay (a fingerprint shows code units, not what they mean)."""
    fp = ChangeFingerprint.from_json(fingerprint_json)
    if fp is None or fp.empty:
        return reading
    changed = fp.changed_constants(existing_only=True)
    if not changed and fp.units:
        return reading
    changes = [c for c in reading.changes if not _is_constant(c.target)]
    for name, per_profile in sorted(changed.items()):
        values = tuple(dict.fromkeys(_number(v) for v in per_profile.values()))
        changes.append(Change(name, values, 0))
    return Reading(tuple(changes), reading.topic, reading.extras)


def _is_constant(target: str) -> bool:
    base = target.split("@")[0]
    return base.isupper() and not base.startswith("q:")


def _number(text: str) -> Any:
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        return tuple(_number(p) for p in text[1:-1].split(",") if p.strip())
    try:
        return float(text)
    except ValueError:
        return text


class MemoryIndex:
    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self._by_signature: dict[str, set[str]] = {}
        self._by_fp: dict[str, set[str]] = {}
        self._targets: dict | None = None  # the map of what was tried, rebuilt after a write

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, record_id: str, meta: dict[str, Any]) -> None:
        self.remove(record_id)
        self._targets = None
        reading = effective_reading(Reading.from_json(str(meta.get("reading", ""))), str(meta.get("fingerprint", "")))
        entry = Entry(
            id=record_id, status=str(meta.get("status", "")), seq=int(meta.get("seq", 0)),
            title=str(meta.get("title", "")), reading=reading, val_bpb=meta.get("val_bpb"), delta=meta.get("delta"),
            lesson=str(meta.get("lesson") or meta.get("note") or ""), repeat_of=str(meta.get("repeat_of", "")),
            fp_key=str(meta.get("fp_key", "")),
        )
        self.entries[record_id] = entry
        if reading.changes:
            self._by_signature.setdefault(reading.signature, set()).add(record_id)
        if entry.fp_key:
            self._by_fp.setdefault(entry.fp_key, set()).add(record_id)

    def remove(self, record_id: str) -> None:
        old = self.entries.pop(record_id, None)
        if old is None:
            return
        self._by_signature.get(old.reading.signature, set()).discard(record_id)
        if old.fp_key:
            self._by_fp.get(old.fp_key, set()).discard(record_id)

    def lookup(self, reading: Reading) -> list[Entry]:
        """Tried experiments that changed the same things as `reading`, and crashed ones that changed a part of
        them (a re-proposal with a fix); most recent first."""
        if not reading.changes:
            return []
        ids = set(self._by_signature.get(reading.signature, ()))
        targets = sorted(reading.targets)
        if 1 < len(targets) <= MAX_SUBSET_TARGETS:
            for size in range(1, len(targets)):
                for subset in itertools.combinations(targets, size):
                    ids |= {i for i in self._by_signature.get("&".join(subset), ()) if self.entries[i].status == "crash"}
        found = [self.entries[i] for i in ids if self.entries[i].tried]
        return sorted(found, key=lambda e: -e.seq)

    def same_change(self, fp_key: str) -> list[Entry]:
        return sorted((self.entries[i] for i in self._by_fp.get(fp_key, ()) if self.entries[i].tried),
                      key=lambda e: -e.seq)

    def tried_entries(self) -> Iterable[Entry]:
        return (e for e in self.entries.values() if e.status in TRIED_STATUSES)

    def tried_targets(self) -> dict:
        """Per target, the values tried and their outcomes (memory.triedmap.Target), cached until a write."""
        if self._targets is None:
            from memory.triedmap import collect

            self._targets = collect(sorted(self.tried_entries(), key=lambda e: e.seq))
        return self._targets
