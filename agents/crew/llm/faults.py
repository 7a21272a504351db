"""Faults a run survived, counted per role and per experiment, and notices the user must see.

The SDKs retry 429s, 5xx, timeouts and dropped connections on their own; a transport under their HTTP client
records the outcome of every attempt so those retries leave a trace. The adapters add malformed replies and
context overflows. `FaultLog` keeps the counts (tagged with the experiment of the calling thread, like the usage
ledger) and hands every notice (a fallback the user did not ask for) to its listeners, which put it on screen.

The transport also lets the caller keep an answer from the SDK's retries: a server that refuses a structured-output
form with a 5xx (llama-cpp-python) or reports a context overflow as one would be asked the same thing again and
again. Inside `reading_refusals(predicate)` such a response is marked `x-should-retry: false` (both SDKs obey the
header over their status rules), so every other failure, on every request, is retried by the SDK with its own
backoff and the server's `retry-after`.

The same transport sends nothing once the user asked the run to stop (`agents.stop`): a retry after a 429 or a
malformed reply is a new request, and it must not go out after Ctrl-C.

The same transport strips trace-context headers (`traceparent`, `tracestate`, `baggage`): CrewAI stores its crew
ids in OpenTelemetry baggage, and an SDK that propagates the current context would send them to the provider.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from agents import stop

log = logging.getLogger(__name__)

# What is counted, in the order reports show it.
FAULT_KINDS = ("rate_limited", "server_error", "timeout", "connection", "malformed", "overflow", "retries")
FAULT_LABELS = {"rate_limited": "429", "server_error": "5xx", "timeout": "timeouts", "connection": "dropped",
                "malformed": "malformed", "overflow": "context overflows", "retries": "retries"}
TRACE_HEADERS = ("traceparent", "tracestate", "baggage")

_role: contextvars.ContextVar[str | None] = contextvars.ContextVar("acting_role", default=None)
_attempts: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("http_attempts", default=None)
_refusals: contextvars.ContextVar[Callable[[int, Any], bool] | None] = contextvars.ContextVar("refusals", default=None)
# Statuses the SDKs retry on their own (429 excepted: a rate limit is always waited out, never a refusal).
_RETRIED_STATUSES = (408, 409)


@contextmanager
def acting_as(role: str) -> Iterator[None]:
    """Attribute faults of calls made in this block (this thread) to `role`, whichever adapter makes them."""
    token = _role.set(role)
    try:
        yield
    finally:
        _role.reset(token)


@dataclass(frozen=True)
class Notice:
    """Something the run fell back to without being asked: shown in the live view and the log."""

    role: str
    experiment: str | None
    message: str


class FaultLog:
    """Counts per (experiment, role, kind); thread-safe. Listeners get every `Notice`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str | None, str], Counter] = {}
        self.notices: list[Notice] = []
        self.listeners: list[Callable[[Notice], None]] = []

    def count(self, kind: str, role: str, n: int = 1) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        if n <= 0:
            return
        from agents.crew.llm.usage import UsageLedger  # the experiment tag lives with the ledger

        key = (UsageLedger.current_experiment(), _role.get() or role)
        with self._lock:
            self._counts.setdefault(key, Counter())[kind] += n

    def announce(self, role: str, message: str) -> None:
        from agents.crew.llm.usage import UsageLedger

        notice = Notice(_role.get() or role, UsageLedger.current_experiment(), message)
        with self._lock:
            self.notices.append(notice)
            listeners = list(self.listeners)
        # with nobody listening (a library user) the log is where it shows; the CLI listens and shows it itself
        log.log(logging.INFO if listeners else logging.WARNING, "%s: %s", notice.role, message)
        for listener in listeners:
            listener(notice)

    def by_role(self, experiment: str | None = None, *, every_experiment: bool = True) -> dict[str, dict[str, int]]:
        """{role: {kind: n}} over the run, or for one experiment (`every_experiment=False`)."""
        out: dict[str, Counter] = {}
        with self._lock:
            for (exp, role), counts in self._counts.items():
                if every_experiment or exp == experiment:
                    out.setdefault(role, Counter()).update(counts)
        return {role: {k: counts[k] for k in FAULT_KINDS if counts[k]} for role, counts in sorted(out.items())
                if any(counts.values())}

    def for_experiment(self, experiment: str) -> dict[str, dict[str, int]]:
        return self.by_role(experiment, every_experiment=False)


