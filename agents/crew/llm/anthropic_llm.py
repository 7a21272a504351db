"""Anthropic Messages API adapter (official `anthropic` SDK) for CrewAI.

Structured output uses forced tool use (`structured: tool`, what `auto` picks): the response model's JSON schema
is offered as the only tool and `tool_choice` names it, so the reply is a `tool_use` block whose `input` is the
object. `structured: prompt` writes the schema into the system prompt and reads the JSON from the text, for an
Anthropic-compatible endpoint (`base_url`) without tool use; with `auto` such an endpoint falls back to it when
it refuses tools.

No `temperature` is sent: the SDK (1.0+) dropped the argument and current Claude models accept only the
default, so a role's temperature applies to OpenAI models only. The SDK's OpenTelemetry spans and trace-context
propagation are switched off: CrewAI keeps crew ids in the OpenTelemetry baggage, which would travel along.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, ClassVar

import anthropic
from pydantic import BaseModel

from agents.crew.llm.faults import http_client_for
from agents.crew.llm.provider import HTTPFailure, ProviderLLM, Turn, UnreadableResponse
from agents.crew.llm.structured import schema_instruction, tool_name

_TAKES_OPEN_TELEMETRY = "open_telemetry" in inspect.signature(anthropic.Anthropic.__init__).parameters


class AnthropicLLM(ProviderLLM):
    llm_type: str = "anthropic"
    provider: str = "anthropic"
    sdk_error: ClassVar[type[Exception]] = anthropic.APIError

    def _make_client(self, api_key: str) -> anthropic.Anthropic:
        options: dict[str, Any] = {"open_telemetry": {"traces": False, "propagation": False}} \
            if _TAKES_OPEN_TELEMETRY else {}
        return anthropic.Anthropic(api_key=api_key, base_url=self.base_url, max_retries=self.max_retries,
                                   timeout=self.timeout_s, http_client=http_client_for(anthropic, timeout=self.timeout_s),
                                   **options)

    def _request(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None, mode: str | None,
                 max_out: int) -> Turn:
        system, turns = to_anthropic_messages(messages)
        params: dict[str, Any] = {"model": self.model, "max_tokens": max_out, "messages": turns}
        if response_model is not None and mode == "tool":
            name = tool_name(response_model)
            params["tools"] = [{"name": name, "input_schema": response_model.model_json_schema(),
                                "description": (response_model.__doc__ or f"Return a {name} object.").strip()}]
            params["tool_choice"] = {"type": "tool", "name": name, "disable_parallel_tool_use": True}
        elif response_model is not None:
            shown = "\n".join([system, *(json.dumps(t["content"], default=str) for t in turns)])
            system = "\n\n".join(p for p in (system, schema_instruction(response_model, shown)) if p)
        else:
            stops = [s for s in self.stop_sequences if s.strip()]  # the API refuses whitespace-only stops
            if stops:
                params["stop_sequences"] = stops
        if system:
            params["system"] = system
        try:
            response = self._client.messages.create(**params)
        except anthropic.APITimeoutError:
            raise self._call_error(f"no reply within timeout_s={self.timeout_s}") from None
        except anthropic.APIConnectionError as exc:
            raise self._call_error(f"connection failed ({type(exc.__cause__ or exc).__name__})") from None
        except anthropic.APIStatusError as exc:
            raise HTTPFailure(exc.status_code, exc.body, exc.message) from None
        except (json.JSONDecodeError, UnicodeDecodeError, anthropic.APIResponseValidationError) as exc:
            raise UnreadableResponse(f"the response body could not be read ({type(exc).__name__})") from exc
        return _turn_from(response)


def _turn_from(response: Any) -> Turn:
    texts: list[str] = []
    data = None
    for block in response.content or []:
        if block.type == "text" and block.text:
            texts.append(block.text)
        elif block.type == "tool_use" and data is None:
            data = block.input
    usage = response.usage
    input_tokens = (
        (usage.input_tokens or 0)
        + (getattr(usage, "cache_creation_input_tokens", 0) or 0)
        + (getattr(usage, "cache_read_input_tokens", 0) or 0)
    )
    return Turn(
        text="\n".join(texts),
        data=data,
        truncated=response.stop_reason == "max_tokens",
        input_tokens=input_tokens,
        output_tokens=usage.output_tokens or 0,
    )


def to_anthropic_messages(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """Split CrewAI's chat messages into Anthropic's `system` string and alternating user/assistant turns."""
    system_parts: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role in ("system", "developer"):
            system_parts.append(content if isinstance(content, str) else json.dumps(content))
            continue
        role = "assistant" if role == "assistant" else "user"
        if turns and turns[-1]["role"] == role:  # the API wants alternating turns: merge neighbours
            turns[-1]["content"] = _as_blocks(turns[-1]["content"]) + _as_blocks(content)
        else:
            turns.append({"role": role, "content": content})
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": "Begin."})
    return "\n\n".join(p for p in system_parts if p), turns


def _as_blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, list):
        return list(content)
    return [{"type": "text", "text": content}] if content else []
