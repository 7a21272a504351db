"""Write-ahead journal: one small JSON file per experiment, rewritten at every phase.

If the loop dies at any moment (even SIGKILL), the next `autoresearch run` reads the journal and
knows how far each experiment got, so it can be completed, re-run or marked, never lost and never
counted twice. Writes are atomic (temp file + fsync + rename).

An experiment's re-runs (same commit, another seed) and confirmation runs (re-applied on a newer best) are
`FollowUp`s inside its own entry. Journals written before that kept them as files of their own
(`<id>.r1.json`, `<id>.c1.json`, kind `rerun` / `confirm`): `unfinished()` folds those into their parent, so an
old journal still resumes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path


class Phase(StrEnum):
    """Where an experiment is, in the order it passes through them."""

    PROPOSED = "proposed"  # an idea, not coded yet (written when a stop cut its preparation short)
    CODED = "coded"
    REVIEWED = "reviewed"  # a candidate written ahead: coded, gated, reviewed; no GPU time yet
    COMMITTED = "committed"  # committed on its base; handed to a worker (or about to be)
    TRAINED = "trained"  # its run's result is in the entry; nothing decided
    DECIDED = "decided"
    RECORDED = "recorded"  # results and memory written; the analyst's lesson may still be missing
    DONE = "done"


PHASES = tuple(Phase)


class RunKind(StrEnum):
    """What a training run is for."""

    EXPERIMENT = "experiment"
    BASELINE = "baseline"
    RERUN = "rerun"  # the same commit with another seed: borderline or implausible results are confirmed
    CONFIRM = "confirm"  # a winner re-applied on a newer best, trained there before it is kept


@dataclass
class FollowUp:
    """A further run that decides its experiment: a re-run or a confirmation, trained as run `run_id`."""

    run_id: str  # '<exp_id>.r1', '<exp_id>.c1': names its log
    kind: RunKind
    seed: int
    commit: str  # what it trains (the experiment's commit when it was asked for)
    pid: int = 0
    node: str = ""
    gpu: str = ""
    started: float = 0.0
    result: dict = field(default_factory=dict)
    done: bool = False  # its result was taken into the experiment (or it was abandoned by an old journal)

    def __post_init__(self) -> None:
        self.kind = RunKind(self.kind)


@dataclass
class JournalEntry:
    exp_id: str
    phase: Phase
    kind: RunKind = RunKind.EXPERIMENT
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
    parent: str = ""  # only in old journals: a re-run's or confirmation's experiment
    runs: list = field(default_factory=list)  # val_bpb of every run that decides this experiment so far
    stretch: str = ""  # why its latest run looks past the budget (harness clock); that run's val_bpb never counts
    first_commit: str = ""  # the commit as trained first, when it was later re-applied on a newer best
    first_base: str = ""
    result: dict = field(default_factory=dict)  # RunResult fields once trained
    decision: dict = field(default_factory=dict)
    follow_ups: list[FollowUp] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.phase not in PHASES:
            raise ValueError(f"unknown journal phase {self.phase!r}")
        self.phase, self.kind = Phase(self.phase), RunKind(self.kind)
        self.follow_ups = [f if isinstance(f, FollowUp) else FollowUp(**f) for f in self.follow_ups]

    @classmethod
    def from_dict(cls, data: dict) -> JournalEntry:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def follow_ups_of(self, kind: RunKind) -> list[FollowUp]:
        return [f for f in self.follow_ups if f.kind == kind]

    @property
    def pending(self) -> FollowUp | None:
        """The follow-up run asked for and not yet taken into account, if any."""
        return next((f for f in self.follow_ups if not f.done), None)

    def add_follow_up(self, kind: RunKind) -> FollowUp:
        """A new re-run (another seed) or confirmation (the same seed, on the new base) of the current commit."""
        number = len(self.follow_ups_of(kind)) + 1
        seed = self.seed + 1000 * number if kind == RunKind.RERUN else self.seed
        mark = "r" if kind == RunKind.RERUN else "c"
        follow_up = FollowUp(run_id=f"{self.exp_id}.{mark}{number}", kind=kind, seed=seed, commit=self.commit)
        self.follow_ups.append(follow_up)
        return follow_up


class Journal:
    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "journal"

    def path(self, exp_id: str) -> Path:
        return self.dir / f"{exp_id}.json"

    def write(self, entry: JournalEntry) -> None:
        if entry.phase not in PHASES:
            raise ValueError(f"unknown journal phase {entry.phase!r}")
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path(entry.exp_id)
        tmp = path.with_suffix(".json.tmp")
        with open(tmp, "w") as fh:
            json.dump(asdict(entry), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def advance(self, entry: JournalEntry, phase: Phase) -> None:
        entry.phase = Phase(phase)
        self.write(entry)

    def read(self, exp_id: str) -> JournalEntry | None:
        try:
            return JournalEntry.from_dict(json.loads(self.path(exp_id).read_text()))
        except (OSError, json.JSONDecodeError, TypeError, ValueError):
            return None

    def ids(self) -> set[str]:
        """Every experiment id the journal has seen (old journals' re-run files included)."""
        return {p.stem for p in self.dir.glob("*.json")} if self.dir.exists() else set()

    def unfinished(self) -> list[JournalEntry]:
        """Entries that did not reach `done`, oldest first; an old journal's re-run files folded into their
        experiment (each as a follow-up that is over: the experiment decides again from its own runs)."""
        if not self.dir.exists():
            return []
        entries: dict[str, JournalEntry] = {}
        legacy: list[JournalEntry] = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                entry = JournalEntry.from_dict(json.loads(path.read_text()))
            except (json.JSONDecodeError, TypeError, ValueError):
                # a torn write cannot happen (atomic rename), but a hand-edited file can
                continue
            if entry.kind in (RunKind.RERUN, RunKind.CONFIRM):
                legacy.append(entry)
            elif entry.phase != Phase.DONE:
                entries[entry.exp_id] = entry
        for child in legacy:
            parent = entries.get(child.parent)
            if parent is not None and child.exp_id not in {f.run_id for f in parent.follow_ups}:
                parent.follow_ups.append(FollowUp(run_id=child.exp_id, kind=child.kind, seed=child.seed,
                                                  commit=child.commit, pid=child.pid, node=child.node,
                                                  result=child.result, done=True))
                self.write(parent)
            if child.phase != Phase.DONE:
                self.advance(child, Phase.DONE)
        return list(entries.values())
