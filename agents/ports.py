"""What the loop and the crew use of the pieces they are given: the experiment memory and the usage ledger.

Protocols, so a reader sees what is used (and a test can pass its own); the real ones are
`memory.store.ExperimentMemory` and `agents.crew.llm.usage.UsageLedger`. Both are called from the crew's
preparing threads as well as the coordinator's, and must be thread-safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from agents.crew.llm.usage import UsageTotals
    from agents.crew.schemas import Idea
    from agents.record.results import ExperimentRecord


class Memory(Protocol):
    """The experiment memory: the novelty gate and recall read it; only the coordinator writes it."""

    # read (preparing threads and the coordinator)
    def check_idea(self, idea: Idea, *, threshold: float, train_py: str | None = None, judge: Any = None,
                   device: str | None = None) -> Any: ...

    def check_change(self, base_text: str, new_text: str, *, retry_of: str | None = None,
                     claimant: str = "") -> Any: ...

    # held in the process, not written: a prepared candidate's fingerprint until its record is added
    def claim(self, claimant: str, base_text: str, new_text: str, title: str) -> Any: ...

    def similar(self, text: str, k: int = 5) -> list[Any]: ...

    def recall(self, direction: str, *, token_budget: int = 1500, tag: str | None = None) -> str: ...

    def where(self, where: dict, limit: int | None = None, with_documents: bool = False) -> list[Any]: ...

    # write (the coordinator only)
    def add(self, record: ExperimentRecord) -> None: ...

    def sync_from(self, parquet_paths: Sequence[Path]) -> int: ...

    def close(self) -> None: ...


class Ledger(Protocol):
    """Token and cost accounting of every LLM call; calls are tagged with the experiment they were made for."""

    faults: Any  # agents.crew.llm.faults.FaultLog

    def experiment(self, experiment_id: str) -> AbstractContextManager: ...

    def totals(self, *, role: str | None = None, experiment: str | None = None) -> UsageTotals: ...
