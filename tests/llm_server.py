"""A scripted LLM server on 127.0.0.1 that speaks the Anthropic Messages and OpenAI Chat Completions wire formats.

Tests point the real `anthropic` / `openai` SDKs at it, so retries, timeouts and response parsing are exercised
exactly as in production, with no network and no mocked SDK objects.

    def responder(request: ParsedRequest) -> Reply:
        return Reply.json({"verdict": "approve", "reasons": []})

    with ScriptedLLMServer(responder) as server:
        client = anthropic.Anthropic(api_key="test", base_url=server.base_url_anthropic)
        ...
        assert server.requests[0].schema_name == "Review"

`Reply` covers what a real provider does to a client: structured JSON (rendered as a forced `tool_use` block for
Anthropic when tools were requested, else as message text), plain text, truncation (`stop_reason: max_tokens` /
`finish_reason: length`), usage counts (`usage.prompt_tokens` / `input_tokens`), HTTP errors with `retry-after` or
a real server's exact body, slow replies, garbage bytes and dropped connections. `ReplyQueue` plays a fixed list
of replies in order (then a default reply or responder), so "a 429 on the first request only" is one line. Every
request records when it arrived (`received_at`); requests to other endpoints (context probes) are listed in
`other_requests`, and a behaviour may answer them with headers too.

The server is bounded: it refuses more than `max_requests` requests and shuts itself down after `lifetime_s`,
so a test that forgets to stop it, or a client that keeps retrying, cannot hang the suite. Only the standard
library is used.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Protocol = Literal["anthropic", "openai"]

ANTHROPIC_PREFIX = "/anthropic"
OPENAI_PREFIX = "/openai"

# Error bodies in each provider's shape, keyed by HTTP status (used for `type` fields only).
_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    429: "rate_limit_exceeded",
    500: "server_error",
}


def approx_tokens(text: str) -> int:
    """Token count the server reports for `text`: about four characters per token, like real tokenizers on English."""
    return max(1, math.ceil(len(text) / 4))


@dataclass(frozen=True)
class ParsedRequest:
    """One request the server received, reduced to what a test wants to look at."""

    protocol: Protocol
    path: str
    headers: dict[str, str]  # lower-cased names
    body: dict[str, Any]  # the JSON body exactly as sent
    model: str
    system: str  # system prompt text ("" if none)
    messages: list[tuple[str, str]]  # (role, text) for every non-system message, tool results included as text
    schema: dict[str, Any] | None  # JSON schema of the forced tool (Anthropic) or json_schema response_format (OpenAI)
    schema_name: str | None
    max_tokens: int | None
    received_at: float = 0.0  # time.monotonic() when it arrived, for tests of waiting (retry-after)

    @property
    def text(self) -> str:
        """System prompt and all message text, joined: what the usage counts are computed from."""
        return "\n".join([self.system, *(text for _, text in self.messages)])

    @property
    def last_user_text(self) -> str:
        """Text of the last user message ("" if none); retry feedback from a client lands here."""
        for role, text in reversed(self.messages):
            if role == "user":
                return text
        return ""

    @property
    def wants_tool(self) -> bool:
        """True when an Anthropic request offered tools (so structured replies become `tool_use` blocks)."""
        return bool(self.body.get("tools"))


@dataclass(frozen=True)
class Reply:
    """What the server does with one request. Build one with the class methods; `after()` adds a delay."""

    structured: Any = None  # JSON-able value: tool_use input (Anthropic with tools) or message JSON text
    text: str | None = None  # plain assistant text
    status: int = 200
    error_message: str = ""
    retry_after: float | None = None  # seconds, sent as `retry-after` and `retry-after-ms`
    should_retry: bool | None = None  # sent as `x-should-retry`, which both SDKs obey over their status rules
    delay: float = 0.0  # seconds to wait before answering
    raw: bytes | None = None  # send these bytes as a 200 body, whatever they are
    drop: bool = False  # close the connection without answering
    truncated: bool = False  # report stop_reason max_tokens / finish_reason length
    input_tokens: int | None = None  # usage overrides; default: counted from the text
    output_tokens: int | None = None
    body: Any = None  # an error's exact JSON body (a real server's shape), instead of the provider's usual one

    @classmethod
    def json(cls, value: Any, **options: Any) -> Reply:
        """Structured output: a tool_use block when the Anthropic request offered tools, else JSON text."""
        return cls(structured=value, **options)

    @classmethod
    def message(cls, text: str, **options: Any) -> Reply:
        """A plain text answer."""
        return cls(text=text, **options)

    @classmethod
    def error(
        cls, status: int, message: str = "", *, retry_after: float | None = None, should_retry: bool | None = None
    ) -> Reply:
        """An HTTP error in the provider's error shape (429, 500, 529, 400 ...)."""
        message = message or f"scripted error {status}"
        return cls(status=status, error_message=message, retry_after=retry_after, should_retry=should_retry)

    @classmethod
    def error_body(cls, status: int, body: Any) -> Reply:
        """An HTTP error with exactly this JSON body (as a given real server words it)."""
        return cls(status=status, body=body, should_retry=None)

    @classmethod
    def garbage(cls, data: bytes = b"\x00\xffnot json at all{{") -> Reply:
        """A 200 response whose body is not JSON."""
        return cls(raw=data)

    @classmethod
    def dropped(cls) -> Reply:
        """Close the connection without sending a response."""
        return cls(drop=True)

    @classmethod
    def slow(cls, delay: float, then: Reply | None = None) -> Reply:
        """Wait `delay` seconds, then answer with `then` (a short text by default)."""
        return replace(then or cls.message("late"), delay=delay)

    def after(self, delay: float) -> Reply:
        """The same reply, sent after `delay` seconds."""
        return replace(self, delay=delay)


