"""What a model server accepts and how big its context is, learned once per run and shared by every role.

Structured output comes in several forms and servers differ in which they take (`STRUCTURED_MODES`):
forced tool use (Anthropic; OpenAI function calling), `response_format: json_schema` (OpenAI, vLLM, Ollama,
llama.cpp's llama-server), `json_object` with an optional `schema` key (llama-cpp-python; Ollama ignores the
key), or the schema written into the prompt and the JSON read from the text (any server). With `structured:
auto` an OpenAI-compatible server is tried from the strongest form down; a refusal is recognised by the error
BODY (a status alone is ambiguous: llama-cpp-python refuses json_schema with HTTP 500, llama-server reports a
context overflow with HTTP 400), remembered for the rest of the run, and announced.

A server's context window comes from what it reports (llama-server's /props, vLLM's max_model_len in
/v1/models, Ollama's num_ctx from /api/show, or the numbers in an overflow error), and the local token count is
calibrated against the prompt_tokens it reports.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

STRUCTURED_MODES = ("auto", "tool", "json_schema", "json_object", "prompt")
# `auto`, strongest first, by kind of endpoint
LADDERS = {
    "anthropic": ("tool",),
    "anthropic-compatible": ("tool", "prompt"),
    "openai": ("json_schema", "json_object", "prompt"),
    "openai-compatible": ("json_schema", "json_object", "prompt"),
}
ALLOWED_MODES = {"anthropic": ("tool", "prompt"), "openai": ("tool", "json_schema", "json_object", "prompt")}

# Context windows when nothing better is known (crew.yaml `context_tokens` overrides; servers' reports win).
DEFAULT_CONTEXT = {"anthropic": 200_000, "openai": 128_000, "compatible": 8_192}
OLLAMA_DEFAULT_NUM_CTX = 4_096  # what Ollama runs a model with unless num_ctx / OLLAMA_CONTEXT_LENGTH says otherwise
# Local token counts are multiplied by this until the server has reported real counts (other tokenizers often
# split more finely than cl100k; chat templates add framing). Modest on purpose: a server that refuses an
# over-long prompt says by how much, and the prompt is shortened and sent again.
PRIOR_TOKEN_RATIO = {"anthropic": 1.15, "openai": 1.05, "compatible": 1.15}
PROBE_TIMEOUT_S = 5.0


@dataclass
class Refusal:
    """A server's error response, read: a context overflow, a refused structured-output form, or anything else."""

    kind: Literal["context", "format", "other"]
    detail: str
    limit: int | None = None  # the context window the server stated
    prompt_tokens: int | None = None  # the prompt as the server counted it


_CONTEXT_MARKERS = re.compile(
    r"exceed_context_size_error|context_length_exceeded|maximum context length|context (?:size|window|length)"
    r"[^.]{0,40}(?:exceed|too|full|reduce)|exceeds? (?:the )?(?:available )?context|prompt is too long"
    r"|input (?:is )?too long|too many (?:input )?tokens",
    re.IGNORECASE)
_LIMIT_PATTERNS = (
    re.compile(r"maximum context length is (\d+)", re.I),
    re.compile(r"available context size \((\d+) tokens?\)", re.I),
    re.compile(r"context (?:window|size|length) of (\d+)", re.I),
    re.compile(r"tokens? > (\d+) maximum", re.I),
)
_PROMPT_PATTERNS = (
    re.compile(r"request \((\d+) tokens?\)", re.I),
    re.compile(r"\((\d+) in the messages", re.I),
    re.compile(r"your request has (\d+) input tokens", re.I),
    re.compile(r"messages resulted in (\d+) tokens", re.I),
    re.compile(r"prompt is too long: (\d+) tokens", re.I),
    re.compile(r"requested tokens \((\d+)\)", re.I),
)
_FORMAT_MARKERS = {
    "json_schema": re.compile(r"response_format|json_schema|json schema|\bschema\b|grammar|guided|structured output",
                              re.I),
    "json_object": re.compile(r"response_format|json_object|json mode|\bschema\b|grammar", re.I),
    "tool": re.compile(r"\btools?\b|tool_choice|function[_ ]call", re.I),
}
_UNSUPPORTED_WORDS = re.compile(
    r"not support|unsupported|unrecogni[sz]ed|unknown|invalid|not allowed|not implemented|must be|should be"
    r"|expected|extra (?:fields|inputs) not permitted|literal_error|cannot|can't|does not|is not", re.I)


def body_text(body: object, message: str = "") -> str:
    """The error body flattened to one string (dicts as JSON), with the SDK's message."""
    text = body if isinstance(body, str) else json.dumps(body, default=str) if body is not None else ""
    return f"{message} {text}".strip()


def classify_error(status: int, body: object, message: str = "", *, mode: str | None = None) -> Refusal:
    """Read an error response. `mode`: the structured-output form the request used (None for plain text)."""
    text = body_text(body, message)
    fields = _fields(body)
    if fields.get("type") == "exceed_context_size_error" or fields.get("code") == "context_length_exceeded" or (
            _CONTEXT_MARKERS.search(text) and status in (400, 413, 422, 500)):
        limit = _int(fields.get("n_ctx")) or _first_int(_LIMIT_PATTERNS, text)
        prompt = _int(fields.get("n_prompt_tokens")) or _first_int(_PROMPT_PATTERNS, text)
        return Refusal("context", _short(fields.get("message") or text), limit, prompt)
    marker = _FORMAT_MARKERS.get(mode or "")
    if marker and status in (400, 404, 415, 422, 500, 501) and marker.search(text) and (
            status in (404, 501) or _UNSUPPORTED_WORDS.search(text)):
        return Refusal("format", _short(fields.get("message") or text))
    return Refusal("other", _short(fields.get("message") or text))


