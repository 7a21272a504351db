"""Kinds of real model server, as `ScriptedLLMServer` behaviours: what each one accepts, refuses and reports.

Each answers the way the real server does (status, body, field names), as read from their sources and, for
llama-cpp-python 0.3.36, captured from the real server running SmolLM2-135M:

- `OpenAIKind`: api.openai.com. Strict json_schema (every property required, additionalProperties false);
  json_object needs the word "json" in the messages; an over-long request is HTTP 400 `context_length_exceeded`.
- `VLLMKind`: json_schema (non-strict schemas welcome), json_object; `max_model_len` in /v1/models; prompt plus
  max_tokens over it is HTTP 400 `BadRequestError`.
- `OllamaKind`: json_schema; json_object becomes plain JSON mode (the `schema` key is ignored); /api/show has the
  model's parameters (num_ctx); a prompt over num_ctx is cut silently, and prompt_tokens says how much was read.
- `LlamaServerKind`: llama.cpp's llama-server. json_schema and json_object + schema (grammar-constrained);
  /props has the per-slot n_ctx; a prompt of n_ctx tokens or more is HTTP 400 `exceed_context_size_error`; a
  reply that runs into the end of the window, or past the server's `--n-predict` (`n_predict=`), stops with
  finish_reason "length".
- `LlamaCppPythonKind`: `python -m llama_cpp.server`. json_schema is refused with HTTP 500 and a pydantic
  validation body; json_object + schema works; a prompt over n_ctx is HTTP 400 `context_length_exceeded`;
  max_tokens is lowered silently to what the window leaves.
- `PlainKind`: a server with no structured output: response_format and tools are ignored and the model answers
  in prose around a fenced JSON block.

Prompt tokens are counted as characters / `chars_per_token` plus a little framing per message, so a kind can
count more finely than the client's offline tokenizer does, as a real model's tokenizer often does.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from typing import Any

from tests.llm_server import ParsedRequest, Reply

MODEL_PATH = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class ServerKind:
    """Shared behaviour: count the prompt, report usage, cut a reply that runs out of room."""

    n_ctx: int = 8192
    chars_per_token: float = 3.0
    n_predict: int | None = None  # the server's own limit on a reply (llama-server --n-predict), below max_tokens

    name = "server"

    def prompt_tokens(self, request: ParsedRequest) -> int:
        return math.ceil(len(request.text) / self.chars_per_token) + 8 * (len(request.messages) + 1)

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any] | None:
        return None

    def before(self, request: ParsedRequest) -> Reply | None:
        return None

    def after(self, request: ParsedRequest, reply: Reply) -> Reply:
        if reply.status != 200 or reply.drop or reply.raw is not None:
            return reply
        prompt = self.prompt_tokens(request)
        return replace(reply, input_tokens=reply.input_tokens if reply.input_tokens is not None else prompt)

    @staticmethod
    def format_type(request: ParsedRequest) -> str | None:
        return (request.body.get("response_format") or {}).get("type")

    def cut_to_window(self, request: ParsedRequest, reply: Reply, prompt: int) -> Reply:
        """The reply, stopped where the context window (prompt + reply) is full, or at the server's own limit on a
        reply (`n_predict`), whichever comes first: finish_reason "length" either way."""
        room = self.n_ctx - prompt
        text = reply.text if reply.text is not None else json.dumps(reply.structured)
        wanted = math.ceil(len(text) / self.chars_per_token)
        limit = min(room, request.max_tokens or room, self.n_predict or room)
        if wanted <= limit:
            return replace(reply, input_tokens=prompt, output_tokens=wanted)
        cut = text[: max(1, int(limit * self.chars_per_token))]
        return Reply.message(cut, truncated=True, input_tokens=prompt, output_tokens=limit)


class OpenAIKind(ServerKind):
    name = "openai"

    def __init__(self, n_ctx: int = 128_000, chars_per_token: float = 4.0):
        super().__init__(n_ctx, chars_per_token)

    def before(self, request: ParsedRequest) -> Reply | None:
        prompt = self.prompt_tokens(request)
        wanted = request.max_tokens or 0
        if prompt + wanted > self.n_ctx:
            return Reply.error_body(400, {"error": {
                "message": f"This model's maximum context length is {self.n_ctx} tokens. However, you requested "
                           f"{prompt + wanted} tokens ({prompt} in the messages, {wanted} in the completion). "
                           "Please reduce the length of the messages or completion.",
                "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
        fmt = request.body.get("response_format") or {}
        if fmt.get("type") == "json_schema" and fmt.get("json_schema", {}).get("strict"):
            problem = _strict_problem(fmt["json_schema"].get("schema") or {})
            if problem:
                return Reply.error_body(400, {"error": {
                    "message": f"Invalid schema for response_format '{fmt['json_schema'].get('name')}': {problem}",
                    "type": "invalid_request_error", "param": "response_format", "code": None}})
        if fmt.get("type") == "json_object" and "json" not in request.text.lower():
            return Reply.error_body(400, {"error": {
                "message": "'messages' must contain the word 'json' in some form, to use 'response_format' of type "
                           "'json_object'.", "type": "invalid_request_error", "param": "messages", "code": None}})
        return None


def _strict_problem(schema: dict[str, Any]) -> str:
    """What OpenAI's strict mode refuses: a property not in `required`, or additionalProperties not false."""
    for node in [schema, *(schema.get("$defs") or {}).values()]:
        if node.get("type") != "object":
            continue
        missing = sorted(set(node.get("properties", {})) - set(node.get("required", [])))
        if missing:
            return (f"In context=(), 'required' is required to be supplied and to be an array including every key "
                    f"in properties. Missing '{missing[0]}'.")
        if node.get("additionalProperties") is not False:
            return "In context=(), 'additionalProperties' is required to be supplied and to be false."
    return ""


