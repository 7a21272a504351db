"""The four roles as CrewAI agents: each call runs one Task in a one-task sequential Crew.

`ResearchCrew.propose / code / review / analyse` take the input dicts of docs/ARCHITECTURE.md ("Roles")
and return the role's schema. The task description is the role's template from crew.yaml filled with
those inputs as text and fitted to the model's context window (`prompts.py`); the same inputs go, as
Python objects, to an LLM that has `set_context`. A context overflow shortens the prompt and asks again.
A window too small for train.py with the hypothesis schema made for it (its constants and parts as enums)
gets the plain `Idea` schema instead, announced once per model.

Reliability: a failed call is tried again with the role's `fallback_model`; a model that fails
`degrade_after` calls in a row is given up for the run, and once none is left the role is played by the
offline policy (`on_model_failure: offline`, announced to every listener) or the run stops
(`on_model_failure: stop`). The loop's stall guard gives a role up the same way (`give_up_role`) when its
answers parse but its candidates never reach training. After Ctrl-C no call starts (`agents.stop`). A coder that falls back to the offline policy takes the hypothesis role with it:
the offline coder implements only the offline policy's own ideas. A call that fails anyway raises
`RoleError`, whose text names only the failure's class: provider error text never reaches a prompt.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from agents import stop
from agents.config import ROLE_NAMES, CrewConfig, key_env_for, provider_of, resolve_model
from agents.crew.idea_schema import idea_schema, plain_idea
from agents.crew.llm.errors import BudgetExceeded, ContextOverflow
from agents.crew.llm.faults import acting_as
from agents.crew.llm.servers import ServerRegistry
from agents.crew.llm.tokens import count_tokens
from agents.crew.policy import SearchExhausted
from agents.crew.prompts import PromptTooLarge, fill_template, fit_template
from agents.crew.replies import placeholder_problem
from agents.crew.schemas import Analysis, CodeEdit, Idea, Review
from agents.crewai_env import quiet_crewai

quiet_crewai()
from crewai import Agent, BaseLLM, Crew, Process, Task  # noqa: E402  (must follow quiet_crewai)
from crewai.utilities.converter import ConverterError  # noqa: E402

# CrewAI logs every failed LLM call itself; we re-raise it as RoleError, so that line is only noise
# on the terminal (and would break the live view).
logging.getLogger("crewai.flow.runtime").setLevel(logging.CRITICAL)

__all__ = ["FALLBACK", "OFFLINE", "Degradation", "ResearchCrew", "RoleError", "build_llms", "fill_template"]

ROLE_SCHEMAS: dict[str, type[BaseModel]] = {
    "hypothesis": Idea,
    "coder": CodeEdit,
    "reviewer": Review,
    "analyst": Analysis,
}

def role_schema(role: str, inputs: Mapping[str, Any]) -> type[BaseModel]:
    """The schema a role answers in: the hypothesis's names the constants and parts of the train.py it is shown."""
    if role == "hypothesis" and isinstance(inputs.get("train_py"), str):
        return idea_schema(inputs["train_py"])
    return ROLE_SCHEMAS[role]


# Keys of the map `build_llms` returns: "<role>" is the role's model, "<role>.fallback" its fallback,
# "<role>.offline" the offline policy it degrades to.
FALLBACK, OFFLINE = ".fallback", ".offline"

OVERFLOW_RETRIES = 3  # prompt shortenings after a context overflow, before the call counts as failed
CREWAI_FRAMING_TOKENS = 150  # what CrewAI wraps around a task (headings, instructions), besides the schema


class RoleError(RuntimeError):
    """A role could not produce its output this time (every model it has failed).

    `str()` names only the class of the failure ("the provider failed: LLMCallError"): it is what feedback,
    lessons and memory may carry into later prompts. `reason` has the details for the console and logs.
    `budget_exceeded`: the run's spending limit refused the call (no model is to blame); `stop_run`: the role
    has no model left and crew.yaml says `on_model_failure: stop`. Either way the loop should stop.
    """

    def __init__(self, role: str, reason: str, budget_exceeded: bool = False, kind: str = "",
                 stop_run: bool = False):
        self.role, self.reason, self.budget_exceeded = role, reason, budget_exceeded
        self.kind, self.stop_run = kind or "error", stop_run
        if budget_exceeded:
            text = f"{role}: the LLM budget refused the call ({reason})"
        else:
            text = f"{role}: the provider failed: {self.kind}"
        super().__init__(text)

    @property
    def stop_reason(self) -> str | None:
        """Why the run must stop because of this error, or None."""
        if self.budget_exceeded:
            return f"the LLM budget refused a call: {self.reason}"
        if self.stop_run:
            return f"the {self.role} role has no working model left (on_model_failure: stop): {self.reason}"
        return None


