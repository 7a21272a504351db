"""Token and cost accounting for every LLM call of a run, with budgets checked before a call is sent.

One `UsageLedger` per run, shared by all roles' adapters. Thread-safe: the loop prepares the next experiment
while one trains, so calls for two experiments can be in flight at once. Calls are tagged with the experiment
set by `with ledger.experiment(id):` in the calling thread (a context variable, so each thread has its own).

Budgets are enforced by reservation: before a call, the adapter reserves its worst case (prompt estimate +
max_tokens, priced); the reservation is refused with `BudgetExceeded` if spent + reserved + worst case would
pass `max_usd` or `max_tokens`, and replaced by the real usage when the reply arrives.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from agents.crew.llm.errors import BudgetExceeded
from agents.crew.llm.faults import FaultLog

__all__ = ["BudgetExceeded", "Reservation", "UsageLedger", "UsageRecord", "UsageTotals"]

_current_experiment: contextvars.ContextVar[str | None] = contextvars.ContextVar("llm_experiment", default=None)


@dataclass(frozen=True)
class UsageRecord:
    """One completed provider request."""

    seq: int
    role: str
    model: str
    experiment: str | None
    input_tokens: int
    output_tokens: int
    usd: float
    at: float  # time.time()


@dataclass(frozen=True)
class UsageTotals:
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: UsageTotals) -> UsageTotals:
        return UsageTotals(
            self.calls + other.calls,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.usd + other.usd,
        )

    @classmethod
    def of(cls, records: list[UsageRecord]) -> UsageTotals:
        return cls(
            calls=len(records),
            input_tokens=sum(r.input_tokens for r in records),
            output_tokens=sum(r.output_tokens for r in records),
            usd=sum(r.usd for r in records),
        )


@dataclass(frozen=True)
class Reservation:
    """A call's worst-case usage held against the budget while the call is in flight."""

    ticket: int
    role: str
    model: str
    experiment: str | None
    tokens: int
    usd: float


class UsageLedger:
    """Tokens and USD per role, per experiment and per run; optional `max_usd` / `max_tokens` budgets.

    `faults` counts what the adapters survived (retried 429s and 5xx, timeouts, malformed replies ...)."""

    def __init__(self, *, max_usd: float | None = None, max_tokens: int | None = None) -> None:
        if max_usd is not None and max_usd < 0:
            raise ValueError(f"max_usd must be >= 0, got {max_usd}")
        if max_tokens is not None and max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        self.max_usd = max_usd
        self.max_tokens = max_tokens
        self._lock = threading.Lock()
        self._records: list[UsageRecord] = []
        self._pending: dict[int, Reservation] = {}
        self._tickets = itertools.count(1)
        self.faults = FaultLog()  # faults survived and fallbacks announced, per role (faults.py)

    # -- experiment tagging --------------------------------------------------------------------------

    @contextmanager
    def experiment(self, experiment_id: str) -> Iterator[None]:
        """Tag the calls made in this block (in this thread) with `experiment_id`."""
        token = _current_experiment.set(experiment_id)
        try:
            yield
        finally:
            _current_experiment.reset(token)

    @staticmethod
    def current_experiment() -> str | None:
        return _current_experiment.get()

    # -- budget and recording (used by the adapters) ---------------------------------------------------

    def reserve(self, *, role: str, model: str, input_tokens: int, output_tokens: int, usd: float) -> Reservation:
        """Hold a call's worst case against the budgets, or raise `BudgetExceeded` without holding anything."""
        with self._lock:
            spent = UsageTotals.of(self._records)
            held_tokens = sum(r.tokens for r in self._pending.values())
            held_usd = sum(r.usd for r in self._pending.values())
            tokens = input_tokens + output_tokens
            if self.max_tokens is not None and spent.tokens + held_tokens + tokens > self.max_tokens:
                left = max(0, self.max_tokens - spent.tokens - held_tokens)
                raise BudgetExceeded(
                    f"LLM token budget reached: role {role!r} ({model}) needs up to {tokens:,} tokens "
                    f"({input_tokens:,} in + {output_tokens:,} out) but {left:,} of max_tokens={self.max_tokens:,} "
                    "are left. Raise the budget or lower max_tokens for this role."
                )
            if self.max_usd is not None and spent.usd + held_usd + usd > self.max_usd:
                left = max(0.0, self.max_usd - spent.usd - held_usd)
                raise BudgetExceeded(
                    f"LLM cost budget reached: role {role!r} ({model}) could cost up to ${usd:.4f} "
                    f"({input_tokens:,} tokens in + {output_tokens:,} out) but ${left:.4f} of "
                    f"max_usd=${self.max_usd:.2f} is left. Raise the budget or lower max_tokens for this role."
                )
            reservation = Reservation(next(self._tickets), role, model, _current_experiment.get(), tokens, usd)
            self._pending[reservation.ticket] = reservation
            return reservation

    def settle(self, reservation: Reservation, *, input_tokens: int, output_tokens: int, usd: float) -> UsageRecord:
        """Replace a reservation by what the call really used."""
        with self._lock:
            self._pending.pop(reservation.ticket, None)
            record = UsageRecord(
                seq=len(self._records),
                role=reservation.role,
                model=reservation.model,
                experiment=reservation.experiment,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                usd=usd,
                at=time.time(),
            )
            self._records.append(record)
            return record

    def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose call used nothing we can count (it failed before any usage was reported)."""
        with self._lock:
            self._pending.pop(reservation.ticket, None)

    # -- reading -----------------------------------------------------------------------------------

    def records(self) -> list[UsageRecord]:
        with self._lock:
            return list(self._records)

    def totals(self, *, role: str | None = None, experiment: str | None = None) -> UsageTotals:
        """Run totals, optionally restricted to one role and/or one experiment."""
        records = [
            r
            for r in self.records()
            if (role is None or r.role == role) and (experiment is None or r.experiment == experiment)
        ]
        return UsageTotals.of(records)

    def by_role(self) -> dict[str, UsageTotals]:
        out: dict[str, UsageTotals] = {}
        for r in self.records():
            out[r.role] = out.get(r.role, UsageTotals()) + UsageTotals.of([r])
        return out

    def by_experiment(self) -> dict[str | None, UsageTotals]:
        out: dict[str | None, UsageTotals] = {}
        for r in self.records():
            out[r.experiment] = out.get(r.experiment, UsageTotals()) + UsageTotals.of([r])
        return out

    def mark(self) -> int:
        """A position in the ledger; `since(mark)` sums what was recorded after it."""
        with self._lock:
            return len(self._records)

    def since(self, mark: int, *, role: str | None = None) -> UsageTotals:
        return UsageTotals.of([r for r in self.records()[mark:] if role is None or r.role == role])

    def summary(self) -> dict[str, object]:
        """Plain data for reports: run totals and one entry per role."""

        def plain(t: UsageTotals) -> dict[str, object]:
            return {"calls": t.calls, "input_tokens": t.input_tokens, "output_tokens": t.output_tokens, "usd": t.usd}

        return {**plain(self.totals()), "by_role": {role: plain(t) for role, t in sorted(self.by_role().items())}}