Responder = Callable[[ParsedRequest], Reply]


class ReplyQueue:
    """A responder that plays `replies` in order; when they run out it answers `default` (a reply, or a responder
    asked with the request), or a clear 400."""

    def __init__(self, replies: Iterable[Reply], default: Reply | Responder | None = None) -> None:
        self._replies = list(replies)
        self._default = default
        self._lock = threading.Lock()

    def __call__(self, request: ParsedRequest) -> Reply:
        with self._lock:
            if self._replies:
                return self._replies.pop(0)
        if callable(self._default):
            return self._default(request)
        if self._default is not None:
            return self._default
        return Reply.error(400, "scripted server: no reply left in the queue")

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._replies)


class ScriptedLLMServer:
    """Serve scripted replies to Anthropic and OpenAI SDK clients on an ephemeral 127.0.0.1 port.

    Use as a context manager. `requests` lists every parsed request in arrival order; `errors` collects
    exceptions raised by the responder (each also answered with a non-retryable 500, so the client fails fast).
    """

    def __init__(
        self,
        responder: Responder | Iterable[Reply],
        *,
        lifetime_s: float = 120.0,
        max_requests: int = 500,
        behaviour: Any = None,
    ) -> None:
        self.responder: Responder = responder if callable(responder) else ReplyQueue(responder)
        # a kind of real server (tests/model_servers.py): its other endpoints, its refusals, its limits
        self.behaviour = behaviour
        self.lifetime_s = lifetime_s
        self.max_requests = max_requests
        self.requests: list[ParsedRequest] = []
        self.other_requests: list[tuple[str, str, float]] = []  # (method, path, monotonic time) of other endpoints
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> ScriptedLLMServer:
        handler = type("_BoundHandler", (_Handler,), {"server_state": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False  # slow handlers are woken by _stopping instead of joined
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._timer is not None:
            self._timer.cancel()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def __enter__(self) -> ScriptedLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("ScriptedLLMServer is not running")
        return self._httpd.server_address[1]

    @property
    def base_url_anthropic(self) -> str:
        """For `anthropic.Anthropic(base_url=...)` (the SDK appends /v1/messages)."""
        return f"http://127.0.0.1:{self.port}{ANTHROPIC_PREFIX}"

    @property
    def base_url_openai(self) -> str:
        """For `openai.OpenAI(base_url=...)` (the SDK appends /chat/completions)."""
        return f"http://127.0.0.1:{self.port}{OPENAI_PREFIX}/v1"

    # -- bookkeeping used by the handler ---------------------------------------------------------------

    def _admit(self, request: ParsedRequest) -> bool:
        with self._lock:
            if len(self.requests) >= self.max_requests:
                return False
            self.requests.append(request)
            return True

    def _reply_for(self, request: ParsedRequest) -> Reply:
        try:
            if self.behaviour is not None:
                refused = self.behaviour.before(request)
                if refused is not None:
                    return refused
                return self.behaviour.after(request, self.responder(request))
            return self.responder(request)
        except Exception as exc:  # surfaced to the test through .errors
            with self._lock:
                self.errors.append(exc)
            # not retryable: a broken responder should fail the test at once
            return Reply.error(500, f"scripted server: responder raised {exc!r}", should_retry=False)

    def _next_id(self) -> int:
        return next(self._ids)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect
    server_state: ScriptedLLMServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read .requests instead
        pass

    def do_GET(self) -> None:
        self._other_endpoint("GET", None)

    def _other_endpoint(self, method: str, body: Any) -> None:
        """An endpoint other than chat (a model list, a server's properties), answered by the behaviour."""
        state = self.server_state
        path = self.path.split("?", 1)[0]
        with state._lock:
            state.other_requests.append((method, path, time.monotonic()))
        answer = state.behaviour.route(method, path, body) if state.behaviour is not None else None
        if answer is None:
            self._send_json(404, {"error": {"message": f"scripted server: unknown path {self.path}"}})
            return
        status, payload, *rest = answer  # an optional third item: response headers (retry-after, ...)
        headers = rest[0] if rest else None
        if isinstance(payload, bytes | str):
            self._send_bytes(status, payload.encode() if isinstance(payload, str) else payload, "text/plain", headers)
        else:
            self._send_json(status, payload, headers)

    def do_POST(self) -> None:
        state = self.server_state
        protocol = _protocol_for(self.path)
        length = int(self.headers.get("content-length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        if protocol is None:
            try:
                other = json.loads(raw_body or b"{}")
            except json.JSONDecodeError:
                other = None
            self._other_endpoint("POST", other)
            return
        try:
            body = json.loads(raw_body or b"{}")
        except json.JSONDecodeError:
            self._send_error(protocol, Reply.error(400, "scripted server: request body is not JSON"))
            return
        request = _parse_request(protocol, self.path, dict(self.headers.items()), body)
        if not state._admit(request):
            self._send_error(protocol, Reply.error(400, "scripted server: request limit reached"))
            return
        reply = state._reply_for(request)
        if reply.delay and state._stopping.wait(reply.delay):
            self._drop()
            return
        if reply.drop:
            self._drop()
        elif reply.raw is not None:
            self._send_bytes(200, reply.raw, "application/json")
        elif reply.status != 200:
            self._send_error(protocol, reply)
        elif protocol == "anthropic":
            self._send_json(200, _anthropic_body(request, reply, state._next_id()))
        else:
            self._send_json(200, _openai_body(request, reply, state._next_id()))

    # -- writing -------------------------------------------------------------------------------------

    def _send_error(self, protocol: Protocol, reply: Reply) -> None:
        headers: dict[str, str] = {}
        if reply.retry_after is not None:
            headers["retry-after"] = f"{reply.retry_after:g}"
            headers["retry-after-ms"] = str(max(1, round(reply.retry_after * 1000)))
        if reply.should_retry is not None:
            headers["x-should-retry"] = "true" if reply.should_retry else "false"
        if reply.body is not None:
            body = reply.body
        elif protocol == "anthropic":
            kind = _ANTHROPIC_ERROR_TYPES.get(reply.status, "api_error")
            body: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": reply.error_message}}
        else:
            kind = _OPENAI_ERROR_TYPES.get(reply.status, "server_error")
            body = {"error": {"message": reply.error_message, "type": kind, "param": None, "code": kind}}
        self._send_json(reply.status, body, headers)

    def _send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(body).encode(), "application/json", headers)

    def _send_bytes(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", f"req_scripted_{self.server_state._next_id()}")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): nothing to do
            self.close_connection = True

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _protocol_for(path: str) -> Protocol | None:
    path = path.split("?", 1)[0]
    if path.endswith("/v1/messages"):
        return "anthropic"
    if path.endswith("/chat/completions"):
        return "openai"
    return None


# -- request parsing -------------------------------------------------------------------------------------


_SCHEMA_TITLE = re.compile(r'"title":\s*"([A-Z]\w*)",\s*"type":\s*"object"')


def _block_text(content: Any) -> str:
    """Flatten a message's content (a string or a list of blocks of either protocol) into text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            parts.append(_block_text(block.get("content")))
        elif block.get("type") == "tool_use":
            parts.append(json.dumps(block.get("input")))
    return "\n".join(parts)


def _parse_request(protocol: Protocol, path: str, headers: dict[str, str], body: dict[str, Any]) -> ParsedRequest:
    headers = {name.lower(): value for name, value in headers.items()}
    schema = schema_name = None
    if protocol == "anthropic":
        system = _block_text(body.get("system"))
        messages = [(m.get("role", ""), _block_text(m.get("content"))) for m in body.get("messages", [])]
        tools = body.get("tools") or []
        chosen = (body.get("tool_choice") or {}).get("name")
        tool = next((t for t in tools if t.get("name") == chosen), tools[0] if tools else None)
        if tool is not None:
            schema, schema_name = tool.get("input_schema"), tool.get("name")
        max_tokens = body.get("max_tokens")
    else:
        all_messages = body.get("messages", [])
        system = "\n".join(
            _block_text(m.get("content")) for m in all_messages if m.get("role") in ("system", "developer")
        )
        messages = [
            (m.get("role", ""), _block_text(m.get("content")))
            for m in all_messages
            if m.get("role") not in ("system", "developer")
        ]
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            schema = response_format.get("json_schema", {}).get("schema")
            schema_name = response_format.get("json_schema", {}).get("name")
        elif response_format.get("type") == "json_object" and isinstance(response_format.get("schema"), dict):
            schema = response_format["schema"]
            schema_name = schema.get("title")
        elif body.get("tools"):
            function = body["tools"][0].get("function", {})
            schema, schema_name = function.get("parameters"), function.get("name")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if schema_name is None:  # asked in the prompt only: the last top-level schema title written there
        titles = _SCHEMA_TITLE.findall("\n".join([system, *(text for _, text in messages)]))
        schema_name = titles[-1] if titles else None
    return ParsedRequest(
        received_at=time.monotonic(),
        protocol=protocol,
        path=path,
        headers=headers,
        body=body,
        model=str(body.get("model", "")),
        system=system,
        messages=messages,
        schema=schema,
        schema_name=schema_name,
        max_tokens=max_tokens,
    )


# -- response rendering ----------------------------------------------------------------------------------


def _usage_counts(request: ParsedRequest, reply: Reply, output_text: str) -> tuple[int, int]:
    input_tokens = reply.input_tokens if reply.input_tokens is not None else approx_tokens(request.text)
    output_tokens = reply.output_tokens if reply.output_tokens is not None else approx_tokens(output_text)
    return input_tokens, output_tokens


def _reply_text(reply: Reply) -> str:
    if reply.text is not None:
        return reply.text
    return json.dumps(reply.structured)


def _anthropic_body(request: ParsedRequest, reply: Reply, serial: int) -> dict[str, Any]:
    if reply.structured is not None and request.wants_tool and reply.text is None:
        block: dict[str, Any] = {
            "type": "tool_use",
            "id": f"toolu_scripted_{serial}",
            "name": request.schema_name,
            "input": reply.structured,
        }
        output_text = json.dumps(reply.structured)
        stop_reason = "tool_use"
    else:
        output_text = _reply_text(reply)
        block = {"type": "text", "text": output_text}
        stop_reason = "end_turn"
    if reply.truncated:
        stop_reason = "max_tokens"
    input_tokens, output_tokens = _usage_counts(request, reply, output_text)
    return {
        "id": f"msg_scripted_{serial}",
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": [block],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def _openai_body(request: ParsedRequest, reply: Reply, serial: int) -> dict[str, Any]:
    output_text = _reply_text(reply)
    input_tokens, output_tokens = _usage_counts(request, reply, output_text)
    message: dict[str, Any] = {"role": "assistant", "content": output_text, "refusal": None}
    finish = "length" if reply.truncated else "stop"
    if request.body.get("tools") and reply.text is None and reply.structured is not None:
        name = request.body["tools"][0].get("function", {}).get("name")
        message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
            {"id": f"call_scripted_{serial}", "type": "function",
             "function": {"name": name, "arguments": output_text}}]}
        finish = "length" if reply.truncated else "tool_calls"
    return {
        "id": f"chatcmpl-scripted-{serial}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    }


__all__ = ["ParsedRequest", "Reply", "ReplyQueue", "ScriptedLLMServer", "approx_tokens"]