def describe_faults(by_role: dict[str, dict[str, int]]) -> str:
    """'hypothesis: 2 429, 1 timeouts, 3 retries; coder: 1 malformed' ('' when nothing happened)."""
    parts = []
    for role, counts in by_role.items():
        shown = ", ".join(f"{counts[k]} {FAULT_LABELS[k]}" for k in FAULT_KINDS if counts.get(k))
        if shown:
            parts.append(f"{role}: {shown}")
    return "; ".join(parts)


# -- the HTTP layer ------------------------------------------------------------------------------------------


@contextmanager
def recording_attempts() -> Iterator[list[str]]:
    """Collect the outcome of every HTTP attempt the SDK makes in this block: '200', '429', 'timeout', ..."""
    outcomes: list[str] = []
    token = _attempts.set(outcomes)
    try:
        yield outcomes
    finally:
        _attempts.reset(token)


@contextmanager
def reading_refusals(is_refusal: Callable[[int, Any], bool]) -> Iterator[None]:
    """In this block, an error response that `is_refusal(status, body)` calls a refusal is handed to the caller
    at once instead of being retried by the SDK (body: the parsed JSON, or the text when it is not JSON)."""
    token = _refusals.set(is_refusal)
    try:
        yield
    finally:
        _refusals.reset(token)


def count_attempts(faults: FaultLog, role: str, outcomes: list[str], *, last_was_answer: bool) -> None:
    """Count what the SDK retried. `last_was_answer`: the final attempt's response was handled by the caller
    (a success, or an error classified elsewhere), so only the attempts before it are faults."""
    retried = outcomes[:-1] if last_was_answer else outcomes
    for outcome in retried:
        if outcome == "429":
            faults.count("rate_limited", role)
        elif outcome.isdigit() and int(outcome) >= 500:
            faults.count("server_error", role)
        elif outcome in ("timeout", "connection"):
            faults.count(outcome, role)
    faults.count("retries", role, max(0, len(outcomes) - 1))


def http_client_for(sdk: Any, **options: Any) -> Any:
    """The SDK's own default HTTP client (its timeouts, limits, redirects) over an observing transport.

    The SDKs differ in which HTTP library they are built on (the anthropic SDK moved to `httpx2`, a renamed
    httpx), so the transport is made from the library the SDK's `DefaultHttpxClient` derives from.
    """
    client_base = next(c for c in sdk.DefaultHttpxClient.__mro__[1:] if c.__name__ == "Client")
    http = importlib.import_module(client_base.__module__.split(".")[0])
    transport = _observed_transport_class(http)(limits=sdk.DEFAULT_CONNECTION_LIMITS)
    return sdk.DefaultHttpxClient(transport=transport, **options)


@functools.cache
def _observed_transport_class(http: Any) -> type:
    """An HTTP transport of `http` (httpx or a drop-in) that records each attempt and sends no trace context."""

    class ObservedTransport(http.HTTPTransport):  # type: ignore[name-defined,misc]
        def handle_request(self, request: Any) -> Any:
            stop.check()  # raises StopRequested (not an HTTP error: no retry, no fault counted)
            for name in TRACE_HEADERS:
                if name in request.headers:
                    del request.headers[name]
            outcomes = _attempts.get()
            try:
                response = super().handle_request(request)
            except http.TimeoutException:
                if outcomes is not None:
                    outcomes.append("timeout")
                raise
            except http.TransportError:
                if outcomes is not None:
                    outcomes.append("connection")
                raise
            if outcomes is not None:
                outcomes.append(str(response.status_code))
            is_refusal = _refusals.get()
            status = response.status_code
            if is_refusal is not None and (status in _RETRIED_STATUSES or status >= 500):
                response = _marked_if_refusal(http, request, response, is_refusal)
            return response

    return ObservedTransport


def _marked_if_refusal(http: Any, request: Any, response: Any, is_refusal: Callable[[int, Any], bool]) -> Any:
    """The response, read whole; with `x-should-retry: false` when the caller calls its body a refusal."""
    content = response.read()
    response.close()
    text = content.decode("utf-8", "replace")
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = text
    try:
        refused = is_refusal(response.status_code, body)
    except Exception:  # a predicate that cannot read the body leaves the SDK's rules in charge
        log.debug("refusal check failed", exc_info=True)
        refused = False
    # the body is decoded now: it travels on without the encoding headers that described the wire bytes
    dropped = ("content-encoding", "content-length", "transfer-encoding") + (("x-should-retry",) if refused else ())
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in dropped]
    if refused:
        headers.append(("x-should-retry", "false"))
    return http.Response(response.status_code, headers=headers, content=content, request=request,
                         extensions=response.extensions)
