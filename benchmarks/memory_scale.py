"""Experiment memory at scale: insert and query latency, HNSW recall, embedding cost, gate quality.

    python benchmarks/memory_scale.py                 # 1k and 10k experiments
    python benchmarks/memory_scale.py --with-100k     # adds 100k (about 10 minutes on 2 cores)
    python benchmarks/memory_scale.py --sizes --compare-default --random-hnsw 50000   # HNSW settings only

Synthetic experiments skip the embedding model: their vectors are real MiniLM vectors of the labelled ideas
plus noise, so they cluster the way many tries of similar ideas do (where HNSW recall suffers most).
Latency of the novelty check and recall excludes embedding the query (measured separately, per record).
Targets: p50 <= 10 ms at 10k and <= 30 ms at 100k; embedding <= 20 ms per record; precision/recall >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.crew.schemas import Idea  # noqa: E402
from agents.record.results import ExperimentRecord  # noqa: E402
from memory import DEFAULT_THRESHOLD, ExperimentMemory  # noqa: E402
from memory.embeddings import embed_texts, load_minilm  # noqa: E402
from memory.novelty import score_threshold  # noqa: E402
from memory.records import idea_text  # noqa: E402
from memory.store import HNSW_CONFIG  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
STATUSES = ["discard"] * 10 + ["keep"] * 4 + ["crash", "veto", "skipped", "repeat"]
PER_NIGHT = 100


def ms(values: list[float]) -> str:
    a = np.asarray(values) * 1000
    return f"p50 {np.percentile(a, 50):6.2f} ms  p95 {np.percentile(a, 95):6.2f} ms"


def load_pairs(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def gate_quality() -> None:
    for name in ("idea_pairs.jsonl", "idea_pairs_holdout.jsonl"):
        rows = load_pairs(name)
        a = embed_texts([idea_text(r["a"]["title"], r["a"]["rationale"]) for r in rows])
        b = embed_texts([idea_text(r["b"]["title"], r["b"]["rationale"]) for r in rows])
        pairs = [(float(s), r["a"]["title"], r["b"]["title"], r["label"] == "repeat")
                 for s, r in zip((a * b).sum(axis=1), rows, strict=True)]
        s = score_threshold(pairs, DEFAULT_THRESHOLD)
        print(f"  {name:26s} {len(rows):4d} pairs  precision {s.precision:.3f}  recall {s.recall:.3f}  "
              f"(tp {s.true_pos}, fp {s.false_pos}, fn {s.false_neg}) at threshold {DEFAULT_THRESHOLD}")


def embedding_cost(texts: list[str]) -> None:
    model = load_minilm()
    model.encode(texts[:2])  # warm
    single = []
    for text in texts[:64]:
        t = time.perf_counter()
        embed_texts([text])
        single.append(time.perf_counter() - t)
    t = time.perf_counter()
    embed_texts(texts)
    batched = (time.perf_counter() - t) / len(texts)
    print(f"  one record at a time: {ms(single)};  batched (rebuild): {batched * 1000:.2f} ms per record")


def synthetic(n: int, bases: np.ndarray, titles: list[str], rng: np.random.Generator):
    """n experiments over nights of PER_NIGHT, each a noisy copy of a real idea vector."""
    which = rng.integers(0, len(bases), size=n)
    vectors = bases[which] + rng.normal(scale=0.04, size=(n, bases.shape[1])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    records = []
    for i in range(n):
        status = STATUSES[i % len(STATUSES)]
        records.append(ExperimentRecord(
            exp_id=f"{i % PER_NIGHT:04d}", tag=f"night{i // PER_NIGHT:05d}", status=status,
            description=f"{titles[which[i]]} (variant {rng.integers(1000)})", rationale="synthetic",
            val_bpb=None if status in ("crash", "veto", "skipped", "repeat") else float(1 + rng.normal(scale=0.01)),
            delta=float(rng.normal(scale=0.003)), lesson=f"lesson {i}", diff_hash=f"{i:016x}",
            started_at=f"2026-{1 + i // 300000:02d}-01T00:00:00",
        ))
    return records, vectors.astype(np.float32)


def hit_rate(collection, ids: list[str], vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> float:
    """Share of the true k nearest (brute force, cosine) that the index returns."""
    res = collection.query(query_embeddings=queries, n_results=k, include=[])
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :k]
    found = sum(len({ids[j] for j in row} & set(got)) for row, got in zip(truth, res["ids"], strict=True))
    return found / (k * len(queries))


def index_recall(vectors: np.ndarray, queries: np.ndarray, hnsw: dict, k: int = 10) -> float:
    """NN recall of a bare collection holding `vectors` with the given HNSW settings."""
    import chromadb
    from chromadb.config import Settings

    ids = [str(i) for i in range(len(vectors))]
    with tempfile.TemporaryDirectory() as tmp:
        client = chromadb.PersistentClient(path=tmp, settings=Settings(anonymized_telemetry=False))
        col = client.create_collection("hnsw-probe", configuration={"hnsw": hnsw}, embedding_function=None)
        for start in range(0, len(vectors), 5000):
            col.add(ids=ids[start:start + 5000], embeddings=vectors[start:start + 5000])
        rate = hit_rate(col, ids, vectors, queries, k)
        client.close()
    return rate


def random_vectors_recall(n: int) -> None:
    """Isotropic random unit vectors: the hardest case for HNSW, where Chroma's defaults fall apart."""
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.integers(0, n, 100)] + rng.normal(scale=0.02, size=(100, 384)).astype(np.float32)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    ours = index_recall(vectors, queries, dict(HNSW_CONFIG))
    default = index_recall(vectors, queries, {"space": "cosine"})
    print(f"\nHNSW recall@10 on {n:,} random unit vectors: ours {ours:.4f}, Chroma defaults {default:.4f}")


