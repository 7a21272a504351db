"""How an `ExperimentRecord` is laid out in the Chroma collection, and what a query gives back.

One Chroma record per experiment, id `<tag>/<exp_id>`. The vector embeds the idea alone (title and
rationale), because that is what the novelty gate and the reviewer compare: outcome and lesson text would
pull two tries of the same idea apart. The document holds everything a reader wants to see; the metadata
holds what queries filter and sort on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agents.record.results import PERSISTED_FIELDS, STATUSES, ExperimentRecord
from memory.changes import Changes
from memory.fingerprint import ChangeFingerprint

MAX_DIFF_EXCERPT_LINES = 8
MAX_LINE_CHARS = 160
MAX_LESSON_CHARS = 600


@dataclass
class MemoryHit:
    """One past experiment as memory returns it."""

    id: str
    exp_id: str
    tag: str
    status: str
    title: str
    category: str = ""
    val_bpb: float | None = None
    delta: float | None = None
    commit: str = ""
    config: str = ""
    timestamp: str = ""
    diff_hash: str = ""
    fingerprint: str = ""  # ChangeFingerprint JSON ("" when the experiment was never coded)
    changes: str = ""  # memory.changes.Changes JSON: what memory compares it by
    repeat_of: str = ""
    rationale: str = ""
    lesson: str = ""
    note: str = ""  # why it ended so: the error of a crash, the reviewer's reasons for a veto, the keep rule
    seq: int = 0
    similarity: float = 0.0  # cosine similarity to the query; 0.0 when the hit came from a filter, not a search
    document: str = ""

    def describe_change(self) -> str:
        """The coded change in words (and the techniques its idea named), or "" when there is nothing to show."""
        fp = ChangeFingerprint.from_json(self.fingerprint)
        change = Changes.from_json(self.changes)
        named = "; ".join(f"{part}: {technique}" for part, technique in change.parts.items() if technique) \
            if change is not None else ""
        return "; ".join(x for x in (fp.describe() if fp is not None else "", named) if x)

    def cite(self) -> str:
        """`exp <tag>/<id> (discard, val_bpb 1.0123)`: how verdicts and recall name an experiment."""
        bpb = f", val_bpb {self.val_bpb:.4f}" if self.val_bpb is not None else ""
        return f"exp {self.id} ({self.status}{bpb})"


def fingerprint_key(fingerprint_json: str) -> str:
    """The key equal for equal changes ("" when there is no fingerprint)."""
    fp = ChangeFingerprint.from_json(fingerprint_json)
    return fp.key if fp is not None else ""


def record_id(tag: str, exp_id: str) -> str:
    return f"{tag}/{exp_id}"


def idea_text(title: str, rationale: str) -> str:
    """The text that is embedded: the same form for stored experiments and for new ideas."""
    title, rationale = " ".join(title.split()), " ".join(rationale.split())
    return f"{title}. {rationale}" if rationale else title


def record_timestamp(record: ExperimentRecord) -> tuple[str, float]:
    """ISO time and epoch seconds of an experiment (finished, else started; 0.0 when neither parses)."""
    for value in (record.finished_at, record.started_at):
        if not value:
            continue
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return value, moment.timestamp()
    return "", 0.0


def diff_excerpt(diff: str) -> str:
    """The changed lines of a unified diff, shortened: enough to recognise the change, not to replay it."""
    changed = [
        line
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---")) and line[1:].strip()
    ]
    shown = [line[:MAX_LINE_CHARS] for line in changed[:MAX_DIFF_EXCERPT_LINES]]
    if len(changed) > len(shown):
        shown.append(f"... {len(changed) - len(shown)} more changed lines")
    return "\n".join(shown)


def outcome_note(record: ExperimentRecord) -> str:
    if record.error:
        return f"error: {record.error.strip().splitlines()[-1] if record.error.strip() else record.error}"
    if record.status == "veto" and (record.review_reasons or record.guard_violations):
        return f"vetoed: {record.review_reasons or record.guard_violations}"
    return record.decision_reason


def outcome_text(record: ExperimentRecord) -> str:
    parts = [record.status]
    if record.val_bpb is not None:
        parts.append(f"val_bpb {record.val_bpb:.4f}")
    if record.delta is not None:
        parts.append(f"delta {record.delta:+.4f} vs best")
    if record.decision_reason:
        parts.append(record.decision_reason)
    if record.error:
        parts.append(f"error: {record.error[:MAX_LINE_CHARS]}")
    if record.review_reasons and record.status == "veto":
        parts.append(f"reviewer: {record.review_reasons[:MAX_LESSON_CHARS]}")
    return "; ".join(parts)


def record_document(record: ExperimentRecord) -> str:
    lines = [record.description]
    if record.rationale:
        lines.append(f"Rationale: {record.rationale}")
    if record.category:
        lines.append(f"Category: {record.category}")
    fp = ChangeFingerprint.from_json(record.fingerprint)
    if fp is not None:
        lines.append(f"Fingerprint: {fp.describe()}")
    if record.diff:
        lines.append(f"Change (+{record.lines_added}/-{record.lines_removed} lines):\n{diff_excerpt(record.diff)}")
    lines.append(f"Outcome: {outcome_text(record)}")
    if record.lesson:
        lines.append(f"Lesson: {record.lesson}")
    return "\n".join(lines)


def record_metadata(record: ExperimentRecord, seq: int, changes: str = "", reader: str = "") -> dict[str, Any]:
    """Chroma metadata: scalar values only, and no None (an absent key means unknown). `changes` is what memory
    compares the experiment by (memory.changes JSON); `reader` the reader's version when words decided it."""
    timestamp, epoch = record_timestamp(record)
    meta: dict[str, Any] = {
        "exp_id": record.exp_id,
        "tag": record.tag,
        "status": record.status,
        "title": record.description[:MAX_LESSON_CHARS],
        "category": record.category,
        "commit": record.commit,
        "parent_commit": record.parent_commit,
        "config": record.config,
        "diff_hash": record.diff_hash,
        "fingerprint": record.fingerprint,
        "fp_key": fingerprint_key(record.fingerprint),
        "declared": record.changes,
        "changes": changes,
        "reader": reader,
        "repeat_of": record.repeat_of,
        "rationale": " ".join(record.rationale.split())[:MAX_LESSON_CHARS],
        "lesson": record.lesson[:MAX_LESSON_CHARS],
        "note": outcome_note(record)[:MAX_LESSON_CHARS],
        "timestamp": timestamp,
        "ts": epoch,
        "seq": seq,
    }
    for key in ("val_bpb", "delta", "best_bpb_before"):
        value = getattr(record, key)
        if value is not None:
            meta[key] = float(value)
    return meta


