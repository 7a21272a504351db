"""`OfflineLLM`: the offline search policy behind CrewAI's `BaseLLM`, so a role runs the same crew without a model.

It answers from the role's inputs (handed over by `roles.py` through `set_context` before each kickoff), not from
the prompt text: zero tokens, zero cost, deterministic. One `OfflinePolicy` is shared by the four roles' LLMs of a
run, so the coder can implement the idea the hypothesis role proposed. `SamplerLLM` does the same for a
hyperparameter sampler (agents/crew/hpo.py), which plays the hypothesis and coder roles for its own trials.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, PrivateAttr

from agents.crew.policy import OfflinePolicy, PolicyError
from agents.crewai_env import quiet_crewai

if TYPE_CHECKING:
    from agents.crew.hpo import Sampler

quiet_crewai()
from crewai import BaseLLM  # noqa: E402

ROLES = ("hypothesis", "coder", "reviewer", "analyst")


class OfflineLLM(BaseLLM):
    """A CrewAI LLM whose every answer comes from the shared `OfflinePolicy`."""

    llm_type: str = "offline"
    provider: str = "offline"

    _policy: OfflinePolicy = PrivateAttr()  # SamplerLLM: a hpo.Sampler (anything with answer(role, inputs))
    _role: str | None = PrivateAttr(default=None)
    _inputs: dict[str, Any] = PrivateAttr(default_factory=dict)
    _answer: BaseModel | None = PrivateAttr(default=None)

    def __init__(self, policy: OfflinePolicy | None = None, **fields: Any) -> None:
        fields.setdefault("model", "offline")
        fields.setdefault("provider", "offline")  # else BaseLLM guesses "openai" from the model name
        super().__init__(**fields)
        self._policy = policy if policy is not None else OfflinePolicy()

    @property
    def policy(self) -> OfflinePolicy:
        return self._policy

    def set_context(self, role: str, inputs: dict[str, Any]) -> None:
        """The role about to run and its inputs (docs/ARCHITECTURE.md, "Roles: what each one is given")."""
        if role not in ROLES:
            raise PolicyError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        self._role, self._inputs, self._answer = role, dict(inputs), None

    def call(
        self,
        messages: str | list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Any | None = None,
        from_agent: Any | None = None,
        response_model: type[BaseModel] | None = None,
        **kwargs: Any,
    ) -> str | BaseModel:
        """With `response_model`, an instance of it (CrewAI stores it as the task's pydantic output); else its JSON.

        The answer is computed once per `set_context`: CrewAI may call again for the same task (a converter
        pass), and the policy must not advance its search twice for one proposal.
        """
        if self._role is None:
            raise PolicyError("OfflineLLM was called before set_context(role, inputs): the offline policy answers "
                              "from the role's inputs, not from the prompt")
        if self._answer is None:
            self._answer = self._policy.answer(self._role, self._inputs)
        if response_model is None:
            return self._answer.model_dump_json()
        if isinstance(self._answer, response_model):
            return self._answer
        try:
            return response_model.model_validate(self._answer.model_dump())
        except ValueError as exc:
            raise PolicyError(f"the {self._role} role answers with {type(self._answer).__name__}, which does not "
                              f"fit the requested {response_model.__name__}: {exc}") from exc

    async def acall(self, messages: str | list[dict[str, Any]], *args: Any, **kwargs: Any) -> str | BaseModel:
        return await asyncio.to_thread(self.call, messages, *args, **kwargs)

    def supports_function_calling(self) -> bool:
        return False

    def supports_stop_words(self) -> bool:
        return False

    def get_input_tokens_count(self, messages: Any, tools: Any = None, response_model: Any = None) -> int:
        return 0  # nothing is sent anywhere; also keeps CrewAI from warning about estimated counts


class SamplerLLM(OfflineLLM):
    """A CrewAI LLM answering from a hyperparameter sampler: its trials as ideas, and their edits."""

    llm_type: str = "sampler"
    provider: str = "sampler"

    def __init__(self, sampler: Sampler, **fields: Any) -> None:
        fields.setdefault("model", sampler.method)
        fields.setdefault("provider", "sampler")
        super().__init__(policy=sampler, **fields)  # the sampler answers like the policy: answer(role, inputs)