def _fields(body: object) -> dict[str, Any]:
    """The inner error object of the common shapes: {"error": {...}}, {"type": "error", "error": {...}}, {...}."""
    if not isinstance(body, dict):
        return {}
    inner = body.get("error", body)
    return inner if isinstance(inner, dict) else {**body, "message": str(inner)}


def _first_int(patterns: tuple[re.Pattern, ...], text: str) -> int | None:
    for pattern in patterns:
        if m := pattern.search(text):
            return int(m.group(1))
    return None


def _int(value: object) -> int | None:
    try:
        return int(value) if value is not None else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _short(text: object, limit: int = 240) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# -- what is known about one server --------------------------------------------------------------------------


@dataclass
class ServerFacts:
    """One (endpoint, model): the structured-output form that works, its context window, its token ratio."""

    key: str
    token_ratio: float
    mode: str | None = None  # confirmed by a successful structured reply
    refused: dict[str, str] = field(default_factory=dict)  # form -> why it was given up
    context_tokens: int | None = None  # as the server reported it
    context_source: str = ""
    probed: bool = False
    calibrated: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def learn_ratio(self, local_tokens: int, server_tokens: int) -> None:
        """Calibrate local counts against the server's; from prompts big enough to dwarf the framing."""
        if local_tokens < 200 or server_tokens <= 0:
            return
        observed = min(3.0, max(0.5, server_tokens / local_tokens))
        with self.lock:
            self.token_ratio = observed if not self.calibrated else max(self.token_ratio, observed)
            self.calibrated = True

    def learn_context(self, tokens: int | None, source: str) -> None:
        if tokens and tokens > 0:
            with self.lock:
                if self.context_tokens is None or tokens < self.context_tokens or source != "estimate":
                    self.context_tokens, self.context_source = tokens, source


class ServerRegistry:
    """Facts per endpoint and model for one run, shared by every role's adapter (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._facts: dict[str, ServerFacts] = {}

    def facts(self, endpoint: str, model: str, ratio: float) -> ServerFacts:
        key = f"{endpoint}|{model}"
        with self._lock:
            if key not in self._facts:
                self._facts[key] = ServerFacts(key, token_ratio=ratio)
            return self._facts[key]


# -- asking a compatible server for its context window -------------------------------------------------------


def probe_context(base_url: str, model: str, headers: dict[str, str] | None = None) -> tuple[int, str] | None:
    """The context window an OpenAI-compatible server reports, and where it said so; None if it says nothing.

    Tried in turn, each a cheap request with a short timeout: llama-server's `/props` (per-slot n_ctx), vLLM's
    `/v1/models` (max_model_len), Ollama's `/api/show` (num_ctx among the model's parameters, else Ollama's
    default). A server that answers none of them keeps the configured or default window.
    """
    base = base_url.rstrip("/")
    root = base[: -len("/v1")] if base.endswith("/v1") else base
    try:
        with httpx.Client(timeout=PROBE_TIMEOUT_S, headers=headers or {}) as client:
            return (_from_props(client, root) or _from_models(client, base, model)
                    or _from_ollama(client, root, model))
    except httpx.HTTPError:
        return None


def _json(response: httpx.Response) -> Any:
    if response.status_code != 200:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _from_props(client: httpx.Client, root: str) -> tuple[int, str] | None:
    try:
        data = _json(client.get(f"{root}/props"))
    except httpx.HTTPError:
        return None
    n_ctx = _int(((data or {}).get("default_generation_settings") or {}).get("n_ctx")) if isinstance(data, dict) \
        else None
    return (n_ctx, "the server's /props (n_ctx)") if n_ctx else None


def _from_models(client: httpx.Client, base: str, model: str) -> tuple[int, str] | None:
    try:
        data = _json(client.get(f"{base}/models"))
    except httpx.HTTPError:
        return None
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return None
    chosen = [e for e in entries if isinstance(e, dict) and e.get("id") == model] or (
        entries if len(entries) == 1 and isinstance(entries[0], dict) else [])
    for entry in chosen:
        if limit := _int(entry.get("max_model_len")):
            return limit, "the server's /v1/models (max_model_len)"
    return None


def _from_ollama(client: httpx.Client, root: str, model: str) -> tuple[int, str] | None:
    try:
        data = _json(client.post(f"{root}/api/show", json={"model": model}))
    except httpx.HTTPError:
        return None
    if not isinstance(data, dict) or "model_info" not in data:
        return None
    if m := re.search(r"^\s*num_ctx\s+(\d+)", str(data.get("parameters") or ""), re.M):
        return int(m.group(1)), "Ollama's /api/show (num_ctx)"
    return OLLAMA_DEFAULT_NUM_CTX, f"Ollama's default num_ctx ({OLLAMA_DEFAULT_NUM_CTX}; the model sets none)"
