"""The four roles as CrewAI agents: each call runs one Task in a one-task sequential Crew.

`ResearchCrew.propose / code / review / analyse` take the input dicts of docs/ARCHITECTURE.md ("Roles")
and return the role's schema. The task description is the role's template from crew.yaml filled with
those inputs as text; the same inputs go, as Python objects, to an LLM that has `set_context`.

Reliability: a failed call is tried again with the role's `fallback_model`; a model that fails
`degrade_after` calls in a row is given up for the run, and once none is left the role is played by the
offline policy. A call that fails anyway raises `RoleError`; the loop records it and carries on.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from agents.config import ROLE_NAMES, CrewConfig, key_env_for, resolve_model, template_fields
from agents.crew.llm.errors import BudgetExceeded
from agents.crew.policy import SearchExhausted
from agents.crew.schemas import Analysis, CodeEdit, Idea, Review
from agents.crewai_env import quiet_crewai
from agents.record.results import ExperimentRecord

quiet_crewai()
from crewai import Agent, BaseLLM, Crew, Process, Task  # noqa: E402  (must follow quiet_crewai)
from crewai.utilities.converter import ConverterError  # noqa: E402

# CrewAI logs every failed LLM call itself; we re-raise it as RoleError, so that line is only noise
# on the terminal (and would break the live view).
logging.getLogger("crewai.flow.runtime").setLevel(logging.CRITICAL)

ROLE_SCHEMAS: dict[str, type[BaseModel]] = {
    "hypothesis": Idea,
    "coder": CodeEdit,
    "reviewer": Review,
    "analyst": Analysis,
}

# Keys of the map `build_llms` returns: "<role>" is the role's model, "<role>.fallback" its fallback,
# "<role>.offline" the offline policy it degrades to.
FALLBACK, OFFLINE = ".fallback", ".offline"

HISTORY_LINES = 20  # experiments shown in {history}; memory recall covers the older ones
DIFF_LINES = 80  # lines of an experiment's diff shown to the analyst


class RoleError(RuntimeError):
    """A role could not produce its output this time (every model it has failed).

    `budget_exceeded` is set when the run's spending limit refused the call: no model is to blame, and
    the loop should stop rather than ask again.
    """

    def __init__(self, role: str, reason: str, budget_exceeded: bool = False):
        self.role, self.reason, self.budget_exceeded = role, reason, budget_exceeded
        super().__init__(f"{role} failed: {reason}")


# ---------------------------------------------------------------------------------------------- LLMs


def build_llms(config: CrewConfig, ledger: Any, offline_llm_factory: Callable[[str], BaseLLM],
               env: Mapping[str, str] | None = None,
               make_llm: Callable[..., BaseLLM] | None = None) -> dict[str, BaseLLM]:
    """Every LLM the crew may use, keyed "<role>", "<role>.fallback" and "<role>.offline".

    Provider adapters come from `make_llm` (default `agents.crew.llm.make_llm`); `offline_llm_factory(role)`
    makes the offline policy's LLM. In single-agent mode every role shares one primary (and one
    fallback) instance. `env` (default os.environ) decides what `model: auto` becomes.
    """
    env = os.environ if env is None else env
    if make_llm is None:
        make_llm = _default_make_llm
    llms: dict[str, BaseLLM] = {}
    shared: dict[tuple[str, str], BaseLLM] = {}  # single-agent mode: one instance per (slot, model)
    for role in ROLE_NAMES:
        if not config.role(role).enabled:
            continue
        settings = config.llm_settings(role)
        offline = llms[role + OFFLINE] = offline_llm_factory(role)
        for key, model, base_url in ((role, resolve_model(settings, env), settings.base_url),
                                     (role + FALLBACK, settings.fallback_model, settings.fallback_base_url)):
            if not model:
                continue
            if model == "offline":
                llms[key] = offline
                continue
            slot = (key.removeprefix(role), model)
            if config.mode == "single-agent" and slot in shared:
                llms[key] = shared[slot]
                continue
            llms[key] = shared[slot] = make_llm(
                model, role=role if config.mode == "crew" else "single_agent", ledger=ledger, base_url=base_url,
                api_key_env=key_env_for(model, settings, base_url), temperature=settings.temperature,
                max_tokens=settings.max_tokens, timeout_s=settings.timeout_s, max_retries=settings.max_retries,
                usd_per_mtok_in=settings.usd_per_mtok_in, usd_per_mtok_out=settings.usd_per_mtok_out)
    return llms


def _default_make_llm(model: str, **options: Any) -> BaseLLM:
    from agents.crew.llm import make_llm  # imported here: only needed when a provider is configured

    return make_llm(model, **options)


# ---------------------------------------------------------------------------------------------- the crew


@dataclass
class _Candidate:
    """One model a role may use, with its run of consecutive failures."""

    llm: BaseLLM
    failures: int = 0
    given_up: bool = False


class ResearchCrew:
    """The roles of crew.yaml, callable one task at a time by the loop."""

    def __init__(self, config: CrewConfig, program: str, ledger: Any, llms: Mapping[str, BaseLLM]):
        self.config, self.program, self.ledger = config, program, ledger
        self._llms = dict(llms)
        self._agents: dict[tuple[str, int], Agent] = {}
        self._degraded: dict[str, str] = {}
        self._candidates: dict[str, list[_Candidate]] = {}
        # several candidates are prepared at once: calls overlap, at most `max_concurrent_calls` per provider
        # (the offline policy is one shared, stateful search: it answers one call at a time)
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._slots_lock = threading.Lock()
        self._agents_lock = threading.Lock()
        for role in ROLE_NAMES:
            if not config.role(role).enabled:
                continue
            missing = [k for k in (role, role + OFFLINE) if k not in self._llms]
            if missing:
                raise ValueError(f"no LLM given for {', '.join(missing)} (build the map with build_llms)")
            chain = [self._llms[role]] + ([self._llms[role + FALLBACK]] if role + FALLBACK in self._llms else [])
            self._candidates[role] = [_Candidate(llm) for llm in chain]

    # ------------------------------------------------------------------ the four roles

    def propose(self, inputs: Mapping[str, Any]) -> Idea:
        return self._perform("hypothesis", inputs)

    def code(self, inputs: Mapping[str, Any]) -> CodeEdit:
        return self._perform("coder", inputs)

    def review(self, inputs: Mapping[str, Any]) -> Review | None:
        """The reviewer's verdict, or None when the reviewer is disabled (the guard alone decides)."""
        if not self.config.roles.reviewer.enabled:
            return None
        return self._perform("reviewer", inputs)

    def analyse(self, inputs: Mapping[str, Any]) -> Analysis:
        return self._perform("analyst", inputs)

    @property
    def degraded_roles(self) -> list[str]:
        """One line per role running on less than its configured model, with the reason."""
        return list(self._degraded.values())

    # ------------------------------------------------------------------ one call

    def _perform(self, role: str, inputs: Mapping[str, Any]) -> Any:
        full = {"program": self.program, **inputs}
        description = fill_template(role, self.config.role(role).task.description, full)
        return self._try_candidates(role, full, description)

    def _slot(self, llm: BaseLLM) -> threading.BoundedSemaphore:
        """The semaphore bounding calls in flight to this LLM's provider (or OpenAI-compatible server)."""
        provider = str(getattr(llm, "provider", "") or "")
        base_url = getattr(llm, "base_url", None)
        offline = provider == "offline" or any(llm is self._llms.get(r + OFFLINE) for r in ROLE_NAMES)
        key = "offline" if offline else (base_url or provider or llm.model)
        with self._slots_lock:
            if key not in self._slots:
                limit = 1 if offline else self.config.concurrent_calls(provider, base_url)
                self._slots[key] = threading.BoundedSemaphore(limit)
            return self._slots[key]

    def _try_candidates(self, role: str, inputs: dict[str, Any], description: str) -> Any:
        candidates = [c for c in self._candidates[role] if not c.given_up]
        if not candidates:
            candidates = [_Candidate(self._llms[role + OFFLINE])]  # failures here only raise
        errors, over_budget = [], False
        for candidate in candidates:
            try:
                with self._slot(candidate.llm):
                    output = self._kickoff(role, candidate.llm, inputs, description)
            except _CallFailed as exc:
                errors.append(f"{candidate.llm.model}: {exc}")
                if exc.over_budget:  # the spending limit said no: not the model's fault
                    over_budget = True
                    continue
                candidate.failures += 1
                if candidate.failures >= self.config.degrade_after and candidate in self._candidates[role]:
                    self._give_up(role, candidate, str(exc))
                continue
            candidate.failures = 0
            return output
        raise RoleError(role, "; ".join(errors), budget_exceeded=over_budget)

    def _kickoff(self, role: str, llm: BaseLLM, inputs: dict[str, Any], description: str) -> BaseModel:
        schema = ROLE_SCHEMAS[role]
        set_context = getattr(llm, "set_context", None)
        if callable(set_context):
            set_context(role, inputs)
        agent = self._agent(role, llm)
        cfg = self.config.role(role)
        task = Task(description=description, expected_output=cfg.task.expected_output, output_pydantic=schema,
                    agent=agent)
        crew = Crew(agents=[agent], tasks=[task], process=Process.sequential, verbose=False)
        try:
            result = crew.kickoff()
        except BudgetExceeded as exc:
            raise _CallFailed(_one_line(exc), over_budget=True) from exc
        except (ValidationError, ConverterError) as exc:
            raise _CallFailed(f"the answer is not a valid {schema.__name__} ({_schema_problem(exc)})") from exc
        except SearchExhausted:
            raise  # not a failure: the offline policy has nothing new left, the loop ends the run
        except Exception as exc:
            raise _CallFailed(_one_line(exc)) from exc
        except SystemExit as exc:  # CrewAI's answer to a context-length error: must not end the loop
            raise _CallFailed(f"context window exceeded ({_one_line(exc)})") from exc
        output = result.pydantic
        if isinstance(output, schema):
            return output
        try:  # some backends hand back the raw JSON text
            return schema.model_validate_json(result.raw)
        except ValueError:
            raise _CallFailed(f"the answer is not a valid {schema.__name__}: {_one_line(result.raw)}") from None

    def _agent(self, role: str, llm: BaseLLM) -> Agent:
        """One agent per (role, model, thread): calls in parallel threads never share a CrewAI agent.

        In single-agent mode one agent plays every role on the shared model.
        """
        single = self.config.mode == "single-agent" and llm is not self._llms[role + OFFLINE]
        key = ("single_agent" if single else role, id(llm), threading.get_ident())
        with self._agents_lock:
            if key in self._agents:
                return self._agents[key]
            persona = self.config.single_agent if single else self.config.role(role)
            self._agents[key] = Agent(
                role=persona.role, goal=persona.goal, backstory=persona.backstory, llm=llm, tools=[],
                allow_delegation=False, verbose=False,
                max_retry_limit=0,  # the provider adapter owns retries; a failure here goes to the fallback
                respect_context_window=False,  # else CrewAI silently summarises train.py away
            )
        return self._agents[key]

    def _give_up(self, role: str, candidate: _Candidate, reason: str) -> None:
        candidate.given_up = True
        remaining = [c for c in self._candidates[role] if not c.given_up]
        now = remaining[0].llm.model if remaining else "offline policy"
        configured = self._candidates[role][0].llm.model
        self._degraded[role] = (f"{role}: {configured} -> {now} after {candidate.failures} failures in a row "
                                f"of {candidate.llm.model} (last: {reason})")


