"""A role's task text: its crew.yaml template filled with its inputs, fitted to a token budget.

`fill_template` renders every input whole. `fit_template` does the same within a budget: train.py, the idea,
the diff and the research program stay whole; the elastic inputs (history, memory recall, feedback, similar
experiments, the log tail) lose their oldest or least relevant lines first, and what was cut is summarised in
one line, so the model still knows it exists. A section heading the template already gives is not repeated
when the input starts with it (program.md begins with "# Research program", as the templates do).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from agents.config import template_fields
from agents.crew.schemas import ConstantChange, Idea
from agents.record.results import ExperimentRecord

HISTORY_LINES = 20  # experiments shown in {history}; memory recall covers the older ones
DIFF_LINES = 80  # lines of an experiment's diff shown to the analyst


class PromptTooLarge(ValueError):
    """Even with every elastic input cut to its summary, the fixed inputs exceed the budget.

    `needed`: the tokens of the prompt with every elastic input cut; `budget`: what it had to fit in."""

    def __init__(self, message: str, *, needed: int, budget: int) -> None:
        super().__init__(message)
        self.needed, self.budget = needed, budget


@dataclass(frozen=True)
class Elastic:
    """An input that may be cut: `newest` keeps its last lines (history, feedback, logs), `first` its first
    lines (recall and similar experiments come best first)."""

    name: str
    keep: Literal["newest", "first"]


# Cut in this order, each as far as needed before the next is touched.
ELASTIC: dict[str, tuple[Elastic, ...]] = {
    "hypothesis": (Elastic("history", "newest"), Elastic("recall", "first"), Elastic("feedback", "newest")),
    "coder": (Elastic("feedback", "newest"),),
    "reviewer": (Elastic("similar", "first"), Elastic("guard_report", "first")),
    "analyst": (Elastic("history", "newest"), Elastic("log_tail", "newest")),
}


@dataclass
class Fitted:
    text: str
    cuts: list[str]  # one line per input that was shortened, for logs


def fill_template(role: str, template: str, inputs: Mapping[str, Any]) -> str:
    """The role's task description: each {placeholder} replaced by its whole input rendered as text."""
    names = _names(role, template, inputs)
    return _render(template, names, {name: as_text(inputs[name]) for name in names})


def fit_template(role: str, template: str, inputs: Mapping[str, Any], budget: int,
                 count: Callable[[str], int]) -> Fitted:
    """`fill_template` within `budget` tokens (as `count` counts them); PromptTooLarge if it cannot fit."""
    names = _names(role, template, inputs)
    texts = {name: as_text(inputs[name]) for name in names}
    text = _render(template, names, texts)
    cuts: list[str] = []
    for elastic in ELASTIC.get(role, ()):
        if count(text) <= budget:
            return Fitted(text, cuts)
        if elastic.name not in names:
            continue
        units = _units(inputs[elastic.name])
        if not units:
            continue

        def render(kept: int, name: str = elastic.name, el: Elastic = elastic, all_units: list = units) -> str:
            return _render(template, names, {**texts, name: _shortened(all_units, kept, el.keep)})

        most = min(len(units), HISTORY_LINES) if _are_records(units) else len(units)
        low, high = 0, most - 1  # the most units that still fit, by bisection (0 = summary only)
        while low < high:
            middle = (low + high + 1) // 2
            if count(render(middle)) <= budget:
                low = middle
            else:
                high = middle - 1
        texts[elastic.name] = _shortened(units, low, elastic.keep)
        text = _render(template, names, texts)
        cuts.append(f"{elastic.name}: {low} of {len(units)} {'experiments' if _are_records(units) else 'lines'}")
    total = count(text)
    if total > budget:
        raise PromptTooLarge(f"the {role} prompt needs {total} tokens with its fixed inputs whole (train.py, the "
                             f"program) but the context window leaves {budget} for it", needed=total, budget=budget)
    return Fitted(text, cuts)


def _names(role: str, template: str, inputs: Mapping[str, Any]) -> list[str]:
    names = template_fields(template, f"{role} task template")
    missing = [name for name in names if name not in inputs]
    if missing:
        raise ValueError(f"{role}: inputs lack {', '.join(missing)} (the task template uses them)")
    return names


def _render(template: str, names: list[str], texts: Mapping[str, str]) -> str:
    values = {name: _without_repeated_heading(template, name, texts[name]) for name in names}
    return template.format_map(values)


def _without_repeated_heading(template: str, name: str, text: str) -> str:
    """Drop the input's first line when it repeats the heading the template puts just before the placeholder."""
    at = template.find("{" + name + "}")
    before = template[:at].rstrip("\n").rsplit("\n", 1)[-1].strip() if at > 0 else ""
    first, _, rest = text.lstrip("\n").partition("\n")
    if before.startswith("#") and first.strip().lower() == before.lower():
        return rest.lstrip("\n")
    return text


# -- cutting ---------------------------------------------------------------------------------------------


