"""What the loop tells whoever watches it (the live view, `compare`, tests): one `LoopEvent` at a time.

The coordinator emits them from its own thread; a few come from the crew's preparing threads (a new id being
proposed, a role given up, a provider fault noticed), so a listener must be thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from agents.record.results import ExperimentRecord


class EventKind(StrEnum):
    PHASE = "phase"  # an experiment moved on: message is the phase ("proposing", "training", "analysing", ...)
    PROGRESS = "progress"  # training progress of a run: elapsed over budget, on `worker`
    RECORD = "record"  # a record was written (message: its status)
    NOTE = "note"  # something the user should read (a fallback, a resume, a stall, a stop)
    DEGRADED = "degraded"  # a role gave up its model: a banner for the rest of the run


@dataclass
class LoopEvent:
    """What the live view shows: a phase change, training progress, a finished record, a note or a banner."""

    kind: EventKind
    exp_id: str = ""
    message: str = ""
    elapsed: float = 0.0
    budget: float = 0.0
    record: ExperimentRecord | None = None
    best_bpb: float | None = None
    worker: str = ""  # where a run trains ("host #2"), for progress and "training" phase events

    def __post_init__(self) -> None:
        self.kind = EventKind(self.kind)