class _CallFailed(Exception):
    """One model's attempt at a task failed (provider error, output not matching the schema, or budget)."""

    def __init__(self, message: str, over_budget: bool = False):
        super().__init__(message)
        self.over_budget = over_budget


def _schema_problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "answer"
        return _one_line(f"{where}: {first['msg']}" + (f" and {exc.error_count() - 1} more" if exc.error_count() > 1
                                                        else ""))
    return _one_line(exc)


def _one_line(value: object, limit: int = 300) -> str:
    text = " ".join(str(value).split())
    if isinstance(value, BaseException):
        text = f"{type(value).__name__}: {text}" if text else type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------- task text


def fill_template(role: str, template: str, inputs: Mapping[str, Any]) -> str:
    """The role's task description: each {placeholder} replaced by its input rendered as text."""
    names = template_fields(template, f"{role} task template")
    missing = [name for name in names if name not in inputs]
    if missing:
        raise ValueError(f"{role}: inputs lack {', '.join(missing)} (the task template uses them)")
    return template.format_map({name: as_text(inputs[name]) for name in names})


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
    return "\n".join(lines)


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
    lines = [f"({len(records) - len(shown)} earlier experiments not shown)"] if len(records) > len(shown) else []
    for r in shown:
        bpb = f"{r.val_bpb:.6f}" if r.val_bpb is not None else "-"
        delta = f" ({r.delta:+.4f})" if r.delta is not None else ""
        lesson = f" | lesson: {_one_line(r.lesson, 160)}" if r.lesson else ""
        lines.append(f"{r.exp_id} {r.status:<8} {bpb}{delta} [{r.category or '-'}] {_one_line(r.description, 120)}"
                     f"{lesson}")
    return "\n".join(lines)
