"""The live terminal view of a run: each worker's experiment and progress over the budget, best, recent rows.

Fed by the loop's events; with no terminal (CI, a pipe) it prints one line per finished experiment. A role
that gives up its model raises a banner that stays on screen for the rest of the run (printed at once
without a terminal); a refused experiment's line names the rule that refused it. Events may come from the crew's
threads and `say` from a signal handler: one re-entrant lock keeps the view whole.
"""

from __future__ import annotations

import threading
from collections import deque

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from agents.loop import LoopEvent

STATUS_STYLE = {"keep": "green", "discard": "white", "crash": "red", "veto": "magenta", "repeat": "yellow",
                "skipped": "yellow", "error": "red", "baseline": "cyan"}


class LiveView:
    def __init__(self, console: Console, tag: str, budget: float | None, enabled: bool = True):
        self.console, self.tag, self.enabled = console, tag, enabled
        self.budget = budget or 0.0
        self.exp_id, self.phase, self.elapsed = "", "starting", 0.0
        self.best: float | None = None
        self.rows: deque = deque(maxlen=8)
        self.banners: dict[str, str] = {}  # role -> what it runs on now and why: shown until the run ends
        self.notes: deque = deque(maxlen=3)
        self.training: dict[str, tuple[str, float]] = {}  # exp id -> (worker, elapsed seconds), while it trains
        self._live: Live | None = None
        self._lock = threading.RLock()
        self.said = ""  # a line for the user that stays on top (the stop line)

    def __enter__(self) -> LiveView:
        if self.enabled:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def say(self, line: str) -> None:
        """One line the user must see now (the stop line after Ctrl-C): on top of the live view, or printed."""
        with self._lock:
            self.said = line
            if self._live is not None:
                self._live.update(self._render())
            else:
                self.console.print(Text(line, style="bold yellow"), soft_wrap=True)

    def handle(self, event: LoopEvent) -> None:
        with self._lock:
            self._handle(event)

    def _handle(self, event: LoopEvent) -> None:
        if event.best_bpb is not None:
            self.best = event.best_bpb
        if event.kind == "phase":
            self.exp_id, self.phase, self.elapsed = event.exp_id, event.message, 0.0
            if event.message == "training":
                self.training[event.exp_id] = (event.worker, 0.0)
            else:
                self.training.pop(event.exp_id, None)
        elif event.kind == "progress":
            self.elapsed, self.budget = event.elapsed, event.budget or self.budget
            self.training[event.exp_id] = (event.worker, event.elapsed)
        elif event.kind == "record" and event.record is not None:
            r = event.record
            self.training.pop(r.exp_id, None)
            bpb = f"{r.val_bpb:.6f}" if r.val_bpb is not None else "-"
            rule = f" [{r.rule}]" if r.rule else ""
            self.rows.append((r.exp_id, r.status, bpb, r.description, rule))
            if self._live is None:
                self.console.print(Text(f"{r.exp_id}  {r.status:<8} {bpb:>9}  {r.description}{rule}"), soft_wrap=True)
        elif event.kind == "degraded":
            self.banners[event.message.split(":", 1)[0]] = event.message
            if self._live is None:
                self.console.print(Text.assemble(("MODEL GIVEN UP ", "bold red"), event.message), soft_wrap=True)
        elif event.kind == "note":
            self.notes.append(f"{event.exp_id} {event.message}".strip())
            if self._live is None:
                self.console.print(Text(f"{event.exp_id} {event.message}".strip(), style="dim"), soft_wrap=True)
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Panel:
        best = f"{self.best:.6f}" if self.best is not None else "-"
        head = Text.assemble(("experiment ", "dim"), (self.exp_id or "-", "bold"), ("   phase ", "dim"),
                             (self.phase, "bold"), ("   best val_bpb ", "dim"), (best, "bold green"))
        parts: list = [Text(self.said, style="bold yellow")] if self.said else []
        parts += [Text.assemble(("MODEL GIVEN UP ", "bold white on red"), line) for line in self.banners.values()]
        parts.append(head)
        if len(self.training) > 1 or any(worker for worker, _ in self.training.values()):
            workers = Table(box=None, pad_edge=False)
            for col in ("worker", "training", "progress", ""):
                workers.add_column(col)
            for exp_id, (worker, elapsed) in sorted(self.training.items(), key=lambda item: item[1][0]):
                bar = ProgressBar(total=self.budget or 1.0, completed=min(elapsed, self.budget or 1.0), width=30)
                workers.add_row(worker or "-", exp_id, bar, f"{elapsed:.0f}s of {self.budget:.0f}s")
            parts.append(workers)
        elif self.phase == "training" and self.budget:
            parts.append(ProgressBar(total=self.budget, completed=min(self.elapsed, self.budget), width=60))
            parts.append(Text(f"{self.elapsed:.0f}s of {self.budget:.0f}s training budget", style="dim"))
        table = Table(box=None, pad_edge=False)
        for col in ("exp", "status", "val_bpb", "description"):
            table.add_column(col)
        for exp_id, status, bpb, desc, rule in self.rows:
            table.add_row(exp_id, Text(status, style=STATUS_STYLE.get(status, "")), bpb, Text(desc[:70] + rule))
        parts.append(table)
        parts += [Text(note[:160], style="dim") for note in self.notes]
        return Panel(Group(*parts), title=f"autoresearch/{self.tag}")
