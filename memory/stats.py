"""`memory stats`: counts by status and run, each run's best result, the time span."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def memory_stats(path: Path, embedding: str, total: int, metadatas: Iterable[tuple[str, dict]]) -> dict:
    """A run's best is its best kept val_bpb; with nothing kept, the mean of its baselines (one lucky seed is no
    result)."""
    by_status: dict[str, int] = {}
    by_tag: dict[str, int] = {}
    kept: dict[str, float] = {}
    baselines: dict[str, list[float]] = {}
    first = last = ""
    for _, meta in metadatas:
        status, tag = str(meta.get("status", "")), str(meta.get("tag", ""))
        by_status[status] = by_status.get(status, 0) + 1
        by_tag[tag] = by_tag.get(tag, 0) + 1
        bpb = meta.get("val_bpb")
        if status == "keep" and bpb is not None and bpb < kept.get(tag, float("inf")):
            kept[tag] = bpb
        elif status == "baseline" and bpb is not None:
            baselines.setdefault(tag, []).append(bpb)
        stamp = str(meta.get("timestamp", ""))
        if stamp:
            first = min(first, stamp) if first else stamp
            last = max(last, stamp)
    best = {tag: kept[tag] if tag in kept else sum(baselines[tag]) / len(baselines[tag])
            for tag in by_tag if tag in kept or tag in baselines}
    return {"path": str(path), "embedding": embedding, "experiments": total, "by_status": by_status,
            "by_tag": by_tag, "best_val_bpb_by_tag": best, "first": first, "last": last}
