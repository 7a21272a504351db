"""Write-ahead journal: one small JSON file per experiment, rewritten at every phase.

If the loop dies at any moment (even SIGKILL), the next `autoresearch run` reads the journal and
knows how far each experiment got, so it can be completed, re-run or marked, never lost and never
counted twice. Writes are atomic (temp file + fsync + rename).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

# in the order an experiment passes through them
PHASES = ("proposed", "coded", "reviewed", "committed", "trained", "decided", "recorded", "done")


@dataclass
class JournalEntry:
    exp_id: str
    phase: str
    kind: str = "experiment"  # "experiment" | "baseline" | "rerun" | "confirm"
    idea: dict = field(default_factory=dict)
    edit: dict = field(default_factory=dict)
    new_text: str = ""
    base_commit: str = ""  # the best commit the edit was made against
    commit: str = ""
    seed: int = 42
    pid: int = 0  # of the training process, so a resumed run can stop an orphan left by a kill
    node: str = ""  # the machine (and below, the GPU) the run was placed on
    gpu: str = ""
    started: float = 0.0  # time.time() when the run was handed to a worker
    parent: str = ""  # a re-run or confirmation run: the experiment it decides
    runs: list = field(default_factory=list)  # val_bpb of every run that decides this experiment so far
    stretch: str = ""  # why its latest run looks past the budget (harness clock); that run's val_bpb never counts
    first_commit: str = ""  # the commit as trained first, when it was later re-applied on a newer best
    first_base: str = ""
    result: dict = field(default_factory=dict)  # RunResult fields once trained
    decision: dict = field(default_factory=dict)


class Journal:
    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "journal"

    def write(self, entry: JournalEntry) -> None:
        if entry.phase not in PHASES:
            raise ValueError(f"unknown journal phase {entry.phase!r}")
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{entry.exp_id}.json"
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "w") as fh:
            json.dump(asdict(entry), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def advance(self, entry: JournalEntry, phase: str) -> None:
        entry.phase = phase
        self.write(entry)

    def unfinished(self) -> list[JournalEntry]:
        """Entries that did not reach `done`, oldest first."""
        if not self.dir.exists():
            return []
        entries = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                entry = JournalEntry(**json.loads(path.read_text()))
            except (json.JSONDecodeError, TypeError):
                # a torn write cannot happen (atomic rename), but a hand-edited file can
                continue
            if entry.phase != "done":
                entries.append(entry)
        return entries
