"""Whether the crew makes progress: the stall guard, and the cap on candidates per trained experiment.

A candidate *stalls* when it never reaches training for a reason that is a role's (a refusal: the coder's edits
do not apply, the hypothesis repeats itself, the reviewer vetoes; see `candidates.Refusal`). `Progress` counts,
per role, the candidates that stalled since the last one that reached training, in the order they finish,
whatever number are prepared at once. At `max_stalled` (crew.yaml `loop.max_stalled`) it names the role and
why, and the loop acts as `on_model_failure` says. Candidates already in preparation when a role was given up
are not counted against whatever plays it next.

The cap bounds every configuration, the offline policy included: at most `max_candidates` candidates
(`loop.max_candidates_per_experiment`) are started per trained experiment; past it none starts, and once
nothing is left in flight the run stops with a line that names the cap and what the candidates came to.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from agents.crew.candidates import Refusal


@dataclass(frozen=True)
class Stall:
    """A role whose candidates keep stopping short of training."""

    role: str
    count: int
    why: str  # "its edits do not apply or compile"
    last: str  # the last refusal's own reason

    def line(self) -> str:
        return (f"{self.role}: {self.count} candidates in a row never reached training: {self.why} "
                f"(last: {_short(self.last)})")


@dataclass
class Progress:
    max_stalled: int
    max_candidates: int
    _streaks: dict[str, list[Refusal]] = field(default_factory=dict)
    _replaced_after: dict[str, int] = field(default_factory=dict)  # role -> last serial its old player started
    _mark: int = 0  # candidates started when the last experiment trained
    _since_trained: Counter = field(default_factory=Counter)  # what the candidates came to since then

    def reached_training(self) -> None:
        """A candidate passed every gate: no role is stalling."""
        self._streaks.clear()
        self._since_trained["ready"] += 1

    def trained(self, started: int) -> None:
        """An experiment trained: the cap counts from here."""
        self._mark = started
        self._since_trained.clear()

    def refused(self, refusal: Refusal, serial: int) -> Stall | None:
        """Count a stalled candidate; the role's `Stall` when it reaches `max_stalled` (its streak then restarts)."""
        self._since_trained[f"{refusal.role}: {refusal.why}"] += 1
        if serial and serial <= self._replaced_after.get(refusal.role, 0):
            return None  # prepared by the player given up: the new one has not had its turn yet
        streak = self._streaks.setdefault(refusal.role, [])
        streak.append(refusal)
        if len(streak) < self.max_stalled:
            return None
        self._streaks.pop(refusal.role)
        return Stall(refusal.role, len(streak), refusal.why, refusal.record.decision_reason)

    def failed(self) -> None:
        """A preparation failed in the harness (counted for the cap's line, not a role's stall)."""
        self._since_trained["failed while preparing (see the 'error' rows)"] += 1

    def replaced(self, role: str, started: int) -> None:
        """`role` was given up; candidates started until now were prepared by its old player."""
        self._replaced_after[role] = started
        self._streaks.pop(role, None)

    def room(self, started: int) -> int:
        """How many more candidates may start before an experiment trains."""
        return max(0, self.max_candidates - (started - self._mark))

    def cap_line(self) -> str:
        causes = ", ".join(f"{n} {what}" for what, n in self._since_trained.most_common() if what != "ready")
        return (f"{self.max_candidates} candidates in a row did not train (loop.max_candidates_per_experiment); "
                f"the crew is not making progress" + (f": {causes}" if causes else ""))


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