class VLLMKind(ServerKind):
    name = "vllm"

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any] | None:
        if method == "GET" and path.endswith("/v1/models"):
            return 200, {"object": "list", "data": [{
                "id": "Qwen/Qwen2.5-7B-Instruct", "object": "model", "created": int(time.time()), "owned_by": "vllm",
                "root": "Qwen/Qwen2.5-7B-Instruct", "parent": None, "max_model_len": self.n_ctx,
                "permission": [{"id": "modelperm-1", "object": "model_permission", "allow_sampling": True}]}]}
        return None

    def before(self, request: ParsedRequest) -> Reply | None:
        prompt = self.prompt_tokens(request)
        wanted = request.max_tokens or 0
        if prompt > self.n_ctx:
            message = (f"This model's maximum context length is {self.n_ctx} tokens. However, your request has "
                       f"{prompt} input tokens. Please reduce the length of the input messages. None")
        elif prompt + wanted > self.n_ctx:
            message = (f"'max_tokens' or 'max_completion_tokens' is too large: {wanted}. This model's maximum context "
                       f"length is {self.n_ctx} tokens and your request has {prompt} input tokens ({wanted} > "
                       f"{self.n_ctx} - {prompt}). None")
        else:
            return None
        return Reply.error_body(400, {"error": {"message": message, "type": "BadRequestError", "param": None,
                                                "code": 400}})


class OllamaKind(ServerKind):
    name = "ollama"

    def __init__(self, num_ctx: int = 4096, chars_per_token: float = 3.0, declared: bool = True):
        super().__init__(num_ctx, chars_per_token)
        self.declared = declared  # num_ctx written among the model's parameters

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any] | None:
        if method == "GET" and path.endswith("/api/version"):
            return 200, {"version": "0.12.6"}
        if method == "POST" and path.endswith("/api/show"):
            parameters = (f"num_ctx                        {self.n_ctx}\n" if self.declared else "") + \
                'stop                           "<|im_end|>"'
            return 200, {"modelfile": "# Modelfile generated by \"ollama show\"", "parameters": parameters,
                         "template": "{{ .Prompt }}", "details": {"format": "gguf", "family": "llama",
                                                                 "parameter_size": "134.52M"},
                         "model_info": {"general.architecture": "llama", "llama.context_length": 8192},
                         "capabilities": ["completion"]}
        return None

    def after(self, request: ParsedRequest, reply: Reply) -> Reply:
        if reply.status != 200 or reply.drop or reply.raw is not None:
            return reply
        prompt = self.prompt_tokens(request)
        read = min(prompt, self.n_ctx - 1)  # the start of an over-long prompt is dropped without a word
        if self.format_type(request) == "json_object" and "properties" not in request.text:
            return Reply.json({"result": "ok"}, input_tokens=read)  # JSON mode alone: JSON, but not the schema
        return replace(reply, input_tokens=read)


