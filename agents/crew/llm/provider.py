"""What the Anthropic and OpenAI adapters share: the CrewAI `BaseLLM` surface, budgets, context, output retries.

A subclass only knows its wire protocol: `_request()` makes one SDK request in a given structured-output form
and returns a `Turn` (or raises `HTTPFailure` with the server's status and body). Here:

- the form: `structured` from crew.yaml, or with `auto` the strongest form the server accepts, found on the
  first call, remembered per server for the run, and announced when a form is given up (`servers.py`);
- the context: the prompt is counted before sending, `max_tokens` is lowered to what the window leaves, and a
  prompt that cannot fit, a server's overflow error and a reply cut off by a full window all raise
  `ContextOverflow` (with the server's count of the refused prompt next to ours), so the caller trims the prompt
  (never a change of form); the token ratio is learned from the prompt_tokens of the server's replies;
- a reply cut short is asked for once more: cut by the window, the caller trims the prompt to give the reply more
  room; cut at max_tokens or at the server's own reply limit, the model is asked for a concise reply (and a
  server that caps replies below max_tokens is announced). One cut reply never changes the learned window;
- the faults: every HTTP attempt the SDK retried, malformed replies and overflows are counted per role;
- output retries: a reply that arrived but cannot be used is asked for again, at most `output_retries` times;
  each retry is the original conversation plus a note on what was wrong, never a pile of failed replies.

Transport failures (429, 5xx, timeouts, dropped connections) are retried by the SDK itself on every request, the
first one to a server and the context probes included (`max_retries`, exponential backoff honouring
`retry-after`); only a response the caller must read itself (a refused form, an overflow) is handed back at once
(`faults.reading_refusals`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import BaseModel, PrivateAttr

from agents.crew.llm.errors import ContextOverflow, LLMCallError, LLMConfigError, LLMOutputError
from agents.crew.llm.faults import count_attempts, reading_refusals, recording_attempts
from agents.crew.llm.pricing import Price, context_window, price_for
from agents.crew.llm.servers import (
    CUT_TOLERANCE,
    DEFAULT_CONTEXT,
    LADDERS,
    PRIOR_TOKEN_RATIO,
    PROBE_TIMEOUT_S,
    Refusal,
    ServerFacts,
    ServerRegistry,
    classify_error,
    probe_context,
)
from agents.crew.llm.structured import extract_json, feedback_text, validate_output
from agents.crew.llm.tokens import MESSAGE_OVERHEAD, count_messages, count_tokens
from agents.crew.llm.usage import UsageLedger
from agents.crewai_env import quiet_crewai

quiet_crewai()
from crewai import BaseLLM  # noqa: E402
from crewai.events.types.llm_events import LLMCallType  # noqa: E402
from crewai.llms.base_llm import llm_call_context  # noqa: E402

log = logging.getLogger(__name__)

MIN_REPLY_TOKENS = 256  # a structured reply needs at least this much room
# The prompt budget keeps 1/REPLY_SHARE of the window (at least REPLY_FLOOR, at most max_tokens) for the reply:
# the roles' replies are short (an idea, a few search/replace blocks), and an 8k window must still hold a 4k
# train.py whole.
REPLY_SHARE = 8
REPLY_FLOOR = 512
SAFETY = 0.97  # share of the window a prompt may be planned to fill: estimates are estimates


@dataclass
class Turn:
    """One provider reply, reduced to what the retry loop needs."""

    text: str  # all text blocks, joined
    data: Any = None  # structured input of a tool call, when there was one
    truncated: bool = False  # the provider stopped at a length limit
    input_tokens: int = 0
    output_tokens: int = 0
    usage_reported: bool = True  # False: the counts are our estimates (the server sent no usage)
    max_out: int = 0  # the max_tokens this request was sent with
    accepted_before: int = 0  # the most tokens the server had processed in one request before this one


class UnreadableResponse(Exception):
    """The provider answered 200 but the body could not be parsed (not JSON, wrong shape)."""


class HTTPFailure(Exception):
    """The SDK gave up on an HTTP error status; the body decides what it means (`servers.classify_error`)."""

    def __init__(self, status: int, body: object, message: str) -> None:
        super().__init__(message)
        self.status, self.body, self.message = status, body, message


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
    structured: str = "auto"
    context_tokens: int | None = None  # crew.yaml's context window for this role, if set

    _ledger: UsageLedger = PrivateAttr()
    _client: Any = PrivateAttr(default=None)
    _secret: str = PrivateAttr(default="")
    _price: Price = PrivateAttr()
    _facts: ServerFacts = PrivateAttr()
    sdk_error: ClassVar[type[Exception]] = Exception  # the SDK's base error class (set by each adapter)

    def __init__(self, *, ledger: UsageLedger, api_key: str, servers: ServerRegistry | None = None,
                 **fields: Any) -> None:
        # BaseLLM guesses `provider` from the model name ("openai" without a prefix): keep the class's own.
        fields.setdefault("provider", type(self).model_fields["provider"].default)
        super().__init__(**fields)
        self._ledger = ledger
        self._secret = api_key
        self._price = self._make_price()
        kind = "compatible" if self.compatible_server else self.provider
        self._facts = (servers or ServerRegistry()).facts(self.endpoint, self.model, PRIOR_TOKEN_RATIO[kind])
        if self.structured != "auto" and self.structured not in self.ladder + ("tool", "prompt"):
            raise LLMConfigError(f"role {self.role!r}: {self.provider} models take structured: "
                                 f"{', '.join(('auto', *self.ladder, 'prompt'))}, not {self.structured!r}")
        self._client = self._make_client(api_key)

    @classmethod
    def _wrap_call_method(cls, method_name: str) -> None:
        # CrewAI wraps `call` in its own rate-limit retry loop; the SDK already retried with backoff, and a
        # second layer would multiply the attempts (and the waiting) by three. Leave `call` as written.
        return None

    # -- provider-specific ---------------------------------------------------------------------------

    @property
    def compatible_server(self) -> bool:
        """True for a self-hosted or third-party endpoint (any `base_url`), False for the provider's own API."""
        return self.base_url is not None

    @property
    def ladder(self) -> tuple[str, ...]:
        """The structured-output forms `auto` tries, strongest first."""
        return LADDERS[f"{self.provider}-compatible" if self.compatible_server else self.provider]

    @property
    def endpoint(self) -> str:
        return self.base_url or self.provider

    def _make_client(self, api_key: str) -> Any:
        raise NotImplementedError

    def _request(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None, mode: str | None,
                 max_out: int) -> Turn:
        """One request through the SDK in form `mode` (None: plain text). Raises HTTPFailure on an error status,
        LLMCallError on timeouts and connection failures, UnreadableResponse on a body that cannot be read."""
        raise NotImplementedError

    def _fetch(self, method: str, url: str, body: Any) -> Any:
        """One request to another endpoint of the server (its context probes) through the SDK client, so its
        retries and `retry-after` hold there too; the JSON answer, or None on an error status or failure."""
        client = self._client.with_options(timeout=PROBE_TIMEOUT_S)
        with recording_attempts() as outcomes:
            try:
                if method == "GET":
                    return client.get(url, cast_to=object)
                return client.post(url, body=body, cast_to=object)
            except self.sdk_error:
                return None
            finally:
                count_attempts(self._ledger.faults, self.role, outcomes, last_was_answer=True)

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
        return int(self.context_window() * 0.85)

    def get_input_tokens_count(
        self, messages: Any, tools: Any = None, response_model: type[BaseModel] | None = None
    ) -> int:
        formatted = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
        return math.ceil(count_messages(self._prompt_texts(formatted, response_model)) * self._facts.token_ratio)

    # -- context ---------------------------------------------------------------------------------------

    def context_window(self) -> int:
        """This role's context window in the server's tokens: what the server reports (capped by crew.yaml's
        `context_tokens`), else crew.yaml's value, else the model table or the provider's default."""
        if self.compatible_server and not self._facts.probed:
            with self._facts.lock:
                probe = not self._facts.probed
                self._facts.probed = True
            if probe:
                found = probe_context(self.base_url or "", self.model, self._fetch)
                if found:
                    self._facts.learn_context(*found)
        reported = self._facts.context_tokens
        if reported and self.context_tokens:
            return min(reported, self.context_tokens)
        if reported or self.context_tokens:
            return int(reported or self.context_tokens)  # type: ignore[arg-type]
        if self.compatible_server:
            return DEFAULT_CONTEXT["compatible"]
        return context_window(self.model, DEFAULT_CONTEXT[self.provider])

    def context_source(self) -> str:
        """Where `context_window()` comes from, for messages."""
        if self._facts.context_tokens and not (self.context_tokens and self.context_tokens < self._facts.context_tokens):
            return self._facts.context_source
        if self.context_tokens:
            return "crew.yaml context_tokens"
        return "the default for this kind of server" if self.compatible_server else "the model table"

    def prompt_budget(self, response_model: type[BaseModel] | None, *, reply_tokens: int | None = None,
                      ratio: float | None = None) -> int:
        """Local tokens (`tokens.count_tokens`) the messages may take, leaving the reply its share of the window
        or `reply_tokens` if more (never more than max_tokens), at `ratio` server tokens per local token (default:
        the learned ratio)."""
        window = self.context_window()
        most = int(self.max_tokens or 4096)
        reply_tokens = min(most, max(REPLY_FLOOR, window // REPLY_SHARE, reply_tokens or 0))
        return self._budget(response_model, reply_tokens, ratio)

    def largest_prompt(self, response_model: type[BaseModel] | None, *, ratio: float | None = None) -> int:
        """The most local tokens a prompt may take at all: the window less the least room a reply needs."""
        return self._budget(response_model, min(int(self.max_tokens or 4096), MIN_REPLY_TOKENS), ratio)

    def _budget(self, response_model: type[BaseModel] | None, reply_tokens: int, ratio: float | None) -> int:
        window = self.context_window()
        schema = count_tokens(json.dumps(response_model.model_json_schema())) if response_model else 0
        return int((window * SAFETY - reply_tokens) / (ratio or self._facts.token_ratio)) - schema \
            - 2 * MESSAGE_OVERHEAD

    @property
    def token_ratio(self) -> float:
        """Server tokens per local token, as learned from the server's replies (a prior until then)."""
        return self._facts.token_ratio

    def _prompt_texts(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None) -> list[str]:
        texts = [m.get("content") if isinstance(m.get("content"), str) else json.dumps(m.get("content"), default=str)
                 for m in messages]
        if response_model is not None:  # tool / json_schema forms send it too, and it counts as input
            texts.append(json.dumps(response_model.model_json_schema()))
        return [t or "" for t in texts]

    # -- the loop ----------------------------------------------------------------------------------------

    def _complete(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None) -> str | BaseModel:
        conversation = list(messages)
        problem = ""
        attempts = self.output_retries + 1
        cut_before = False
        for attempt in range(1, attempts + 1):
            try:
                turn = self._metered_send(conversation, response_model)
            except UnreadableResponse as exc:
                problem = str(exc)
                self._ledger.faults.count("malformed", self.role)
            else:
                if response_model is None:
                    return self._apply_stop_words(turn.text)
                if turn.truncated:
                    problem = self._read_cut(turn, again=cut_before)
                    cut_before = True
                else:
                    value, problem = validate_output(response_model, data=turn.data, text=turn.text)
                    if value is not None:
                        return value
                self._ledger.faults.count("malformed", self.role)
            log.info("%s/%s (%s): unusable output, attempt %d of %d: %s",  # counted as a fault, shown at the end
                        self.provider, self.model, self.role, attempt, attempts, problem)
            if attempt < attempts:
                self._ledger.faults.count("retries", self.role)
            # the retry replaces the failed reply: the original conversation and one note on what was wrong
            conversation = list(messages) + self._feedback(problem, response_model)
        schema = response_model.__name__ if response_model else "text"
        raise LLMOutputError(
            f"{self.provider}/{self.model} (role {self.role!r}) gave no usable {schema} after {attempts} attempts; "
            f"last problem: {problem}",
            provider=self.provider,
            model=self.model,
            attempts=attempts,
            last_problem=problem,
        )

    def _feedback(self, problem: str, response_model: type[BaseModel] | None) -> list[dict[str, Any]]:
        return [{"role": "user", "content": feedback_text(response_model, problem)}] if response_model else []

    def _read_cut(self, turn: Turn, *, again: bool) -> str:
        """Why a structured reply was cut short, as the note for asking once more; ContextOverflow when the window
        cut it (a shorter prompt leaves the reply more room), LLMOutputError when it is cut a second time."""
        wanted = int(self.max_tokens or 0)
        stopped_early = turn.usage_reported and 0 < turn.output_tokens < turn.max_out - CUT_TOLERANCE
        if stopped_early and self.compatible_server:
            verdict = self._facts.read_cut(turn.input_tokens, turn.output_tokens, turn.accepted_before)
        else:  # it used all the room it had: the window's, when that was less than max_tokens
            verdict = "window" if turn.max_out < wanted else "max_tokens"
        if verdict == "window":
            window = self.context_window()
            self._ledger.faults.count("overflow", self.role)
            raise ContextOverflow(
                f"{self.provider}/{self.model} (role {self.role!r}): the reply was cut off by the context window "
                f"({window} tokens, from {self.context_source()}; prompt {turn.input_tokens} + reply "
                f"{turn.output_tokens} tokens) before the JSON was complete, not by max_tokens={self.max_tokens}",
                provider=self.provider, model=self.model, limit=window, prompt_tokens=turn.input_tokens,
                reply_cut=True, reply_tokens=turn.output_tokens)
        if verdict == "cap":
            self._announce_reply_cap(turn.output_tokens)
            problem = (f"the server stopped the reply after {turn.output_tokens} tokens (its own limit on a reply) "
                       "before the JSON was complete")
        elif verdict == "unknown":
            problem = f"the reply stopped after {turn.output_tokens} tokens before the JSON was complete"
        else:
            problem = f"the reply was cut off at max_tokens={turn.max_out} before the JSON was complete"
        if again:
            self._ledger.faults.count("malformed", self.role)
            raise LLMOutputError(
                f"{self.provider}/{self.model} (role {self.role!r}): {problem}, and again when asked for a concise "
                "reply" + (f"; the server's reply limit ({turn.output_tokens} tokens) is below max_tokens={wanted}: "
                           "raise it on the server" if verdict == "cap" else ""),
                provider=self.provider, model=self.model, attempts=2, last_problem=problem)
        return problem

    def _announce_reply_cap(self, cap: int) -> None:
        with self._facts.lock:
            if self._facts.cap_announced:
                return
            self._facts.cap_announced = True
        self._ledger.faults.announce(
            self.role, f"{self.endpoint} ({self.model}) stops replies after about {cap} tokens though max_tokens="
            f"{self.max_tokens} and the context window had room: a reply limit of the server itself (llama-server "
            "--n-predict, Ollama num_predict). Replies cut there are asked for again, concisely; raise the "
            "server's limit to stop this.")

    def _metered_send(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None) -> Turn:
        """Fit check, then `_send` between a budget reservation (worst case) and the ledger entry (real use)."""
        local = count_messages(self._prompt_texts(messages, response_model))
        estimate = math.ceil(local * self._facts.token_ratio)
        window = self.context_window()
        room = int(window * SAFETY) - estimate
        wanted = int(self.max_tokens or 4096)
        if room < min(wanted, MIN_REPLY_TOKENS):
            self._ledger.faults.count("overflow", self.role)
            raise ContextOverflow(
                f"{self.provider}/{self.model} (role {self.role!r}): the prompt (about {estimate} tokens) leaves "
                f"{max(room, 0)} of the {window}-token context window ({self.context_source()}) for the reply; "
                f"it needs at least {min(wanted, MIN_REPLY_TOKENS)}",
                provider=self.provider, model=self.model, limit=window, prompt_tokens=estimate)
        max_out = min(wanted, room)
        reservation = self._ledger.reserve(role=self.role, model=self.model, input_tokens=estimate,
                                           output_tokens=max_out, usd=self._price.cost(estimate, max_out))
        try:
            turn = self._send(messages, response_model, max_out)
        except BaseException:
            self._ledger.release(reservation)
            raise
        if not turn.usage_reported:
            turn.input_tokens = estimate
        turn.max_out = max_out
        if turn.usage_reported:
            turn.accepted_before = self._facts.accept(turn.input_tokens + turn.output_tokens)
        self._ledger.settle(reservation, input_tokens=turn.input_tokens, output_tokens=turn.output_tokens,
                            usd=self._price.cost(turn.input_tokens, turn.output_tokens))
        self._track_token_usage_internal({"prompt_tokens": turn.input_tokens, "completion_tokens": turn.output_tokens})
        if turn.usage_reported:
            self._learn_from_usage(local, estimate, turn)
        return turn

    def _learn_from_usage(self, local: int, estimate: int, turn: Turn) -> None:
        """Calibrate the token count from the server's own prompt_tokens; notice a server that silently cut the
        prompt to its window (Ollama does)."""
        if local > 500 and turn.input_tokens < 0.6 * local:
            seen = turn.input_tokens + turn.output_tokens
            self._facts.learn_context(seen, "a prompt the server cut short")
            self._ledger.faults.announce(
                self.role, f"{self.endpoint} counted only {turn.input_tokens} prompt tokens of about {estimate} "
                f"sent: it probably cut the prompt to its context window. Prompts are now fitted to {seen} tokens; "
                "set context_tokens for this role to the server's real window (Ollama: num_ctx).")
            return
        self._facts.learn_ratio(local, turn.input_tokens)

    # -- one request, in the right form --------------------------------------------------------------------

    def current_mode(self) -> str:
        """The structured-output form the next structured request uses."""
        if self.structured != "auto":
            return self.structured
        if self._facts.mode:
            return self._facts.mode
        return next((m for m in self.ladder if m not in self._facts.refused), self.ladder[-1])

    def _send(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None, max_out: int) -> Turn:
        structured = response_model is not None
        # the first structured request to a self-hosted server with `auto` also finds the form it honours
        probing = (structured and self.compatible_server and self.structured == "auto" and self._facts.mode is None
                   and len(self.ladder) > 1)
        while True:
            mode = self.current_mode() if structured else None
            try:
                turn = self._attempt(messages, response_model, mode, max_out)
            except HTTPFailure as failure:
                refusal = classify_error(failure.status, failure.body, failure.message, mode=mode)
                if refusal.kind == "context":
                    raise self._overflow(refusal, messages, response_model) from None
                if refusal.kind == "format" and mode and self._give_up_mode(mode, f"HTTP {failure.status}: "
                                                                                 f"{refusal.detail}"):
                    continue
                self._count_final(failure.status)
                raise self._status_error(failure, refusal) from None
            if probing and mode not in (None, "prompt") and not turn.truncated and not _bare_json(turn):
                # a server that honours the form answers with the JSON alone; text around it means it was ignored
                moved = self._give_up_mode(mode, "it answered with text around the JSON, so it ignores this form")
                if moved and not _has_json(turn):
                    continue  # nothing usable in this reply: ask again in the next form
                return turn
            if mode is not None and self.structured == "auto" and self._facts.mode is None:
                self._facts.mode = mode
            return turn

    def _attempt(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None, mode: str | None,
                 max_out: int) -> Turn:
        """`_request` with every HTTP attempt the SDK made counted as a fault of this role. A refusal of the form
        or an overflow is not retried by the SDK (asking again would get the same answer): it is read here."""

        def is_refusal(status: int, body: Any) -> bool:
            return classify_error(status, body, mode=mode).kind != "other"

        with recording_attempts() as outcomes, reading_refusals(is_refusal):
            try:
                turn = self._request(messages, response_model, mode, max_out)
            except (HTTPFailure, UnreadableResponse):
                count_attempts(self._ledger.faults, self.role, outcomes, last_was_answer=True)
                raise
            except Exception:
                count_attempts(self._ledger.faults, self.role, outcomes, last_was_answer=False)
                raise
        count_attempts(self._ledger.faults, self.role, outcomes, last_was_answer=True)
        return turn

    def _count_final(self, status: int) -> None:
        if status == 429:
            self._ledger.faults.count("rate_limited", self.role)
        elif status >= 500:
            self._ledger.faults.count("server_error", self.role)

    def _give_up_mode(self, mode: str, why: str) -> bool:
        """With `auto`, stop using `mode` on this server for the run and announce it; False if nothing is left."""
        if self.structured != "auto":
            return False
        with self._facts.lock:
            if self._facts.mode == mode:
                self._facts.mode = None
            self._facts.refused.setdefault(mode, why)
            left = [m for m in self.ladder if m not in self._facts.refused]
        if not left:
            return False
        self._ledger.faults.announce(
            self.role, f"{self.endpoint} ({self.model}) refused structured output as {mode} ({why}); using "
            f"{left[0]} for the rest of the run")
        return True

    def _overflow(self, refusal: Refusal, messages: list[dict[str, Any]],
                  response_model: type[BaseModel] | None) -> ContextOverflow:
        # the window it states is learned; its count of this one prompt is handed to the caller to trim by, not
        # learned as the ratio (that comes from prompts it answered)
        self._facts.learn_context(refusal.limit, "the server's overflow error")
        self._ledger.faults.count("overflow", self.role)
        window = self.context_window()
        counted = f"{refusal.prompt_tokens} prompt tokens" if refusal.prompt_tokens else "the prompt"
        return ContextOverflow(
            f"{self.provider}/{self.model} (role {self.role!r}): the server refused {counted} as longer than its "
            f"context window ({window} tokens, from {self.context_source()})",
            provider=self.provider, model=self.model, limit=window, prompt_tokens=refusal.prompt_tokens,
            local_tokens=count_messages(self._prompt_texts(messages, response_model)))

    # -- errors --------------------------------------------------------------------------------------------

    def _status_error(self, failure: HTTPFailure, refusal: Refusal) -> LLMCallError:
        retried = refusal.kind == "other" and (failure.status in (408, 409, 429) or failure.status >= 500)
        what = f"HTTP {failure.status} {refusal.detail}"
        if refusal.kind == "format":
            what += f" (structured: {self.structured} was refused; try structured: auto)"
        return self._call_error(what, failure.status, retried=retried)

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


def _bare_json(turn: Turn) -> bool:
    if turn.data is not None:
        return True
    try:
        json.loads(turn.text.strip())
    except ValueError:
        return False
    return True


def _has_json(turn: Turn) -> bool:
    if turn.data is not None:
        return True
    try:
        extract_json(turn.text)
    except ValueError:
        return False
    return True
