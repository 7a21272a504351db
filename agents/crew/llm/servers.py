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
calibrated against the prompt_tokens it reports on its replies. A reply cut short is read with care: a server
may stop replies at its own limit (llama-server's --n-predict, Ollama's num_predict) far below its window.
"""

from __future__ import annotations

import json
import re
import statistics
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

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
RATIO_WINDOW = 15  # the token ratio is the median of this many recent prompts
CUT_TOLERANCE = 8  # tokens: cut replies that end this close together end at the same place


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
    """One (endpoint, model): the structured-output form that works, its context window, its token ratio.

    The window is only ever what the server states (its report, the numbers of an overflow error, a prompt it
    visibly cut short) or what two replies cut off at the same total prove; one cut reply proves nothing (a
    server may stop replies at its own limit, far below its window). The token ratio is learned from the
    prompt_tokens of the server's replies, as the median of recent ones (one outlier does not set it for the run).
    """

    key: str
    token_ratio: float
    mode: str | None = None  # confirmed by a successful structured reply
    refused: dict[str, str] = field(default_factory=dict)  # form -> why it was given up
    context_tokens: int | None = None  # as the server reported it
    context_source: str = ""
    probed: bool = False
    calibrated: bool = False
    accepted_total: int = 0  # the most tokens (prompt + reply) the server has processed in one request
    reply_cap: int | None = None  # the server stops replies here, whatever max_tokens says
    cap_announced: bool = False
    cuts: list[tuple[int, int]] = field(default_factory=list)  # (prompt, reply) of replies stopped short
    ratios: list[float] = field(default_factory=list)  # server / local tokens of recent prompts
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def learn_ratio(self, local_tokens: int, server_tokens: int) -> None:
        """Calibrate local counts against the server's prompt_tokens, from prompts big enough to dwarf the framing:
        the median of the recent observations, so no single count (an outlier, a slip) sets it for the run."""
        if local_tokens < 200 or server_tokens <= 0:
            return
        with self.lock:
            self.ratios = [*self.ratios[-(RATIO_WINDOW - 1):], server_tokens / local_tokens]
            self.token_ratio = min(3.0, max(0.5, statistics.median(self.ratios)))
            self.calibrated = True

    def learn_context(self, tokens: int | None, source: str) -> None:
        """The window as the server stated it; never below what it has already processed in one request."""
        if tokens and tokens > 0:
            with self.lock:
                self.context_tokens, self.context_source = max(tokens, self.accepted_total), source

    def accept(self, total: int) -> int:
        """Note a request of `total` tokens (prompt + reply) the server processed; returns the previous most."""
        with self.lock:
            before = self.accepted_total
            self.accepted_total = max(before, total)
            return before

    def read_cut(self, prompt: int, reply: int, accepted_before: int) -> Literal["window", "cap", "unknown"]:
        """What stopped a reply short of its max_tokens: the window filling up, or the server's own reply limit.

        Two cut replies tell them apart: at the window, replies to prompts of different length end at the same
        total; at a reply limit, they have the same length. A cut below a total the server has already
        processed is a reply limit at once.
        """
        total = prompt + reply
        with self.lock:
            if self.reply_cap is not None and abs(reply - self.reply_cap) <= CUT_TOLERANCE:
                return "cap"
            if self.context_tokens is not None and total >= self.context_tokens - CUT_TOLERANCE:
                return "window"
            if total < accepted_before - CUT_TOLERANCE or (
                    self.context_tokens is not None and total < self.context_tokens - CUT_TOLERANCE):
                verdict: Literal["window", "cap", "unknown"] = "cap"
            else:
                verdict = "unknown"
                for earlier_prompt, earlier_reply in self.cuts:
                    if abs(earlier_prompt - prompt) < 2 * CUT_TOLERANCE:
                        continue  # the same prompt again: no new evidence
                    if abs(earlier_prompt + earlier_reply - total) <= CUT_TOLERANCE:
                        verdict = "window"
                    elif abs(earlier_reply - reply) <= CUT_TOLERANCE:
                        verdict = "cap"
            self.cuts = [*self.cuts[-7:], (prompt, reply)]
            if verdict == "cap":
                self.reply_cap = reply
        if verdict == "window" and (self.context_tokens is None or total < self.context_tokens):
            self.learn_context(total, "replies cut off at the same total length (the context filled)")
        return verdict


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


Fetch = Callable[[str, str, Any], Any]  # (method, url, JSON body or None) -> the JSON answer, or None


def probe_context(base_url: str, model: str, fetch: Fetch) -> tuple[int, str] | None:
    """The context window an OpenAI-compatible server reports, and where it said so; None if it says nothing.

    Tried in turn: llama-server's `/props` (per-slot n_ctx), vLLM's `/v1/models` (max_model_len), Ollama's
    `/api/show` (num_ctx among the model's parameters, else Ollama's default). `fetch` makes each request through
    the adapter's SDK client (short timeout, the SDK's retries and `retry-after`) and answers None for an error
    status. A server that answers none of them keeps the configured or default window.
    """
    base = base_url.rstrip("/")
    root = base[: -len("/v1")] if base.endswith("/v1") else base
    return (_from_props(fetch("GET", f"{root}/props", None)) or _from_models(fetch("GET", f"{base}/models", None), model)
            or _from_ollama(fetch("POST", f"{root}/api/show", {"model": model})))


def _from_props(data: Any) -> tuple[int, str] | None:
    settings = data.get("default_generation_settings") if isinstance(data, dict) else None
    n_ctx = _int(settings.get("n_ctx")) if isinstance(settings, dict) else None
    return (n_ctx, "the server's /props (n_ctx)") if n_ctx else None


def _from_models(data: Any, model: str) -> tuple[int, str] | None:
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return None
    chosen = [e for e in entries if isinstance(e, dict) and e.get("id") == model] or (
        entries if len(entries) == 1 and isinstance(entries[0], dict) else [])
    for entry in chosen:
        if limit := _int(entry.get("max_model_len")):
            return limit, "the server's /v1/models (max_model_len)"
    return None


def _from_ollama(data: Any) -> tuple[int, str] | None:
    if not isinstance(data, dict) or "model_info" not in data:
        return None
    if m := re.search(r"^\s*num_ctx\s+(\d+)", str(data.get("parameters") or ""), re.M):
        return int(m.group(1)), "Ollama's /api/show (num_ctx)"
    return OLLAMA_DEFAULT_NUM_CTX, f"Ollama's default num_ctx ({OLLAMA_DEFAULT_NUM_CTX}; the model sets none)"