class LlamaServerKind(ServerKind):
    name = "llama-server"

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any] | None:
        if method == "GET" and path.endswith("/props"):
            return 200, {"default_generation_settings": {"n_ctx": self.n_ctx, "params": {"n_predict": -1,
                                                                                          "temperature": 0.8}},
                         "total_slots": 1, "model_alias": "", "model_path": MODEL_PATH,
                         "modalities": {"vision": False, "audio": False}, "chat_template": "{{ messages }}",
                         "build_info": "b6000-0000000"}
        if method == "GET" and path.endswith("/v1/models"):
            return 200, {"object": "list", "data": [{
                "id": MODEL_PATH, "object": "model", "created": int(time.time()), "owned_by": "llamacpp",
                "meta": {"vocab_type": 2, "n_vocab": 49152, "n_ctx_train": 8192, "n_embd": 576,
                         "n_params": 134515008, "size": 93_000_000}}]}
        return None

    def before(self, request: ParsedRequest) -> Reply | None:
        prompt = self.prompt_tokens(request)
        if prompt >= self.n_ctx:
            return Reply.error_body(400, {"error": {
                "code": 400, "message": f"request ({prompt} tokens) exceeds the available context size "
                                        f"({self.n_ctx} tokens), try increasing it",
                "type": "exceed_context_size_error", "n_prompt_tokens": prompt, "n_ctx": self.n_ctx}})
        return None

    def after(self, request: ParsedRequest, reply: Reply) -> Reply:
        if reply.status != 200 or reply.drop or reply.raw is not None:
            return reply
        return self.cut_to_window(request, reply, self.prompt_tokens(request))


class LlamaCppPythonKind(ServerKind):
    name = "llama-cpp-python"

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any] | None:
        if method == "GET" and path.endswith("/v1/models"):
            return 200, {"object": "list", "data": [{"id": MODEL_PATH, "object": "model", "owned_by": "me",
                                                     "permissions": []}]}
        if method == "GET":
            return 404, {"detail": "Not Found"}
        return None

    def before(self, request: ParsedRequest) -> Reply | None:
        if self.format_type(request) == "json_schema":  # captured from llama-cpp-python 0.3.36
            return Reply.error_body(500, {"error": {
                "message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', "
                           "'type'), 'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema', "
                           "'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n  File \"/venv/lib/python3.11/"
                           "site-packages/llama_cpp/server/app.py\", line 376, in create_chat_completion\n    POST "
                           "/v1/chat/completions", "type": "internal_server_error", "param": None, "code": None}})
        prompt = self.prompt_tokens(request)
        if prompt >= self.n_ctx:
            wanted = request.max_tokens or 0
            return Reply.error_body(400, {"error": {
                "message": f"This model's maximum context length is {self.n_ctx} tokens. However, you requested "
                           f"{prompt + wanted} tokens ({prompt} in the messages, {wanted} in the completion). Please "
                           "reduce the length of the messages or completion.",
                "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
        return None

    def after(self, request: ParsedRequest, reply: Reply) -> Reply:
        if reply.status != 200 or reply.drop or reply.raw is not None:
            return reply
        return self.cut_to_window(request, reply, self.prompt_tokens(request))


class PlainKind(ServerKind):
    name = "plain"

    def after(self, request: ParsedRequest, reply: Reply) -> Reply:
        if reply.status != 200 or reply.drop or reply.raw is not None or reply.structured is None:
            return reply
        chatty = f"Sure! Here is my answer:\n```json\n{json.dumps(reply.structured, indent=1)}\n```\nHope it helps."
        return Reply.message(chatty, input_tokens=self.prompt_tokens(request))


KINDS = {kind.name: kind for kind in (OpenAIKind, VLLMKind, OllamaKind, LlamaServerKind, LlamaCppPythonKind,
                                      PlainKind)}