def _units(value: Any) -> list:
    if isinstance(value, list | tuple) and value and all(isinstance(v, ExperimentRecord) for v in value):
        return list(value)
    text = as_text(value)
    return text.splitlines() if text.strip() else []


def _are_records(units: list) -> bool:
    return bool(units) and isinstance(units[0], ExperimentRecord)


def _shortened(units: list, kept: int, keep: Literal["newest", "first"]) -> str:
    if _are_records(units):
        shown, dropped = (units[len(units) - kept:], units[: len(units) - kept]) if kept else ([], units)
        lines = [_dropped_records(dropped)] if dropped else []
        return "\n".join(lines + ([_history_lines(shown)] if shown else []))
    if keep == "newest":
        shown, dropped = (units[len(units) - kept:] if kept else []), len(units) - kept
        note = [f"({dropped} earlier lines not shown to fit the context window)"] if dropped else []
        return "\n".join(note + shown)
    shown, dropped = units[:kept], len(units) - kept
    return "\n".join(shown + ([f"({dropped} more lines not shown to fit the context window)"] if dropped else []))


def _dropped_records(records: list[ExperimentRecord]) -> str:
    counts = Counter(r.status for r in records)
    scored = [r.val_bpb for r in records if r.val_bpb is not None]
    best = f"; best val_bpb among them {min(scored):.6f}" if scored else ""
    return (f"({len(records)} earlier experiments not shown: "
            + ", ".join(f"{n} {status}" for status, n in counts.most_common()) + best + ")")


# -- inputs as text ----------------------------------------------------------------------------------------


def as_text(value: Any) -> str:
    """How an input reads inside a prompt."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Idea):
        return describe_idea(value)
    if isinstance(value, ExperimentRecord):
        return describe_record(value)
    if isinstance(value, list | tuple) and all(isinstance(v, ExperimentRecord) for v in value):
        return describe_history(value)
    if isinstance(value, BaseModel):
        return value.model_dump_json(indent=2)
    return str(value)


def describe_idea(idea: Idea) -> str:
    lines = [f"Title: {idea.title}", f"Category: {idea.category}", f"Rationale: {idea.rationale}",
             f"Expected effect: {idea.expected_effect}"]
    if idea.retry_of:
        lines.append(f"Retries experiment: {idea.retry_of}")
    if idea.changes:
        lines.append("Changes (implement exactly these): " + describe_changes(idea.changes))
    return "\n".join(lines)


def describe_changes(changes: list) -> str:
    """`MLP_RATIO = 3; MLP.forward: SwiGLU`: an idea's declared changes on one line."""
    return "; ".join(f"{c.constant} = {c.value}" if isinstance(c, ConstantChange) else f"{c.part}: {c.technique}"
                     for c in changes)


def describe_record(r: ExperimentRecord) -> str:
    def num(value: float | None, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    lines = [
        f"Experiment {r.exp_id}: {r.description}",
        f"Status: {r.status} ({r.decision_reason})" if r.decision_reason else f"Status: {r.status}",
        f"val_bpb: {num(r.val_bpb, '.6f')} (best before: {num(r.best_bpb_before, '.6f')}, "
        f"delta: {num(r.delta, '+.6f')})",
        f"Training: {num(r.training_seconds, '.1f')} s, {r.num_steps if r.num_steps is not None else 'n/a'} steps, "
        f"{num(r.total_tokens_M, '.2f')} M tokens, {num(r.num_params_M, '.2f')} M params, "
        f"MFU {num(r.mfu_percent, '.1f')} %, peak memory {r.memory_gb:.1f} GB",
        f"Lines changed: +{r.lines_added} -{r.lines_removed}, seed {r.seed}",
    ]
    if r.error:
        lines.append(f"Error: {r.error}")
    if r.diff:
        diff = r.diff.splitlines()
        shown = diff[:DIFF_LINES] + ([f"... ({len(diff) - DIFF_LINES} more lines)"] if len(diff) > DIFF_LINES else [])
        lines += ["Diff:", *shown]
    return "\n".join(lines)


def describe_history(records: list[ExperimentRecord] | tuple[ExperimentRecord, ...]) -> str:
    if not records:
        return "(no experiments yet)"
    shown = list(records)[-HISTORY_LINES:]
    older = list(records)[: len(records) - len(shown)]
    return "\n".join(([_dropped_records(older)] if older else []) + [_history_lines(shown)])


def _history_lines(records: list[ExperimentRecord]) -> str:
    lines = []
    for r in records[-HISTORY_LINES:]:
        bpb = f"{r.val_bpb:.6f}" if r.val_bpb is not None else "-"
        delta = f" ({r.delta:+.4f})" if r.delta is not None else ""
        lesson = f" | lesson: {_one_line(r.lesson, 160)}" if r.lesson else ""
        lines.append(f"{r.exp_id} {r.status:<8} {bpb}{delta} [{r.category or '-'}] {_one_line(r.description, 120)}"
                     f"{lesson}")
    return "\n".join(lines)


def _one_line(value: object, limit: int = 300) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