def scale(n: int, bases: np.ndarray, titles: list[str], probe_ideas: list[Idea], compare_default: bool) -> None:
    rng = np.random.default_rng(n)
    records, vectors = synthetic(n, bases, titles, rng)
    with tempfile.TemporaryDirectory() as tmp, ExperimentMemory.open(Path(tmp) / "mem") as memory:
        t = time.perf_counter()
        for start in range(0, n, 5000):
            memory.add_many(records[start:start + 5000], vectors=vectors[start:start + 5000])
        bulk = time.perf_counter() - t
        extra, extra_vectors = synthetic(50, bases, titles, rng)
        for i, r in enumerate(extra):
            r.tag, r.exp_id = "tonight", f"{i:04d}"
        single = []
        for r, v in zip(extra, extra_vectors, strict=True):
            t = time.perf_counter()
            memory.add_many([r], vectors=v[None, :])
            single.append(time.perf_counter() - t)
        all_vectors = np.concatenate([vectors, extra_vectors])

        for idea in probe_ideas:  # embed once: the timings below are the memory's own work
            memory.embed(idea_text(idea.title, idea.rationale))
            memory.embed(idea.title)
        gate, recall, diff = [], [], []
        for _ in range(3):
            for idea in probe_ideas:
                t = time.perf_counter()
                memory.check_idea(idea, threshold=DEFAULT_THRESHOLD)
                gate.append(time.perf_counter() - t)
                t = time.perf_counter()
                text = memory.recall(idea.title, token_budget=1500)
                recall.append(time.perf_counter() - t)
                t = time.perf_counter()
                memory.check_diff(f"{int(rng.integers(n)):016x}")
                diff.append(time.perf_counter() - t)
        assert len(text) <= 1500 * 4
        queries = all_vectors[rng.integers(0, len(all_vectors), 200)] + rng.normal(scale=0.02, size=(200, 384))
        queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
        ids = [f"{r.tag}/{r.exp_id}" for r in records + extra]
        ours = hit_rate(memory._collection, ids, all_vectors, queries)  # the index itself, no gate filtering

    both = [g + r for g, r in zip(gate, recall, strict=True)]
    print(f"\n{n:,} experiments")
    print(f"  bulk insert               {bulk / n * 1000:6.2f} ms per record ({bulk:.1f} s)")
    print(f"  insert one (loop)         {ms(single)}")
    print(f"  novelty check (semantic)  {ms(gate)}")
    print(f"  novelty check (diff hash) {ms(diff)}")
    print(f"  recall (1500 tokens)      {ms(recall)}")
    print(f"  check + recall            {ms(both)}")
    print(f"  HNSW recall@10 vs brute force: {ours:.4f} ({HNSW_CONFIG})")
    if compare_default:
        default = index_recall(all_vectors, queries, {"space": "cosine"})
        print(f"  ... with Chroma's default HNSW settings: {default:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--with-100k", action="store_true", help="also run 100,000 experiments (minutes)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000, 10_000])
    parser.add_argument("--compare-default", action="store_true", help="HNSW recall with Chroma's defaults too")
    parser.add_argument("--random-hnsw", type=int, default=0, metavar="N",
                        help="also compare HNSW settings on N random unit vectors (the hardest case)")
    args = parser.parse_args()
    sizes = args.sizes + ([100_000] if args.with_100k else [])

    rows = load_pairs("idea_pairs.jsonl")
    ideas = {(r[s]["title"], r[s]["rationale"]) for r in rows for s in ("a", "b")}
    titles = sorted(t for t, _ in ideas)
    texts = [idea_text(t, r) for t, r in sorted(ideas)]
    t = time.perf_counter()
    load_minilm()
    print(f"embedding model loaded in {time.perf_counter() - t:.1f} s (once per process)")
    print("embedding cost (all-MiniLM-L6-v2, CPU):")
    embedding_cost(texts)
    print("novelty gate quality:")
    gate_quality()
    bases = embed_texts([idea_text(t, "") for t in titles])
    probes = [Idea(title=t, rationale=r, expected_effect="", category="other") for t, r in sorted(ideas)[:20]]
    for n in sizes:
        scale(n, bases, titles, probes, args.compare_default)
    if args.random_hnsw:
        random_vectors_recall(args.random_hnsw)


if __name__ == "__main__":
    main()
