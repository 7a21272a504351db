"""OpenAI Chat Completions adapter (official `openai` SDK) for CrewAI, also for OpenAI-compatible servers.

Structured output asks for `response_format: json_schema` with the strict schema the SDK derives from the
pydantic model (`openai.pydantic_function_tool`). An OpenAI-compatible server (vLLM, Ollama, llama.cpp) that
rejects json_schema is asked again with the schema written into the system prompt, and this adapter keeps
using that form; the JSON is then taken from the text (bare, fenced or embedded) and validated the same way.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import openai
from pydantic import BaseModel, PrivateAttr

from agents.crew.llm.provider import ProviderLLM, Turn, UnreadableResponse, error_detail, is_retried_status
from agents.crew.llm.structured import estimate_tokens, feedback_text, schema_instruction, tool_name

log = logging.getLogger(__name__)

# Reasoning models on api.openai.com refuse `temperature` and `stop`.
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")
# Statuses with which compatible servers say "I don't do json_schema".
_UNSUPPORTED_FEATURE_STATUSES = (400, 404, 422, 501)
_MAX_STOPS = 4  # the API's limit


class OpenAILLM(ProviderLLM):
    llm_type: str = "openai"
    provider: str = "openai"

    _schema_in_prompt: bool = PrivateAttr(default=False)

    def _make_client(self, api_key: str) -> openai.OpenAI:
        return openai.OpenAI(
            api_key=api_key, base_url=self.base_url, max_retries=self.max_retries, timeout=self.timeout_s
        )

    @property
    def compatible_server(self) -> bool:
        """True for a self-hosted OpenAI-compatible server (any `base_url`), False for api.openai.com."""
        return self.base_url is not None

    def _send(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None) -> Turn:
        try:
            return self._request(messages, response_model)
        except openai.APIStatusError as exc:
            if not (
                response_model is not None
                and self.compatible_server
                and not self._schema_in_prompt
                and exc.status_code in _UNSUPPORTED_FEATURE_STATUSES
            ):
                raise self._status_error(exc) from None
            log.warning(
                "%s at %s refused response_format json_schema (HTTP %s); writing the schema into the prompt instead",
                self.model,
                self.base_url,
                exc.status_code,
            )
            self._schema_in_prompt = True
            return self._request(messages, response_model)

    def _request(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None) -> Turn:
        """One SDK request; LLMCallError when the SDK gives up (APIStatusError passes through for `_send`)."""
        params = self._params(messages, response_model)
        try:
            response = self._client.chat.completions.create(**params)
        except openai.APITimeoutError:
            raise self._call_error(f"no reply within timeout_s={self.timeout_s}") from None
        except openai.APIConnectionError as exc:
            raise self._call_error(f"connection failed ({type(exc.__cause__ or exc).__name__})") from None
        except openai.APIStatusError as exc:
            if response_model is not None and self.compatible_server and not self._schema_in_prompt:
                raise  # `_send` decides whether this means "no json_schema here"
            raise self._status_error(exc) from None
        except (json.JSONDecodeError, UnicodeDecodeError, openai.APIResponseValidationError) as exc:
            raise UnreadableResponse(f"the response body could not be read ({type(exc).__name__})") from exc
        return self._turn_from(response, params["messages"])

    def _status_error(self, exc: openai.APIStatusError) -> Exception:
        detail = error_detail(exc.body, exc.message)
        return self._call_error(
            f"HTTP {exc.status_code} {detail}", exc.status_code, retried=is_retried_status(exc.status_code)
        )

    def _params(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None) -> dict[str, Any]:
        chat = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
        reasoning = not self.compatible_server and bool(_REASONING_MODEL.match(self.model))
        # api.openai.com has moved to max_completion_tokens; many compatible servers only know max_tokens.
        max_key = "max_tokens" if self.compatible_server else "max_completion_tokens"
        params: dict[str, Any] = {"model": self.model, max_key: int(self.max_tokens or 4096)}
        if self.temperature is not None and not reasoning:
            params["temperature"] = self.temperature
        if response_model is None:
            stops = self.stop_sequences[:_MAX_STOPS]
            if stops and not reasoning:
                params["stop"] = stops
        elif self._schema_in_prompt:
            chat = _with_system_note(chat, schema_instruction(response_model))
        else:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": tool_name(response_model),
                    "schema": openai.pydantic_function_tool(response_model)["function"]["parameters"],
                    "strict": True,
                },
            }
        params["messages"] = chat
        return params

    def _turn_from(self, response: Any, sent: list[dict[str, Any]]) -> Turn:
        choices = getattr(response, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise UnreadableResponse("the response has no choices")
        choice = choices[0]
        text = choice.message.content or ""
        refusal = getattr(choice.message, "refusal", None)
        usage = getattr(response, "usage", None)
        if usage is not None:
            input_tokens, output_tokens = usage.prompt_tokens or 0, usage.completion_tokens or 0
        else:  # some compatible servers omit usage: count an estimate rather than nothing
            input_tokens = estimate_tokens(json.dumps([m["content"] for m in sent], default=str))
            output_tokens = estimate_tokens(text)
        return Turn(
            text=text if not refusal else f"(refused) {refusal}",
            truncated=choice.finish_reason == "length",
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            assistant=[{"role": "assistant", "content": text or refusal}] if (text or refusal) else [],
        )

    def _feedback(self, turn: Turn, problem: str, response_model: type[BaseModel]) -> list[dict[str, Any]]:
        return [*turn.assistant, {"role": "user", "content": feedback_text(response_model, problem)}]


def _with_system_note(chat: list[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    """Add `note` to the leading system message (some chat templates allow only one), or start with one."""
    if chat and chat[0]["role"] == "system" and isinstance(chat[0]["content"], str):
        return [{"role": "system", "content": f"{chat[0]['content']}\n\n{note}"}, *chat[1:]]
    return [{"role": "system", "content": note}, *chat]