@dataclass(frozen=True)
class Degradation:
    """A role gave up a model: what it was configured with, what plays it now, from which experiment, why."""

    role: str
    configured: str
    now: str
    model: str  # the model given up
    failures: int
    from_experiment: str | None
    reason: str
    stalled: int = 0  # given up by the stall guard: candidates in a row that never reached training

    @property
    def offline(self) -> bool:
        return self.now == "offline policy"

    def line(self) -> str:
        since = f", from experiment {self.from_experiment}" if self.from_experiment else ""
        if self.stalled:
            return (f"{self.role}: {self.configured} -> {self.now} after {self.stalled} candidates in a row that "
                    f"never reached training{since} ({self.reason})")
        if not self.failures:  # given up with another role
            return f"{self.role}: {self.configured} -> {self.now}{since} ({self.reason})"
        failures = f"{self.failures} failure{'s' if self.failures != 1 else ''}" + (" in a row" if self.failures > 1
                                                                                 else "")
        return f"{self.role}: {self.configured} -> {self.now} after {failures} of {self.model}{since} (last: {self.reason})"


# ---------------------------------------------------------------------------------------------- LLMs


def build_llms(config: CrewConfig, ledger: Any, offline_llm_factory: Callable[[str], BaseLLM],
               env: Mapping[str, str] | None = None,
               make_llm: Callable[..., BaseLLM] | None = None) -> dict[str, BaseLLM]:
    """Every LLM the crew may use, keyed "<role>", "<role>.fallback" and "<role>.offline".

    Provider adapters come from `make_llm` (default `agents.crew.llm.make_llm`); `offline_llm_factory(role)`
    makes the offline policy's LLM. In single-agent mode every role shares one primary (and one
    fallback) instance. `env` (default os.environ) decides what `model: auto` becomes. All adapters share
    one `ServerRegistry`, so what one role learns about a server (its structured-output form, its context
    window) the others know too. `structured` and `context_tokens` apply to the fallback when it is the same
    provider at the same address.
    """
    env = os.environ if env is None else env
    if make_llm is None:
        make_llm = _default_make_llm
    servers = ServerRegistry()
    llms: dict[str, BaseLLM] = {}
    shared: dict[tuple[str, str], BaseLLM] = {}  # single-agent mode: one instance per (slot, model)
    for role in ROLE_NAMES:
        if not config.role(role).enabled:
            continue
        settings = config.llm_settings(role)
        offline = llms[role + OFFLINE] = offline_llm_factory(role)
        primary = resolve_model(settings, env)
        for key, model, base_url in ((role, primary, settings.base_url),
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
            same_server = key == role or (provider_of(model) == provider_of(primary) and base_url == settings.base_url)
            llms[key] = shared[slot] = make_llm(
                model, role=role if config.mode == "crew" else "single_agent", ledger=ledger, base_url=base_url,
                api_key_env=key_env_for(model, settings, base_url), temperature=settings.temperature,
                max_tokens=settings.max_tokens, timeout_s=settings.timeout_s, max_retries=settings.max_retries,
                usd_per_mtok_in=settings.usd_per_mtok_in, usd_per_mtok_out=settings.usd_per_mtok_out,
                structured=settings.structured if same_server else "auto",
                context_tokens=settings.context_tokens if same_server else None, servers=servers)
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
    """The roles of crew.yaml, callable one task at a time by the loop.

    `listeners` are called with each `Degradation` the moment a role gives up a model (the live view shows a
    banner); `degradations` keeps the latest per role. `sampler` (an `llm.offline.SamplerLLM`, crew.yaml `sampler:`)
    takes the hypothesis role's turns its share gives it and codes its own trials; every other idea goes to the
    roles' models as usual.
    """

    def __init__(self, config: CrewConfig, program: str, ledger: Any, llms: Mapping[str, BaseLLM],
                 sampler: BaseLLM | None = None):
        self.config, self.program, self.ledger = config, program, ledger
        self.sampler = sampler
        self._llms = dict(llms)
        self._agents: dict[tuple[str, int], Agent] = {}
        self.degradations: dict[str, Degradation] = {}
        self.listeners: list[Callable[[Degradation], None]] = []
        self._candidates: dict[str, list[_Candidate]] = {}
        self._state = threading.Lock()
        self._lean_told: set[tuple[str, str]] = set()  # (role, model) told it answers in the plain schema
        self._health = threading.Lock()  # failure counts and given-up flags: preparing threads share them
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
        sampler = self.sampler
        if sampler is not None and sampler.policy.next_side(inputs.get("history") or []) == "sampler":
            return self._perform_with("hypothesis", sampler, inputs)
        try:
            return self._perform("hypothesis", inputs)
        except SearchExhausted as exc:
            if sampler is None:
                raise
            sampler.policy.crew_exhausted(str(exc))  # announced; the sampler takes the crew's turns
            return self._perform_with("hypothesis", sampler, inputs)

    def code(self, inputs: Mapping[str, Any]) -> CodeEdit:
        if self.sampler is not None and self.sampler.policy.owns(inputs["idea"]):
            return self._perform_with("coder", self.sampler, inputs)
        return self._perform("coder", inputs)

    def review(self, inputs: Mapping[str, Any]) -> Review | None:
        """The reviewer's verdict, or None when the reviewer is disabled (the guard alone decides)."""
        if not self.config.roles.reviewer.enabled:
            return None
        return self._perform("reviewer", inputs)

    def analyse(self, inputs: Mapping[str, Any]) -> Analysis:
        return self._perform("analyst", inputs)

    @property
    def model_roles(self) -> list[str]:
        """The roles configured with a model (not the offline policy) that they may lose."""
        return [role for role, chain in self._candidates.items() if chain[0].llm is not self._llms[role + OFFLINE]]

    @property
    def degraded_roles(self) -> list[str]:
        """One line per role running on less than its configured model, with the reason."""
        return [d.line() for d in self.degradations.values()]

    # ------------------------------------------------------------------ one call

    def _perform(self, role: str, inputs: Mapping[str, Any]) -> Any:
        full = {"program": self.program, **inputs}
        template = self.config.role(role).task.description
        with acting_as(role):
            return self._try_candidates(role, full, template)

    def _perform_with(self, role: str, llm: BaseLLM, inputs: Mapping[str, Any]) -> Any:
        """One task on one given LLM (the sampler), outside the role's chain of models and their fallbacks."""
        full = {"program": self.program, **inputs}
        with acting_as(role), self._slot(llm):
            try:
                return self._kickoff(role, llm, full, self.config.role(role).task.description)
            except _CallFailed as exc:
                raise RoleError(role, str(exc), kind=exc.kind) from exc

    def _slot(self, llm: BaseLLM) -> threading.BoundedSemaphore:
        """The semaphore bounding calls in flight to this LLM's provider (or OpenAI-compatible server)."""
        provider = str(getattr(llm, "provider", "") or "")
        base_url = getattr(llm, "base_url", None)
        offline = provider == "offline" or any(llm is self._llms.get(r + OFFLINE) for r in ROLE_NAMES)
        # the offline policy and a sampler each hold one search's state, set per call: one call at a time each
        one_at_a_time = "offline" if offline else "sampler" if llm is self.sampler else None
        key = one_at_a_time or base_url or provider or llm.model
        with self._slots_lock:
            if key not in self._slots:
                limit = 1 if one_at_a_time else self.config.concurrent_calls(provider, base_url)
                self._slots[key] = threading.BoundedSemaphore(limit)
            return self._slots[key]

    def _try_candidates(self, role: str, inputs: dict[str, Any], template: str) -> Any:
        with self._health:
            candidates = [c for c in self._candidates[role] if not c.given_up]
        if not candidates:
            if self.config.on_model_failure == "stop":
                last = self.degradations.get(role)
                raise RoleError(role, last.line() if last else "every model was given up", kind="no model left",
                                stop_run=True)
            candidates = [_Candidate(self._llms[role + OFFLINE])]  # failures here only raise
        errors, kinds, over_budget = [], [], False
        for candidate in candidates:
            try:
                with self._slot(candidate.llm):
                    stop.check()  # after Ctrl-C no call starts (nor a fallback's), even one that waited for a slot
                    output = self._kickoff(role, candidate.llm, inputs, template)
            except _CallFailed as exc:
                errors.append(f"{candidate.llm.model}: {exc}")
                kinds.append(exc.kind)
                if exc.over_budget:  # the spending limit said no: not the model's fault
                    over_budget = True
                    continue
                with self._health:  # several preparing threads count failures of the same model
                    candidate.failures += 1
                    give_up = ((exc.give_up or candidate.failures >= self.config.degrade_after)
                               and not candidate.given_up and candidate in self._candidates[role])
                if give_up:
                    self._give_up(role, [candidate], str(exc))
                continue
            with self._health:
                candidate.failures = 0
            return output
        with self._health:
            left = any(not c.given_up for c in self._candidates[role])
        stop_run = self.config.on_model_failure == "stop" and not left
        raise RoleError(role, "; ".join(errors), budget_exceeded=over_budget, kind=", ".join(dict.fromkeys(kinds)),
                        stop_run=stop_run and not over_budget)

    def give_up_role(self, role: str, reason: str, stalled: int) -> bool:
        """Give up every model the role still has (the stall guard: its candidates never reach training).

        True when the offline policy plays the role from now on (announced like any degradation); False when
        nothing was given up: the role already runs on the offline policy, or `on_model_failure: stop` says the
        run must stop instead.
        """
        if self.config.on_model_failure == "stop":
            return False
        with self._health:
            remaining = [c for c in self._candidates.get(role, []) if not c.given_up]
        if not remaining:
            return False
        self._give_up(role, remaining, reason, stalled=stalled)
        return True

    def _kickoff(self, role: str, llm: BaseLLM, inputs: dict[str, Any], template: str) -> BaseModel:
        """One task on one model, its prompt fitted to the model's context window. A context overflow trims the
        prompt (history, recall, feedback first) and asks again: to the server's own count of the refused prompt,
        or, when the window cut the reply, leaving the reply twice the room it used. Never a failure of the model
        until the trims are used up; only train.py and the instructions not fitting at all give the model up."""
        schema = role_schema(role, inputs)
        if not callable(getattr(llm, "prompt_budget", None)):
            return self._run_task(role, llm, inputs, fill_template(role, template, inputs), schema)
        reply_tokens, ratio, overflow = None, None, None
        for _ in range(OVERFLOW_RETRIES + 1):
            try:
                description = self._fitted(role, llm, schema, template, inputs, reply_tokens, ratio)
            except _CallFailed as exc:
                if exc.kind != "PromptTooLarge" or schema is ROLE_SCHEMAS[role]:
                    raise
                schema = self._lean_schema(role, llm, schema)
                description = self._fitted(role, llm, schema, template, inputs, reply_tokens, ratio)
            try:
                return self._run_task(role, llm, inputs, description, schema)
            except ContextOverflow as exc:
                overflow = exc
                if exc.reply_cut:
                    reply_tokens = 2 * max(exc.reply_tokens or 0, reply_tokens or 0)
                elif exc.server_ratio:  # the server counted this prompt: trim to its count
                    ratio = max(exc.server_ratio * 1.02, ratio or 0.0)
                else:  # our own estimate said no: count more cautiously
                    ratio = (ratio or getattr(llm, "token_ratio", 1.0)) * 1.15
        raise _CallFailed(f"{overflow} (still after {OVERFLOW_RETRIES} shorter prompts)", kind="ContextOverflow")

    def _lean_schema(self, role: str, llm: BaseLLM, schema: type[BaseModel]) -> type[BaseModel]:
        """The role's plain schema, for a model whose window cannot hold train.py with the schema made for it (its
        constants and parts as enums): the idea comes without `changes`, memory reads its words, and the
        fingerprint still judges the edit. Announced once per model."""
        with self._state:
            told = (role, llm.model) in self._lean_told
            self._lean_told.add((role, llm.model))
        if not told and hasattr(self.ledger, "faults"):
            self.ledger.faults.announce(role, f"{llm.model}'s context window cannot hold train.py with the {role} "
                                              f"schema that lists its constants and parts; it answers in the plain "
                                              f"{ROLE_SCHEMAS[role].__name__} schema (ideas without declared changes: "
                                              f"memory reads their words, the fingerprint judges the edit)")
        return ROLE_SCHEMAS[role]

    def _fitted(self, role: str, llm: BaseLLM, schema: type[BaseModel], template: str, inputs: dict[str, Any],
                reply_tokens: int | None, ratio: float | None) -> str:
        """The task text within the budget; if even the fixed inputs exceed it, within the most the window allows
        a prompt (the reply keeps only the least room it needs); if not even that, the model cannot play the role."""
        framing = self._framing_tokens(role, llm, schema)
        budget = llm.prompt_budget(schema, reply_tokens=reply_tokens, ratio=ratio) - framing
        try:
            return fit_template(role, template, inputs, budget, count_tokens).text
        except PromptTooLarge:
            pass
        most = llm.largest_prompt(schema, ratio=ratio) - framing
        try:
            return fit_template(role, template, inputs, most, count_tokens).text
        except PromptTooLarge as exc:
            per_token = ratio or getattr(llm, "token_ratio", 1.0)  # both numbers in the server's tokens
            needed, room = round((exc.needed + framing) * per_token), max(0, round((most + framing) * per_token))
            raise _CallFailed(
                f"{llm.model} cannot play {role}: train.py and the instructions alone need about {needed} tokens, "
                f"and its {llm.context_window()}-token context window ({llm.context_source()}) leaves at most "
                f"{room} for a prompt", kind="PromptTooLarge", give_up=True) from exc

    def _run_task(self, role: str, llm: BaseLLM, inputs: dict[str, Any], description: str,
                  schema: type[BaseModel]) -> BaseModel:
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
        except ContextOverflow:
            raise  # `_kickoff` shortens the prompt
        except BudgetExceeded as exc:
            raise _CallFailed(_one_line(exc), over_budget=True, kind=type(exc).__name__) from exc
        except (ValidationError, ConverterError) as exc:
            raise _CallFailed(f"the answer is not a valid {schema.__name__} ({_schema_problem(exc)})",
                              kind=type(exc).__name__) from exc
        except SearchExhausted:
            raise  # not a failure: the offline policy has nothing new left, the loop ends the run
        except Exception as exc:
            raise _CallFailed(_one_line(exc), kind=type(exc).__name__) from exc
        except SystemExit as exc:  # CrewAI's answer to a context-length error: must not end the loop
            raise _CallFailed(f"context window exceeded ({_one_line(exc)})", kind="ContextOverflow") from exc
        output = result.pydantic
        if not isinstance(output, schema):
            try:  # some backends hand back the raw JSON text
                output = schema.model_validate_json(result.raw)
            except ValueError:
                raise _CallFailed(f"the answer is not a valid {schema.__name__}: {_one_line(result.raw)}",
                                  kind="ValidationError") from None
        placeholder = placeholder_problem(output) if llm is not self._llms.get(role + OFFLINE) else ""
        if placeholder:  # the provider adapters retry these themselves; this catches any other backend
            raise _CallFailed(f"the answer is not a real {schema.__name__}: {placeholder}", kind="ValidationError")
        return plain_idea(output) if isinstance(output, Idea) else output

    def _framing_tokens(self, role: str, llm: BaseLLM, schema: type[BaseModel]) -> int:
        """Tokens of what CrewAI adds around the task text: the persona, the expected output, the schema."""
        single = self.config.mode == "single-agent" and llm is not self._llms[role + OFFLINE]
        persona = self.config.single_agent if single else self.config.role(role)
        text = " ".join((persona.role, persona.goal, persona.backstory, self.config.role(role).task.expected_output,
                         json.dumps(schema.model_json_schema(), indent=2)))
        return count_tokens(text) + CREWAI_FRAMING_TOKENS

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

    def _give_up(self, role: str, given_up: list[_Candidate], reason: str, stalled: int = 0) -> None:
        with self._health:
            given_up = [c for c in given_up if not c.given_up]
            for candidate in given_up:
                candidate.given_up = True
            remaining = [c for c in self._candidates[role] if not c.given_up]
            followers = []
            stop = self.config.on_model_failure == "stop"
            if role == "coder" and not remaining and not stop:
                # the offline coder implements only the offline policy's ideas: an LLM idea would be skipped unbuilt
                followers = [c for c in self._candidates.get("hypothesis", []) if not c.given_up]
                for other in followers:
                    other.given_up = True
        if not given_up:
            return
        now = remaining[0].llm.model if remaining else ("nothing (the run stops)" if stop else "offline policy")
        configured = self._candidates[role][0].llm.model
        experiment = self.ledger.current_experiment() if hasattr(self.ledger, "current_experiment") else None
        models = " and ".join(dict.fromkeys(c.llm.model for c in given_up))
        self._announce(Degradation(role, configured, now, models, max(c.failures for c in given_up), experiment,
                                   reason, stalled))
        for other in followers:
            self._announce(Degradation(
                "hypothesis", self._candidates["hypothesis"][0].llm.model, "offline policy", other.llm.model, 0,
                experiment, "the coder runs the offline policy, which implements only the offline policy's own ideas"))

    def _announce(self, degradation: Degradation) -> None:
        with self._state:
            self.degradations[degradation.role] = degradation
            listeners = list(self.listeners)
        for listener in listeners:
            listener(degradation)


class _CallFailed(Exception):
    """One model's attempt at a task failed (provider error, output not matching the schema, or budget)."""

    def __init__(self, message: str, over_budget: bool = False, kind: str = "", give_up: bool = False):
        super().__init__(message)
        self.over_budget = over_budget
        self.kind = kind or "error"
        self.give_up = give_up  # asking this model again cannot help: give it up for the role now


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
