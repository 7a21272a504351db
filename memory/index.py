"""What was tried, indexed by what it changed, kept in a file beside the store so opening costs no scan.

Each experiment is known by its `Changes` (memory.changes): the fingerprint's constants and code units where it
was coded, the technique names its idea declared, or the English reader's reading (stored with the reader's
version). `lookup` returns the experiments that changed the same constants, the same parts, or a technique with
the same words, however many near-misses surround them; `same_change` those with the same fingerprint.

`index.jsonl` holds one line per experiment after a header naming the format and the reader's version; every
write appends a line (the last one for an id wins). It is trusted only when the header matches and it covers
exactly the experiments the store holds; otherwise the store rebuilds it with one scan.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from memory.changes import Changes, content_words

TRIED_STATUSES = ("keep", "discard", "crash")  # ran: these are what "already tried" means
INDEX_FORMAT = 1


@dataclass
class Entry:
    id: str
    status: str
    seq: int
    title: str
    changes: str  # Changes JSON
    val_bpb: float | None = None
    delta: float | None = None
    lesson: str = ""
    repeat_of: str = ""
    fp_key: str = ""

    @property
    def tried(self) -> bool:
        return self.status in TRIED_STATUSES or (self.status == "repeat" and bool(self.repeat_of))

    @property
    def change(self) -> Changes:
        return Changes.from_json(self.changes) or Changes(complete=False, source="reading")


def entry_from_meta(record_id: str, meta: dict[str, Any]) -> Entry:
    return Entry(id=record_id, status=str(meta.get("status", "")), seq=int(meta.get("seq", 0)),
                 title=str(meta.get("title", "")), changes=str(meta.get("changes", "")),
                 val_bpb=meta.get("val_bpb"), delta=meta.get("delta"),
                 lesson=str(meta.get("lesson") or meta.get("note") or ""), repeat_of=str(meta.get("repeat_of", "")),
                 fp_key=str(meta.get("fp_key", "")))


class MemoryIndex:
    def __init__(self, header: dict[str, Any] | None = None) -> None:
        self.header = dict(header or {})
        self.entries: dict[str, Entry] = {}
        self._parsed: dict[str, Changes] = {}
        self._keys: dict[str, set[str]] = {}  # "c:<signature>", "p:<root>", "w:<word>", "f:<fp key>" -> ids
        self._targets: dict | None = None  # the map of what was tried, rebuilt after a write
        self._lock = threading.RLock()  # the writer adds while preparing threads look up

    def __len__(self) -> int:
        return len(self.entries)

    def change(self, record_id: str) -> Changes:
        with self._lock:
            return self._parsed[record_id]

    def add(self, entry: Entry) -> None:
        change = entry.change
        with self._lock:
            self.remove(entry.id)
            self._targets = None
            self.entries[entry.id], self._parsed[entry.id] = entry, change
            for key in self._index_keys(entry, change):
                self._keys.setdefault(key, set()).add(entry.id)

    @staticmethod
    def _index_keys(entry: Entry, change: Changes) -> Iterator[str]:
        if change.constants:
            yield "c:" + change.signature
        yield from ("p:" + root for root in change.roots)
        for technique in change.parts.values():
            yield from ("w:" + w for w in content_words(technique))
        if entry.fp_key:
            yield "f:" + entry.fp_key

    def remove(self, record_id: str) -> None:
        with self._lock:
            old = self.entries.pop(record_id, None)
            if old is not None:
                for key in self._index_keys(old, self._parsed.pop(record_id)):
                    self._keys.get(key, set()).discard(record_id)

    def lookup(self, change: Changes) -> list[Entry]:
        """Tried experiments that changed the same constants, touched the same parts, or named a technique with
        one of the idea's words; most recent first."""
        ids: set[str] = set()
        with self._lock:
            if change.constants:
                ids |= self._keys.get("c:" + change.signature, set())
            for root in change.roots:
                ids |= self._keys.get("p:" + root, set())
            if change.words and not change.constants:  # a technique in words: those naming two of its words
                counts: dict[str, int] = {}
                for word in change.words:
                    for i in self._keys.get("w:" + word, ()):
                        counts[i] = counts.get(i, 0) + 1
                ids |= {i for i, n in counts.items() if n >= min(2, len(change.words))}
            return sorted((self.entries[i] for i in ids if self.entries[i].tried), key=lambda e: -e.seq)

    def same_change(self, fp_key: str) -> list[Entry]:
        with self._lock:
            return sorted((self.entries[i] for i in self._keys.get("f:" + fp_key, ()) if self.entries[i].tried),
                          key=lambda e: -e.seq)

    def tried_entries(self) -> list[Entry]:
        with self._lock:
            return [e for e in self.entries.values() if e.status in TRIED_STATUSES]

    def tried_targets(self, profile: str) -> dict:
        """Per constant or technique, the values tried and their outcomes (memory.triedmap), cached until a write."""
        from memory.triedmap import collect

        with self._lock:
            if self._targets is None or self._targets.get("profile") != profile:
                entries = sorted(self.tried_entries(), key=lambda e: e.seq)
                self._targets = {"profile": profile, "map": collect(((e, self._parsed[e.id]) for e in entries),
                                                                    profile)}
            return self._targets["map"]


# ---------------------------------------------------------------------------------------------- the file


class IndexFile:
    """index.jsonl: a header line, then one line per write (appended; the last line of an id wins)."""

    def __init__(self, path: Path, header: dict[str, Any]):
        self.path, self.header = Path(path), {"index": INDEX_FORMAT, **header}
        self.lines = 0  # entry lines read by `load` (more than the entries: replaced ones; compacted on open)

    def load(self, expected: int) -> MemoryIndex | None:
        """The index, if the file matches the header and holds exactly `expected` experiments; else None."""
        try:
            with open(self.path) as fh:
                if json.loads(fh.readline() or "null") != self.header:
                    return None
                index = MemoryIndex(self.header)
                self.lines = 0
                for line in fh:
                    self.lines += 1
                    try:
                        index.add(Entry(**json.loads(line)))
                    except (ValueError, TypeError):
                        return None  # a torn or foreign line: rebuild rather than trust the rest
        except (OSError, ValueError):
            return None
        return index if len(index) == expected else None

    def append(self, entries: list[Entry]) -> None:
        if not self.path.exists():
            return  # no valid file to extend: the next open rebuilds it
        with open(self.path, "a") as fh:
            fh.writelines(json.dumps(asdict(e), separators=(",", ":")) + "\n" for e in entries)

    def write(self, index: MemoryIndex) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as fh:
            fh.write(json.dumps(self.header) + "\n")
            fh.writelines(json.dumps(asdict(e), separators=(",", ":")) + "\n" for e in index.entries.values())
        os.replace(tmp, self.path)

    def drop(self) -> None:
        self.path.unlink(missing_ok=True)
