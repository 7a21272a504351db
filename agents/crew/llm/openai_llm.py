"""OpenAI Chat Completions adapter (official `openai` SDK) for CrewAI, also for OpenAI-compatible servers.

Structured-output forms (`structured` in crew.yaml, or found by `auto`, see `servers.py`):
- `json_schema`: `response_format: json_schema`. api.openai.com gets the strict schema the SDK derives from the
  pydantic model (every field required, optional ones nullable); a compatible server gets the model's own
  schema, where optional fields are nullable and not required, so a grammar never forces a model to invent
  a value for them.
- `json_object`: `response_format: {"type": "json_object", "schema": ...}` (llama-cpp-python and llama-server
  constrain to the schema; servers that only know JSON mode ignore the key) plus the schema in the prompt.
- `tool`: one forced function call whose arguments are the object.
- `prompt`: no response_format; the schema is in the prompt and the JSON is read from the text.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

import openai
from pydantic import BaseModel

from agents.crew.llm.faults import http_client_for
from agents.crew.llm.provider import HTTPFailure, ProviderLLM, Turn, UnreadableResponse
from agents.crew.llm.structured import schema_for, schema_instruction, tool_name
from agents.crew.llm.tokens import count_tokens

# Reasoning models on api.openai.com refuse `temperature` and `stop`.
_REASONING_MODEL = re.compile(r"^(o\d|gpt-5)")
_MAX_STOPS = 4  # the API's limit


class OpenAILLM(ProviderLLM):
    llm_type: str = "openai"
    provider: str = "openai"
    sdk_error: ClassVar[type[Exception]] = openai.APIError

    def _make_client(self, api_key: str) -> openai.OpenAI:
        return openai.OpenAI(api_key=api_key, base_url=self.base_url, max_retries=self.max_retries,
                             timeout=self.timeout_s, http_client=http_client_for(openai, timeout=self.timeout_s))

    def _request(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None, mode: str | None,
                 max_out: int) -> Turn:
        params = self._params(messages, response_model, mode, max_out)
        try:
            response = self._client.chat.completions.create(**params)
        except openai.APITimeoutError:
            raise self._call_error(f"no reply within timeout_s={self.timeout_s}") from None
        except openai.APIConnectionError as exc:
            raise self._call_error(f"connection failed ({type(exc.__cause__ or exc).__name__})") from None
        except openai.APIStatusError as exc:
            raise HTTPFailure(exc.status_code, exc.body, exc.message) from None
        except (json.JSONDecodeError, UnicodeDecodeError, openai.APIResponseValidationError) as exc:
            raise UnreadableResponse(f"the response body could not be read ({type(exc).__name__})") from exc
        return self._turn_from(response)

    def _params(self, messages: list[dict[str, Any]], response_model: type[BaseModel] | None, mode: str | None,
                max_out: int) -> dict[str, Any]:
        chat = [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
        reasoning = not self.compatible_server and bool(_REASONING_MODEL.match(self.model))
        # api.openai.com has moved to max_completion_tokens; many compatible servers only know max_tokens.
        max_key = "max_tokens" if self.compatible_server else "max_completion_tokens"
        params: dict[str, Any] = {"model": self.model, max_key: max_out}
        if self.temperature is not None and not reasoning:
            params["temperature"] = self.temperature
        if response_model is None:
            stops = self.stop_sequences[:_MAX_STOPS]
            if stops and not reasoning:
                params["stop"] = stops
        else:
            strict = not self.compatible_server
            schema = schema_for(response_model, strict=strict)
            name = tool_name(response_model)
            if mode == "json_schema":
                params["response_format"] = {"type": "json_schema",
                                             "json_schema": {"name": name, "schema": schema, "strict": strict}}
            elif mode == "json_object":
                params["response_format"] = {"type": "json_object", "schema": schema} if self.compatible_server \
                    else {"type": "json_object"}
                chat = _with_system_note(chat, schema_instruction(response_model, _shown(chat)))
            elif mode == "tool":
                function = {"name": name, "description": (response_model.__doc__ or name).strip(), "parameters": schema}
                if strict:
                    function["strict"] = True
                params["tools"] = [{"type": "function", "function": function}]
                params["tool_choice"] = {"type": "function", "function": {"name": name}}
            else:  # prompt
                chat = _with_system_note(chat, schema_instruction(response_model, _shown(chat)))
        params["messages"] = chat
        return params

    def _turn_from(self, response: Any) -> Turn:
        choices = getattr(response, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise UnreadableResponse("the response has no choices")
        choice = choices[0]
        message = choice.message
        text = message.content or ""
        refusal = getattr(message, "refusal", None)
        data = None
        calls = getattr(message, "tool_calls", None) or []
        if calls and getattr(calls[0], "function", None) is not None:
            text = calls[0].function.arguments or ""  # validated like any JSON text (it may be cut short)
        usage = getattr(response, "usage", None)
        reported = usage is not None and usage.prompt_tokens is not None
        return Turn(
            text=text if not refusal else f"(refused) {refusal}",
            data=data,
            truncated=choice.finish_reason == "length",
            input_tokens=(usage.prompt_tokens or 0) if reported else 0,
            output_tokens=(usage.completion_tokens or 0) if reported else count_tokens(text),
            usage_reported=reported,
        )


def _shown(chat: list[dict[str, Any]]) -> str:
    return "\n".join(str(m["content"]) for m in chat)


def _with_system_note(chat: list[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    """Add `note` to the leading system message (some chat templates allow only one), or start with one."""
    if chat and chat[0]["role"] == "system" and isinstance(chat[0]["content"], str):
        return [{"role": "system", "content": f"{chat[0]['content']}\n\n{note}"}, *chat[1:]]
    return [{"role": "system", "content": note}, *chat]
