"""What the Anthropic and OpenAI adapters share: the CrewAI `BaseLLM` surface, budgets, accounting, output retries.

A subclass only knows its wire protocol: `_send()` makes one SDK request and returns a `Turn`;
`_feedback()` words a retry after malformed output. Transport failures (429, 5xx, timeouts, dropped
connections) are retried by the SDK itself (`max_retries`, exponential backoff honouring `retry-after`);
this class retries only output that arrived but cannot be used, feeding the problem back, at most
`output_retries` times.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, PrivateAttr

from agents.crew.llm.errors import LLMCallError, LLMOutputError
from agents.crew.llm.pricing import Price, context_window, price_for
from agents.crew.llm.structured import estimate_tokens, validate_output
from agents.crew.llm.usage import UsageLedger
from agents.crewai_env import quiet_crewai

quiet_crewai()
from crewai import BaseLLM  # noqa: E402
from crewai.events.types.llm_events import LLMCallType  # noqa: E402
from crewai.llms.base_llm import llm_call_context  # noqa: E402

log = logging.getLogger(__name__)

_DEFAULT_CONTEXT_TOKENS = 32_000  # for models we know nothing about (local servers): a common size
_CONTEXT_HEADROOM = 0.85  # CrewAI compacts history past this share of the window


@dataclass
class Turn:
    """One provider reply, reduced to what the retry loop needs."""

    text: str  # all text blocks, joined
    data: Any = None  # structured input of a tool_use block, when there was one
    truncated: bool = False  # the provider stopped at max_tokens
    input_tokens: int = 0
    output_tokens: int = 0
    assistant: list[dict[str, Any]] = field(default_factory=list)  # messages that replay this reply in a retry


class UnreadableResponse(Exception):
    """The provider answered 200 but the body could not be parsed (not JSON, wrong shape)."""


class ProviderLLM(BaseLLM):
    """Base for one provider's adapter; built by `agents.crew.llm.make_llm`, never with a key in its fields."""

    llm_type: str = "provider"
    role: str
    timeout_s: float = 120.0
    max_retries: int = 4
    output_retries: int = 2
    usd_per_mtok_in: float | None = None
    usd_per_mtok_out: float | None = None
    api_key_env: str | None = None  # the variable's name, for messages; the key itself lives only in the client

    _ledger: UsageLedger = PrivateAttr()
    _client: Any = PrivateAttr(default=None)
    _secret: str = PrivateAttr(default="")
    _price: Price = PrivateAttr()

    def __init__(self, *, ledger: UsageLedger, api_key: str, **fields: Any) -> None:
        # BaseLLM guesses `provider` from the model name ("openai" without a prefix): keep the class's own.
        fields.setdefault("provider", type(self).model_fields["provider"].default)
        super().__init__(**fields)
        self._ledger = ledger
        self._secret = api_key
        self._price = self._make_price()
        self._client = self._make_client(api_key)

    @classmethod
    def _wrap_call_method(cls, method_name: str) -> None:
        # CrewAI wraps `call` in its own rate-limit retry loop; the SDK already retried with backoff, and a
        # second layer would multiply the attempts (and the waiting) by three. Leave `call` as written.
        return None

    # -- provider-specific ---------------------------------------------------------------------------

    def _make_client(self, api_key: str) -> Any:
        raise NotImplementedError

    def _send(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None) -> Turn:
        """One request through the SDK. Raises LLMCallError when the SDK gives up, UnreadableResponse on junk."""
        raise NotImplementedError

    def _feedback(self, turn: Turn, problem: str, response_model: type[BaseModel]) -> list[dict[str, Any]]:
        """Messages to append after a reply that could not be used (the reply itself, then the problem)."""
        raise NotImplementedError

    def _make_price(self) -> Price:
        return price_for(self.model, usd_per_mtok_in=self.usd_per_mtok_in, usd_per_mtok_out=self.usd_per_mtok_out)

    # -- CrewAI BaseLLM surface ------------------------------------------------------------------------

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
        """Text, or (with `response_model`) a validated instance of it, which CrewAI stores as the task's pydantic
        output. Native tool calling is not offered (`supports_function_calling` is False)."""
        with llm_call_context():
            self._emit_call_started_event(messages=messages, from_task=from_task, from_agent=from_agent)
            try:
                result = self._complete(self._format_messages(messages), response_model)
            except Exception as exc:
                self._emit_call_failed_event(error=str(exc), from_task=from_task, from_agent=from_agent)
                raise
            self._emit_call_completed_event(
                response=result, call_type=LLMCallType.LLM_CALL, from_task=from_task, from_agent=from_agent
            )
            return result

    async def acall(
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
        """`call` in a worker thread (the context, and so the ledger's experiment tag, goes with it)."""
        return await asyncio.to_thread(
            self.call,
            messages,
            tools=tools,
            callbacks=callbacks,
            available_functions=available_functions,
            from_task=from_task,
            from_agent=from_agent,
            response_model=response_model,
        )

    def supports_function_calling(self) -> bool:
        return False

    def get_context_window_size(self) -> int:
        return int(context_window(self.model, _DEFAULT_CONTEXT_TOKENS) * _CONTEXT_HEADROOM)

    def get_input_tokens_count(
        self, messages: Any, tools: Any = None, response_model: type[BaseModel] | None = None
    ) -> int:
        formatted = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
        return self._estimate_input_tokens(formatted, response_model)

    # -- the loop ----------------------------------------------------------------------------------------

    def _complete(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None) -> str | BaseModel:
        conversation = list(messages)
        problem = ""
        attempts = self.output_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                turn = self._metered_send(conversation, response_model)
            except UnreadableResponse as exc:
                problem = str(exc)
                continue
            if response_model is None:
                return self._apply_stop_words(turn.text)
            if turn.truncated:
                problem = f"the reply was cut off at max_tokens={self.max_tokens} before the JSON was complete"
            else:
                value, problem = validate_output(response_model, data=turn.data, text=turn.text)
                if value is not None:
                    return value
            log.warning(
                "%s/%s (%s): unusable output, attempt %d of %d: %s",
                self.provider,
                self.model,
                self.role,
                attempt,
                attempts,
                problem,
            )
            conversation += self._feedback(turn, problem, response_model)
        schema = response_model.__name__ if response_model else "text"
        raise LLMOutputError(
            f"{self.provider}/{self.model} (role {self.role!r}) gave no usable {schema} after {attempts} attempts; "
            f"last problem: {problem}",
            provider=self.provider,
            model=self.model,
            attempts=attempts,
            last_problem=problem,
        )

    def _metered_send(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None) -> Turn:
        """`_send` between a budget reservation (worst case) and the ledger entry (what was really used)."""
        max_out = int(self.max_tokens or 0)
        estimate = self._estimate_input_tokens(messages, response_model)
        reservation = self._ledger.reserve(
            role=self.role,
            model=self.model,
            input_tokens=estimate,
            output_tokens=max_out,
            usd=self._price.cost(estimate, max_out),
        )
        try:
            turn = self._send(messages, response_model)
        except BaseException:
            self._ledger.release(reservation)
            raise
        self._ledger.settle(
            reservation,
            input_tokens=turn.input_tokens,
            output_tokens=turn.output_tokens,
            usd=self._price.cost(turn.input_tokens, turn.output_tokens),
        )
        self._track_token_usage_internal({"prompt_tokens": turn.input_tokens, "completion_tokens": turn.output_tokens})
        return turn

    def _estimate_input_tokens(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None) -> int:
        text = json.dumps([m.get("content") for m in messages], default=str)
        if response_model is not None:
            text += json.dumps(response_model.model_json_schema())
        return estimate_tokens(text)

    # -- errors --------------------------------------------------------------------------------------------

    def _call_error(self, what: str, status: int | None = None, *, retried: bool = True) -> LLMCallError:
        """An LLMCallError naming provider, model, role and endpoint; any trace of the key is masked.

        Adapters raise it `from None`: the SDK's exception holds the request, and a server may quote the
        credentials in its error body, so it is not chained; this message carries the status and the detail.
        """
        where = ""
        if self.base_url:
            parts = urlsplit(self.base_url)
            where = f" at {parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
        after = f" after {self.max_retries} retries" if retried else ""
        message = f"{self.provider}/{self.model}{where} (role {self.role!r}) failed{after}: {what}"
        if status in (401, 403):
            message += f" (check the key in {self.api_key_env})" if self.api_key_env else ""
        if self._secret and len(self._secret) >= 4:
            message = message.replace(self._secret, "[redacted]")
        return LLMCallError(message, provider=self.provider, model=self.model, status=status)


def is_retried_status(status: int) -> bool:
    """Statuses the SDKs retry on their own (request timeout, lock conflict, rate limit, server errors)."""
    return status in (408, 409, 429) or status >= 500


def error_detail(body: object, fallback: str) -> str:
    """`type: message` from a provider error body (Anthropic's {"error": {...}} or OpenAI's inner object)."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            kind = inner.get("type") or inner.get("code")
            return f"{kind}: {inner['message']}" if kind else str(inner["message"])
    return fallback
