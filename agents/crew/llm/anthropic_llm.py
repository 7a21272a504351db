"""Anthropic Messages API adapter (official `anthropic` SDK) for CrewAI.

Structured output uses forced tool use: the response model's JSON schema is offered as the only tool and
`tool_choice` names it, so the reply is a `tool_use` block whose `input` is the object. A retry after
unusable output answers that block with an error `tool_result`, the protocol's own way to say "try again".

No `temperature` is sent: the SDK (1.0+) dropped the argument and current Claude models accept only the
default, so a role's temperature applies to OpenAI models only.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
from pydantic import BaseModel

from agents.crew.llm.provider import ProviderLLM, Turn, UnreadableResponse, error_detail, is_retried_status
from agents.crew.llm.structured import feedback_text, tool_name


class AnthropicLLM(ProviderLLM):
    llm_type: str = "anthropic"
    provider: str = "anthropic"

    def _make_client(self, api_key: str) -> anthropic.Anthropic:
        return anthropic.Anthropic(
            api_key=api_key, base_url=self.base_url, max_retries=self.max_retries, timeout=self.timeout_s
        )

    def _send(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None) -> Turn:
        system, turns = to_anthropic_messages(messages)
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": int(self.max_tokens or 4096),
            "messages": turns,
        }
        if system:
            params["system"] = system
        if response_model is not None:
            name = tool_name(response_model)
            params["tools"] = [
                {
                    "name": name,
                    "description": (response_model.__doc__ or f"Return a {name} object.").strip(),
                    "input_schema": response_model.model_json_schema(),
                }
            ]
            params["tool_choice"] = {"type": "tool", "name": name, "disable_parallel_tool_use": True}
        else:
            stops = [s for s in self.stop_sequences if s.strip()]  # the API refuses whitespace-only stops
            if stops:
                params["stop_sequences"] = stops

        try:
            response = self._client.messages.create(**params)
        except anthropic.APITimeoutError:
            raise self._call_error(f"no reply within timeout_s={self.timeout_s}") from None
        except anthropic.APIConnectionError as exc:
            raise self._call_error(f"connection failed ({type(exc.__cause__ or exc).__name__})") from None
        except anthropic.APIStatusError as exc:
            detail = error_detail(exc.body, exc.message)
            raise self._call_error(
                f"HTTP {exc.status_code} {detail}", exc.status_code, retried=is_retried_status(exc.status_code)
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError, anthropic.APIResponseValidationError) as exc:
            raise UnreadableResponse(f"the response body could not be read ({type(exc).__name__})") from exc
        return _turn_from(response)

    def _feedback(self, turn: Turn, problem: str, response_model: type[BaseModel]) -> list[dict[str, Any]]:
        text = feedback_text(response_model, problem)
        tool_use = next((b for m in turn.assistant for b in m["content"] if b["type"] == "tool_use"), None)
        if tool_use is None:
            return [*turn.assistant, {"role": "user", "content": text}]
        result = {"type": "tool_result", "tool_use_id": tool_use["id"], "is_error": True, "content": text}
        return [*turn.assistant, {"role": "user", "content": [result]}]


def _turn_from(response: Any) -> Turn:
    blocks: list[dict[str, Any]] = []
    texts: list[str] = []
    data = None
    for block in response.content or []:
        if block.type == "text" and block.text:
            texts.append(block.text)
            blocks.append({"type": "text", "text": block.text})
        elif block.type == "tool_use":
            data = block.input if data is None else data
            blocks.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
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
        assistant=[{"role": "assistant", "content": blocks}] if blocks else [],
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
