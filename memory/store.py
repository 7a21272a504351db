"""`ExperimentMemory`: a persistent Chroma collection with one record per experiment.

Layout of a memory directory (crew.yaml `memory.path`, by default `.autoresearch/memory` in the repository,
shared by every run there so a new night starts knowing what earlier nights learned):

    <path>/chroma/       the Chroma store (chromadb.PersistentClient)
    <path>/writer.lock   flock held by the one writing process for as long as it has the memory open
    <path>/io.lock       flock the writer holds during each operation, readers while they take a snapshot

Chroma allows one process per directory: even a query writes to the store (it compacts its log into the
index). So only the loop opens the store in place; `read_only=True` (the CLI's search and stats) copies the
directory, between two of the writer's operations, into a temporary directory and queries the copy.

Memory is never the only copy of anything: results.parquet is. A missing or corrupted store, or one that
lacks experiments the Parquet files hold, is rebuilt from them when the writer opens it; the damaged store
is moved aside, not deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import chromadb
import numpy as np
from chromadb.config import Settings
from chromadb.errors import ChromaError

from agents import trainpy
from agents.crew.schemas import Idea
from agents.record.results import ExperimentRecord
from memory import gate, novelty
from memory.bases import BaseTexts, effective
from memory.changes import Changes, declared, profile_of
from memory.embeddings import DEFAULT_EMBEDDING, collection_name, make_embedding_function
from memory.errors import MemoryLockedError, MemoryNotFoundError, MemoryStoreError, MemoryUnavailableError
from memory.fingerprint import fingerprint_or_none
from memory.index import TRIED_STATUSES, IndexFile, MemoryIndex, entry_from_meta
from memory.locks import _acquire_writer_lock, _flocked, _forget_failed_client, _open_lock_file
from memory.reader import READER_VERSION, read
from memory.records import (
    MemoryHit,
    _load_many,
    hit_from_chroma,
    idea_text,
    record_document,
    record_id,
    record_metadata,
    validate_record,
)

log = logging.getLogger("memory")

__all__ = ["ExperimentMemory", "MemoryLockedError", "MemoryNotFoundError", "MemoryStoreError",
           "MemoryUnavailableError"]

# Chroma's defaults (ef_search 100, M 16) gave nearest-neighbour recall far below 0.99 on some vector
# distributions. Measured against brute force (benchmarks/memory_scale.py): 1.000 at 100k MiniLM-like
# experiments (defaults 0.987); on 20k random unit vectors, the hardest case, 0.998 (ef_search 200: 0.94,
# defaults 0.61). On clustered real vectors the search stops early, so ef_search 1000 costs under 1 ms.
HNSW_CONFIG = {"space": "cosine", "ef_construction": 200, "ef_search": 1000, "max_neighbors": 32}
NEAREST_K = 10  # neighbours the novelty gate looks at; near-misses can push the true repeat down a few places
ADD_BATCH = 1000
EMBED_CACHE_SIZE = 256
WARM_INDEX_AT = 20_000  # experiments from which the index of what was tried is loaded in the background on open
RECENT_CACHED = 200  # latest experiments kept at hand for recall
CHAIN_STATUSES = ("keep", "baseline")


# ----------------------------------------------------------------------------------------------- store


class ExperimentMemory:
    """One Chroma record per experiment (id `<tag>/<exp_id>`), plus the novelty gate and recall on top."""

    def __init__(self, path: Path, embedding: str, chroma_dir: Path, read_only: bool, repo: Path | None = None,
                 device: str = "cpu"):
        self.path = path
        self.embedding = embedding
        self.read_only = read_only
        self.device = device  # the device profile values are compared on ("cpu" / "cuda")
        self.bases = BaseTexts(repo if repo is not None else _repo_of(path))  # train.py at each base commit
        self.notices: list[str] = []  # what happened on open (rebuilt, synced): for the loop to show
        self._chroma_dir = chroma_dir
        self._ef = make_embedding_function(embedding)
        self._name = collection_name(embedding)
        self._client: Any = None
        self._collection: Any = None
        self._writer_lock: IO[str] | None = None
        self._io_lock: IO[str] | None = None
        self._snapshot_dir: Path | None = None
        self._rebuild_from: list[Path] = []
        self._next_seq = 0
        # Bounded views the recall needs on every call, kept in step with every write (this process is the only
        # writer; a read-only snapshot never changes): metadata filters cost ~10 ms each at 10k experiments.
        self._recent: deque[MemoryHit] = deque(maxlen=RECENT_CACHED)
        self._chains: dict[str, list[MemoryHit]] = {}  # tag -> its keep and baseline experiments
        self._thread_lock = threading.RLock()
        self._op_depth = 0
        self._embed_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._index: MemoryIndex | None = None  # loaded from index.jsonl, else built from one scan of the metadata
        self._index_file = IndexFile(path / "index.jsonl", {"reader": READER_VERSION, "collection": self._name})
        # prepared candidates not yet recorded, by the fingerprint key they hold: record id -> (key, title)
        self._claims: dict[str, tuple[str, str]] = {}

    # ------------------------------------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        embedding: str = DEFAULT_EMBEDDING,
        rebuild_from: Sequence[Path] = (),
        read_only: bool = False,
        repo: Path | None = None,
        device: str = "cpu",
    ) -> ExperimentMemory:
        """Open the memory at `path`. The writer (the loop) rebuilds a missing or corrupted store from
        `rebuild_from` (results.parquet files) and adds any experiment they hold that the store lacks.
        `read_only` opens a snapshot, safe while the loop writes; it never repairs anything. `repo`: the git
        repository whose commits experiments were made on (default: the one holding `path`); `device`: the
        profile ideas are compared on."""
        path = Path(path)
        if read_only:
            return cls._open_snapshot(path, embedding, repo, device)
        memory = cls(path, embedding, path / "chroma", read_only=False, repo=repo, device=device)
        memory._writer_lock = _acquire_writer_lock(path / "writer.lock")
        memory._io_lock = _open_lock_file(path / "io.lock")
        memory._rebuild_from = [Path(p) for p in rebuild_from]
        try:
            with memory._operation():
                memory._connect_or_recover()
                memory._sync_and_report()
        except BaseException:
            memory.close()
            raise
        for notice in memory.notices:
            log.warning(notice)
        if memory.next_seq >= WARM_INDEX_AT:  # a large record: load its index while the run does its baselines
            threading.Thread(target=memory._warm_index, name="memory-index", daemon=True).start()
        return memory

    def _warm_index(self) -> None:
        try:
            self.index()
        except Exception as exc:  # the first gate call builds it again, and reports what fails there
            log.warning("memory: indexing what was tried in the background failed (%s: %s)", type(exc).__name__, exc)

    @classmethod
    def _open_snapshot(cls, path: Path, embedding: str, repo: Path | None, device: str) -> ExperimentMemory:
        source = path / "chroma"
        if not (source / "chroma.sqlite3").exists():
            raise MemoryNotFoundError(f"no experiment memory at {path} yet (it is created by `autoresearch run`)")
        snapshot = Path(tempfile.mkdtemp(prefix="autoresearch-memory-"))
        memory = cls(path, embedding, snapshot / "chroma", read_only=True, repo=repo, device=device)
        memory._snapshot_dir = snapshot
        try:
            with _open_lock_file(path / "io.lock") as io_lock, _flocked(io_lock, fcntl.LOCK_SH):
                shutil.copytree(source, memory._chroma_dir)
                if memory._index_file.path.exists():
                    shutil.copy(memory._index_file.path, snapshot / "index.jsonl")
            memory._index_file = IndexFile(snapshot / "index.jsonl", memory._index_file.header)
            memory._connect(create=False)
        except MemoryStoreError:
            memory.close()
            raise
        except Exception as exc:
            memory.close()
            raise MemoryUnavailableError(
                f"cannot read the experiment memory at {path} ({type(exc).__name__}: {exc}); the next "
                "`autoresearch run` rebuilds it from results.parquet, or run `autoresearch memory rebuild`"
            ) from exc
        return memory

    def _connect(self, *, create: bool) -> None:
        self._client = chromadb.PersistentClient(
            path=str(self._chroma_dir), settings=Settings(anonymized_telemetry=False, allow_reset=False)
        )
        if create:
            self._collection = self._client.get_or_create_collection(
                self._name, embedding_function=self._ef, configuration={"hnsw": dict(HNSW_CONFIG)}
            )
        else:
            try:
                self._collection = self._client.get_collection(self._name, embedding_function=self._ef)
            except chromadb.errors.NotFoundError:
                raise MemoryNotFoundError(
                    f"the experiment memory at {self.path} has no collection for embedding {self.embedding!r}"
                ) from None
        self._health_check()
        self._next_seq = self._collection.count()
        self._seed_caches()

    def _seed_caches(self) -> None:
        self._chains.clear()
        self._recent.clear()
        if self._next_seq:
            start = max(0, self._next_seq - RECENT_CACHED)
            self._recent.extend(self._get_hits({"seq": {"$gte": start}}))

    def _health_check(self) -> None:
        """Touch the metadata store and the vector index, so corruption shows here rather than mid-run."""
        if self._collection.count() == 0:
            return
        sample = self._collection.get(limit=1, include=["embeddings"])
        self._collection.query(query_embeddings=[sample["embeddings"][0]], n_results=1, include=[])

    def _connect_or_recover(self) -> None:
        existed = (self._chroma_dir / "chroma.sqlite3").exists()
        try:
            self._connect(create=True)
        except Exception as exc:  # any failure to open means the store cannot be trusted: rebuild it
            self._move_aside(f"{type(exc).__name__}: {exc}")
            self._connect(create=True)
            return
        if not existed and self._rebuild_from:
            self.notices.append(f"memory: no store at {self._chroma_dir}; rebuilding it from results.parquet")

    def _move_aside(self, reason: str) -> None:
        self._disconnect()
        self._index_file.drop()
        self._index = None
        _forget_failed_client(self._chroma_dir)
        aside = self._chroma_dir.with_name(f"chroma.corrupt-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
        if self._chroma_dir.exists():
            shutil.move(str(self._chroma_dir), aside)
            kept = f"; the damaged store is kept at {aside}"
        else:
            kept = ""
        self.notices.append(
            f"memory: the store at {self._chroma_dir} could not be used ({reason}); rebuilding it from "
            f"{len(self._rebuild_from)} results.parquet file(s){kept}"
        )

    def _recover(self, reason: str) -> None:
        """Mid-run failure of the store: move it aside and rebuild from Parquet, so the loop goes on."""
        first_new = len(self.notices)
        self._move_aside(reason)
        self._connect(create=True)
        self._sync_and_report()
        for notice in self.notices[first_new:]:
            log.warning(notice)

    def _disconnect(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self._client = self._collection = None

    def close(self) -> None:
        """Release the store and the writer lock; a read-only snapshot is deleted."""
        with self._thread_lock:  # waits for a background indexing pass to finish
            self._disconnect()
        for attr in ("_io_lock", "_writer_lock"):
            fh = getattr(self, attr)
            if fh is not None:
                if attr == "_writer_lock":
                    fh.seek(0)
                    fh.truncate()
                fh.close()  # closing the file releases its flock
                setattr(self, attr, None)
        if self._snapshot_dir is not None:
            shutil.rmtree(self._snapshot_dir, ignore_errors=True)
            self._snapshot_dir = None

    def __enter__(self) -> ExperimentMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- plumbing

    @contextlib.contextmanager
    def _operation(self) -> Iterator[None]:
        """One writer operation: other threads wait, and no reader snapshots the store halfway through."""
        with self._thread_lock:
            # reentrant: an inner operation must not release the flock the outer one holds
            if self._io_lock is None or self._op_depth:
                self._op_depth += 1
                try:
                    yield
                finally:
                    self._op_depth -= 1
                return
            with _flocked(self._io_lock, fcntl.LOCK_EX):
                self._op_depth += 1
                try:
                    yield
                finally:
                    self._op_depth -= 1

    def _guarded(self, action: str, fn: Any) -> Any:
        if self._collection is None:
            raise MemoryUnavailableError("the experiment memory is closed")
        with self._operation():
            try:
                return fn()
            except ChromaError as exc:
                if self.read_only:
                    raise MemoryUnavailableError(f"memory {action} failed: {exc}") from exc
                self._recover(f"{action} failed: {type(exc).__name__}: {exc}")
                return fn()

    def embed(self, text: str) -> np.ndarray:
        """The vector of one text, cached: the loop embeds the same idea for the gate, the reviewer and add."""
        with self._thread_lock:
            vector = self._embed_cache.get(text)
            if vector is None:
                vector = np.asarray(self._ef([text])[0], dtype=np.float32)
                self._embed_cache[text] = vector
                if len(self._embed_cache) > EMBED_CACHE_SIZE:
                    self._embed_cache.popitem(last=False)
            else:
                self._embed_cache.move_to_end(text)
            return vector

    # ------------------------------------------------------------------------------------------ writing

    def add(self, record: ExperimentRecord) -> None:
        """Store one experiment (any status). Adding the same (tag, exp_id) again replaces it."""
        self.add_many([record])

    def add_many(self, records: Sequence[ExperimentRecord], *, vectors: np.ndarray | None = None) -> None:
        """Store experiments in bulk; `vectors` (one unit vector per record, of the idea text) skips embedding."""
        if self.read_only:
            raise MemoryUnavailableError("this experiment memory was opened read-only")
        for record in records:
            validate_record(record)
        if not records:
            return
        if vectors is None:
            texts = [idea_text(r.description, r.rationale) for r in records]
            vectors = np.stack([self.embed(t) for t in texts]) if len(texts) <= 4 else np.asarray(self._ef(texts))
        if len(vectors) != len(records):
            raise ValueError(f"{len(vectors)} vectors for {len(records)} records")
        self._guarded("add", lambda: self._upsert(records, vectors))

    def _upsert(self, records: Sequence[ExperimentRecord], vectors: np.ndarray) -> None:
        ids = [record_id(r.tag, r.exp_id) for r in records]
        existing = self._existing_seqs(ids)
        metas = []
        for rid, record in zip(ids, records, strict=True):
            seq = existing.get(rid)
            if seq is None:  # a new experiment takes the next place in the order; a replaced one keeps its own
                seq, self._next_seq = self._next_seq, self._next_seq + 1
                existing[rid] = seq
            changes, reader = effective(record.description, record.rationale, record.changes, record.fingerprint,
                                        record.parent_commit, self.bases)
            metas.append(record_metadata(record, seq, changes, reader))
        for start in range(0, len(ids), ADD_BATCH):
            end = start + ADD_BATCH
            self._collection.upsert(
                ids=ids[start:end],
                embeddings=np.asarray(vectors[start:end], dtype=np.float32),
                documents=[record_document(r) for r in records[start:end]],
                metadatas=metas[start:end],
            )
        entries = [entry_from_meta(rid, meta) for rid, meta in zip(ids, metas, strict=True)]
        for rid, meta, entry in zip(ids, metas, entries, strict=True):
            self._remember(hit_from_chroma(rid, meta, None))
            self._claims.pop(rid, None)  # its record is in: the fingerprint is the record's now
            if self._index is not None:
                self._index.add(entry)
        self._index_file.append(entries)  # the file stays whole even before the index is first used

    def _remember(self, hit: MemoryHit) -> None:
        """Keep the bounded views in step with a write."""
        replaced = next((i for i, old in enumerate(self._recent) if old.id == hit.id), None)
        if replaced is not None:
            self._recent[replaced] = hit
        elif not self._recent or hit.seq > self._recent[-1].seq:
            self._recent.append(hit)
        chain = self._chains.get(hit.tag)
        if chain is not None:
            chain[:] = [h for h in chain if h.id != hit.id]
            if hit.status in CHAIN_STATUSES:
                chain.append(hit)
                chain.sort(key=lambda h: h.seq)

    # ------------------------------------------------------------------------------------------ the index

    def index(self) -> MemoryIndex:
        """What was tried, by what it changed: read from index.jsonl, else built with one pass over the metadata
        (and saved); readings of an older reader are redone then."""
        with self._operation():
            if self._index is None:
                self._index = self._index_file.load(self._next_seq)
                if self._index is not None and self._index_file.lines > 2 * self._next_seq + 1000:
                    self._index_file.write(self._index)  # compact the lines replaced records left behind
            if self._index is None:
                index = MemoryIndex(self._index_file.header)
                stale: list[tuple[str, dict]] = []
                for rid, meta in self._scan():
                    if "changes" not in meta or meta.get("reader") not in ("", READER_VERSION):
                        meta = dict(meta)
                        meta["changes"], meta["reader"] = effective(
                            str(meta.get("title", "")), str(meta.get("rationale", "")), str(meta.get("declared", "")),
                            str(meta.get("fingerprint", "")), str(meta.get("parent_commit", "")), self.bases)
                        stale.append((rid, meta))
                    index.add(entry_from_meta(rid, meta))
                if stale and not self.read_only:  # the store itself carries the current readings from now on
                    for start in range(0, len(stale), ADD_BATCH):
                        batch = stale[start:start + ADD_BATCH]
                        self._collection.update(ids=[r for r, _ in batch], metadatas=[m for _, m in batch])
                self._index_file.write(index)
                self._index = index
                if self.bases.note() and self.bases.note() not in self.notices:
                    self.notices.append(self.bases.note())
                    log.warning(self.bases.note())
            return self._index

    def _scan(self, page: int = 5000) -> Iterator[tuple[str, dict]]:
        for offset in range(0, self._next_seq, page):
            res = self._guarded("get", lambda o=offset: self._collection.get(limit=page, offset=o, include=["metadatas"]))
            yield from zip(res["ids"], res["metadatas"], strict=True)

    def hits(self, ids: list[str]) -> list[MemoryHit]:
        """Experiments by record id, in the order asked (unknown ids left out)."""
        if not ids:
            return []
        res = self._guarded("get", lambda: self._collection.get(ids=list(dict.fromkeys(ids)),
                                                               include=["metadatas", "documents"]))
        found = {rid: hit_from_chroma(rid, meta, doc)
                 for rid, meta, doc in zip(res["ids"], res["metadatas"], res["documents"], strict=True)}
        return [found[i] for i in ids if i in found]

    def _existing_seqs(self, ids: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for start in range(0, len(ids), ADD_BATCH):
            got = self._collection.get(ids=ids[start : start + ADD_BATCH], include=["metadatas"])
            found.update({rid: int(meta.get("seq", 0)) for rid, meta in zip(got["ids"], got["metadatas"], strict=True)})
        return found

    def _present_ids(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), ADD_BATCH):  # ids only: fetching metadata would cost ten times more
            found.update(self._collection.get(ids=ids[start : start + ADD_BATCH], include=[])["ids"])
        return found

    def _sync(self, parquet_paths: Sequence[Path]) -> int:
        """Add the experiments the Parquet files hold and the store lacks (all of them for a new store)."""
        if not parquet_paths:
            return 0
        records = _load_many(parquet_paths, self.notices)
        ids = [record_id(r.tag, r.exp_id) for r in records]
        present = self._present_ids(ids)
        missing = [r for r, rid in zip(records, ids, strict=True) if rid not in present]
        if missing:
            vectors = np.asarray(self._ef([idea_text(r.description, r.rationale) for r in missing]))
            self._upsert(missing, vectors)
        return len(missing)

    def sync_from(self, parquet_paths: Sequence[Path]) -> int:
        """Add the experiments these results hold and the store lacks; returns how many were added."""
        if self.read_only:
            raise MemoryUnavailableError("this experiment memory was opened read-only")
        with self._operation():
            return self._sync([Path(p) for p in parquet_paths if Path(p).exists()])

    def _sync_and_report(self) -> None:
        added = self._sync(self._rebuild_from)
        if added:
            self.notices.append(f"memory: added {added} experiment(s) from results.parquet that the store lacked")
        if self.bases.note():
            self.notices.append(self.bases.note())

    def rebuild(self, parquet_paths: list[Path]) -> int:
        """Drop the collection and fill it again from results.parquet files; returns how many were stored."""
        if self.read_only:
            raise MemoryUnavailableError("this experiment memory was opened read-only")
        for path in parquet_paths:
            if not Path(path).exists():
                raise FileNotFoundError(f"{path}: no such results file")
        with self._operation():
            self._client.delete_collection(self._name)
            self._collection = self._client.create_collection(
                self._name, embedding_function=self._ef, configuration={"hnsw": dict(HNSW_CONFIG)}
            )
            self._next_seq = 0
            self._index = None
            self._index_file.drop()
            self._seed_caches()
            self._sync([Path(p) for p in parquet_paths])
            return self._collection.count()

    # ------------------------------------------------------------------------------------------ reading

    def nearest(
        self, vector: np.ndarray, k: int, where: dict | None = None, *, with_documents: bool = False
    ) -> list[MemoryHit]:
        """The k records nearest to a vector, most similar first (similarity = cosine)."""
        include = ["metadatas", "distances"] + (["documents"] if with_documents else [])

        def query() -> list[MemoryHit]:
            if self._next_seq == 0:
                return []
            res = self._collection.query(
                query_embeddings=[np.asarray(vector, dtype=np.float32)],
                n_results=min(k, self._next_seq),
                where=where,
                include=include,
            )
            docs = res["documents"][0] if with_documents else [None] * len(res["ids"][0])
            return [
                hit_from_chroma(rid, meta, doc, 1.0 - float(dist))
                for rid, meta, doc, dist in zip(
                    res["ids"][0], res["metadatas"][0], docs, res["distances"][0], strict=True
                )
            ]

        return self._guarded("query", query)

    def where(self, where: dict, limit: int | None = None, with_documents: bool = False) -> list[MemoryHit]:
        """Records matching a metadata filter, in the order they entered memory."""
        return self._guarded("get", lambda: self._get_hits(where, limit, with_documents))

    def _get_hits(self, where: dict, limit: int | None = None, with_documents: bool = False) -> list[MemoryHit]:
        include = ["metadatas", "documents"] if with_documents else ["metadatas"]
        res = self._collection.get(where=where, limit=limit, include=include)
        docs = res.get("documents") or [None] * len(res["ids"])
        hits = [hit_from_chroma(rid, meta, doc) for rid, meta, doc in zip(res["ids"], res["metadatas"], docs, strict=True)]
        return sorted(hits, key=lambda h: h.seq)

    def recent(self) -> list[MemoryHit]:
        """The latest experiments (up to RECENT_CACHED), oldest first."""
        return list(self._recent)

    def chain(self, tag: str) -> list[MemoryHit]:
        """The keep and baseline experiments of one run, oldest first."""
        with self._operation():
            if tag not in self._chains:
                self._chains[tag] = self.where({"$and": [{"tag": tag}, {"status": {"$in": list(CHAIN_STATUSES)}}]})
            return list(self._chains[tag])

    def count(self) -> int:
        return self._guarded("count", lambda: self._collection.count())

    @property
    def next_seq(self) -> int:
        """Order number the next new experiment will get (= how many are stored)."""
        return self._next_seq

    def read_idea(self, idea: Idea, train_py: str | None = None) -> Changes:
        """What an idea changes: its declared changes resolved against `train_py` (default: the repository's), or,
        for an idea without them (or with a value that is not Python), the English reader's reading."""
        text = train_py if train_py is not None else self.bases.current()
        if idea.changes:
            try:
                return declared(idea.changes, text)
            except (SyntaxError, ValueError, RecursionError):
                pass
        return read(idea.title, idea.rationale, text)

    def check_idea(self, idea: Idea, *, threshold: float = novelty.DEFAULT_THRESHOLD, train_py: str | None = None,
                   judge: gate.RepeatJudge | None = None, device: str | None = None) -> novelty.NoveltyVerdict:
        """Before coding: does this idea repeat an experiment already tried? `train_py` is the file the idea was
        proposed on (default: the repository's); `device` the profile values are compared on (default: the
        memory's); `judge` an LLM judge for changes to code (else the structure decides); `threshold` the least
        similarity at which an embedding neighbour is considered."""
        text = train_py if train_py is not None else self.bases.current()
        change = self.read_idea(idea, text)
        profile = profile_of(text, device or self.device)
        index = self.index()
        structural = index.lookup(change)
        neighbours = self.nearest(self.embed(idea_text(idea.title, idea.rationale)), NEAREST_K)
        nearest = [h for h in neighbours if h.similarity >= threshold and
                   (h.status in TRIED_STATUSES or h.status == "repeat" and h.repeat_of)]
        cited = self.find(idea.retry_of) if idea.retry_of else None
        inputs = gate.GateInputs(idea, change, profile, structural, nearest, cited)
        return gate.decide(inputs, index, self.hits, judge)

    def check_change(self, base_text: str, new_text: str, *, retry_of: str | None = None,
                     claimant: str = "") -> novelty.NoveltyVerdict:
        """After coding, before any GPU time: was this change (by its fingerprint) tried before, or is it held by
        another prepared candidate (`claimant`: this candidate's record id, `<tag>/<exp_id>`)?"""
        fp = fingerprint_or_none(base_text, new_text)
        if fp is None:
            return self.check_diff(novelty.normalised_diff_hash(base_text, new_text), retry_of=retry_of)
        held = self._holder(fp.key, claimant)
        if held is not None:
            return held
        same = self.hits([e.id for e in self.index().same_change(fp.key)][:20])
        verdict = novelty.diff_verdict(same, retry_of)
        if verdict.novel and verdict.kind == "novel":  # experiments recorded before fingerprints existed
            legacy = self.check_diff(novelty.normalised_diff_hash(base_text, new_text), retry_of=retry_of)
            if not legacy.novel or legacy.kind == "retry":
                return legacy
        return verdict

    def claim(self, claimant: str, base_text: str, new_text: str, title: str) -> novelty.NoveltyVerdict:
        """Hold this change's fingerprint for a prepared candidate until its record is added (any status): another
        candidate with the same change is refused meanwhile, so two threads never train one change twice."""
        fp = fingerprint_or_none(base_text, new_text)
        if fp is None:
            return novelty.novel_verdict(judged_by="fingerprint")
        with self._thread_lock:
            held = self._holder(fp.key, claimant)
            if held is None:
                self._claims[claimant] = (fp.key, title)
        return held or novelty.novel_verdict(judged_by="fingerprint")

    def _holder(self, key: str, claimant: str) -> novelty.NoveltyVerdict | None:
        with self._thread_lock:
            holder = next(((rid, title) for rid, (k, title) in self._claims.items() if k == key and rid != claimant),
                          None)
        if holder is None:
            return None
        tag, _, exp_id = holder[0].rpartition("/")
        hit = MemoryHit(id=holder[0], exp_id=exp_id, tag=tag, status="prepared", title=holder[1])
        return novelty.diff_verdict([hit])

    def check_diff(self, diff_hash: str, *, retry_of: str | None = None) -> novelty.NoveltyVerdict:
        """Was exactly this change (normalised diff hash) tried before? For records without a fingerprint."""
        if not diff_hash:
            raise ValueError("check_diff needs the normalised diff hash of the change (normalised_diff_hash)")
        matches = [h for h in self.where({"diff_hash": diff_hash}, limit=50) if h.status in TRIED_STATUSES]
        return novelty.diff_verdict(matches, retry_of)

    def find(self, exp_id: str) -> MemoryHit | None:
        """An experiment by `exp_id` or `<tag>/<exp_id>`; the latest one when several runs used the id."""
        if "/" in exp_id:
            hits = self._guarded("get", lambda: self._collection.get(ids=[exp_id], include=["metadatas", "documents"]))
            return hit_from_chroma(hits["ids"][0], hits["metadatas"][0], hits["documents"][0]) if hits["ids"] else None
        hits = self.where({"exp_id": exp_id}, limit=100, with_documents=True)
        return hits[-1] if hits else None

    def recall(self, direction: str, *, token_budget: int = 1500, tag: str | None = None) -> str:
        """What the hypothesis role should know about `direction`, within `token_budget` tokens."""
        from memory.recall import build_recall

        return build_recall(self, direction, token_budget=token_budget, tag=tag)

    def tried_map(self, budget_chars: int) -> str:
        """Per constant or part, the values or techniques tried and their outcomes, within `budget_chars`."""
        from memory import triedmap

        try:
            model = trainpy.read(self.bases.current())
        except SyntaxError:
            return ""
        profile = model.profile(self.device).name
        current = {name: c.spellings[profile] for name, c in model.constants.items() if profile in c.spellings}
        return triedmap.render(self.index().tried_targets(profile), budget_chars, current)

    def similar(self, text: str, k: int = 5) -> list[MemoryHit]:
        """Past experiments nearest to a text (refused repeats left out: they duplicate what they cite)."""
        hits = self.nearest(self.embed(text), k + NEAREST_K, with_documents=True)
        return [h for h in hits if h.status != "repeat"][:k]

    def search(self, query: str, k: int = 10) -> list[MemoryHit]:
        return self.nearest(self.embed(query), k, with_documents=True)

    def stats(self) -> dict:
        """Counts by status and tag, each run's best (kept) val_bpb, time span; one pass over the metadata."""
        from memory.stats import memory_stats

        return memory_stats(self.path, self.embedding, self.count(), self._scan())


def _repo_of(path: Path) -> Path:
    """The repository a memory directory belongs to: `<repo>/.autoresearch/memory` by default, else the working
    directory."""
    candidate = Path(path).resolve().parent.parent
    return candidate if (candidate / ".git").exists() or (candidate / "train.py").exists() else Path.cwd()