def hit_from_chroma(record_id_: str, meta: dict[str, Any], document: str | None, similarity: float = 0.0) -> MemoryHit:
    return MemoryHit(
        id=record_id_,
        exp_id=str(meta.get("exp_id", "")),
        tag=str(meta.get("tag", "")),
        status=str(meta.get("status", "")),
        title=str(meta.get("title", "")),
        category=str(meta.get("category", "")),
        val_bpb=meta.get("val_bpb"),
        delta=meta.get("delta"),
        commit=str(meta.get("commit", "")),
        config=str(meta.get("config", "")),
        timestamp=str(meta.get("timestamp", "")),
        diff_hash=str(meta.get("diff_hash", "")),
        fingerprint=str(meta.get("fingerprint", "")),
        changes=str(meta.get("changes", "")),
        repeat_of=str(meta.get("repeat_of", "")),
        rationale=str(meta.get("rationale", "")),
        lesson=str(meta.get("lesson", "")),
        note=str(meta.get("note", "")),
        seq=int(meta.get("seq", 0)),
        similarity=similarity,
        document=document or "",
    )


def load_parquet_records(path: Path) -> list[ExperimentRecord]:
    """Experiments from one results.parquet (unknown columns ignored, missing ones defaulted)."""
    import pyarrow.parquet as pq

    known = set(PERSISTED_FIELDS)
    rows = pq.read_table(path).to_pylist()
    return [ExperimentRecord(**{k: v for k, v in row.items() if k in known and v is not None}) for row in rows]


def _load_many(paths: Sequence[Path], notices: list[str]) -> list[ExperimentRecord]:
    records: list[ExperimentRecord] = []
    for path in paths:
        try:
            records.extend(load_parquet_records(Path(path)))
        except Exception as exc:  # an unreadable file must not stop the rest from loading
            notices.append(f"memory: skipped {path}: cannot read it ({type(exc).__name__}: {exc})")
    # oldest first, so the order experiments enter memory follows time across runs
    return sorted(records, key=lambda r: r.started_at or r.finished_at or "")


def validate_record(record: ExperimentRecord) -> None:
    """What memory needs of a record to store it: exp_id, tag and a known status."""
    if not record.exp_id or not record.tag:
        raise ValueError(f"an experiment needs exp_id and tag to be stored in memory (got {record.exp_id!r}, "
                         f"{record.tag!r})")
    if record.status not in STATUSES:
        raise ValueError(f"experiment {record.exp_id}: unknown status {record.status!r}; expected one of {STATUSES}")
