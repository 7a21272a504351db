"""Build a role's CrewAI LLM from its model string: `anthropic/<model>` or `openai/<model>`.

Keys come only from the environment. A provider named without its key is a configuration error; an
OpenAI-compatible server (`base_url`) gets a placeholder key unless `api_key_env` names one, so the real
OPENAI_API_KEY is never sent to a third-party endpoint by accident. CrewAI (slow to import) is loaded only
when an adapter is actually built.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from agents.crew.llm.errors import LLMConfigError
from agents.crew.llm.servers import STRUCTURED_MODES, ServerRegistry
from agents.crew.llm.usage import UsageLedger

if TYPE_CHECKING:
    from crewai import BaseLLM

ALLOWED_FORMS = "anthropic/<model>, openai/<model> (optionally with base_url for an OpenAI-compatible server)"
DEFAULT_KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
COMPATIBLE_SERVER_PLACEHOLDER_KEY = "not-needed"
# Seconds one request may take. A hosted API answers in seconds; a model on a CPU can take minutes for an 8k
# prompt (SmolLM2-135M on two cores: 228 s on a quiet machine, 788 s on a busy one), so a self-hosted server
# gets fifteen minutes. It also gets one retry, not three: most serve one request at a time and keep working on
# one the client gave up on, so each retried timeout queues another copy of the same prompt.
DEFAULT_TIMEOUT_S = {"hosted": 120.0, "self-hosted": 900.0}
DEFAULT_MAX_RETRIES = {"hosted": 3, "self-hosted": 1}


def default_timeout(base_url: str | None) -> float:
    """The request timeout when crew.yaml sets none: longer for a self-hosted server (any base_url)."""
    return DEFAULT_TIMEOUT_S["self-hosted" if base_url else "hosted"]


def default_max_retries(base_url: str | None) -> int:
    """The SDK's retries when crew.yaml sets none: fewer for a self-hosted server (any base_url)."""
    return DEFAULT_MAX_RETRIES["self-hosted" if base_url else "hosted"]


def split_model(model: str) -> tuple[str, str]:
    """`"anthropic/claude-x"` -> `("anthropic", "claude-x")`; LLMConfigError for any other form."""
    provider, _, name = model.strip().partition("/")
    if provider not in DEFAULT_KEY_ENV or not name.strip():
        raise LLMConfigError(f"unknown model {model!r}: allowed forms are {ALLOWED_FORMS}")
    return provider, name.strip()


def resolve_api_key(provider: str, *, role: str, model: str, base_url: str | None, api_key_env: str | None) -> str:
    """The key for this role, from the environment only; LLMConfigError (naming the variable) when missing."""
    if base_url and not api_key_env and (provider == "openai" or not os.environ.get(DEFAULT_KEY_ENV[provider])):
        return COMPATIBLE_SERVER_PLACEHOLDER_KEY
    env_name = api_key_env or DEFAULT_KEY_ENV[provider]
    key = os.environ.get(env_name, "").strip()
    if not key:
        raise LLMConfigError(
            f"{env_name} is not set: role {role!r} uses {model}. Export {env_name}, or set this role's model "
            "to 'offline'."
        )
    return key


def make_llm(
    model: str,
    *,
    role: str,
    ledger: UsageLedger,
    base_url: str | None = None,
    api_key_env: str | None = None,
    temperature: float = 0.7,
    max_tokens: int = 4096,
    timeout_s: float | None = None,
    max_retries: int | None = None,
    usd_per_mtok_in: float | None = None,
    usd_per_mtok_out: float | None = None,
    output_retries: int = 2,
    structured: str = "auto",
    context_tokens: int | None = None,
    servers: ServerRegistry | None = None,
) -> BaseLLM:
    """A CrewAI LLM for `role` over the provider's SDK, metered by `ledger`.

    `max_retries` and `timeout_s` go to the SDK (exponential backoff on 429/5xx/timeouts/connection errors;
    None: `default_max_retries` / `default_timeout`); `output_retries` bounds the re-asks after malformed structured output.
    `structured` is the structured-output form (`servers.STRUCTURED_MODES`), `context_tokens` the context window
    when the server does not report one; `servers` shares what is learned about each server between the roles
    of a run. Prices default to the table in `pricing.py` (for an OpenAI-compatible server: free unless
    overridden).
    """
    provider, name = split_model(model)
    timeout_s = default_timeout(base_url) if timeout_s is None else timeout_s
    max_retries = default_max_retries(base_url) if max_retries is None else max_retries
    if structured not in STRUCTURED_MODES:
        raise LLMConfigError(f"role {role!r}: structured must be one of {', '.join(STRUCTURED_MODES)}, "
                             f"got {structured!r}")
    if context_tokens is not None and context_tokens < 512:
        raise LLMConfigError(f"role {role!r}: context_tokens must be >= 512, got {context_tokens}")
    for field, value, low in (
        ("max_tokens", max_tokens, 1),
        ("max_retries", max_retries, 0),
        ("output_retries", output_retries, 0),
    ):
        if value < low:
            raise LLMConfigError(f"role {role!r}: {field} must be >= {low}, got {value}")
    if timeout_s <= 0:
        raise LLMConfigError(f"role {role!r}: timeout_s must be > 0, got {timeout_s}")
    key = resolve_api_key(provider, role=role, model=model, base_url=base_url, api_key_env=api_key_env)
    if provider == "openai" and base_url:
        usd_per_mtok_in = 0.0 if usd_per_mtok_in is None else usd_per_mtok_in
        usd_per_mtok_out = 0.0 if usd_per_mtok_out is None else usd_per_mtok_out
    fields = dict(
        model=name,
        role=role,
        base_url=base_url,
        api_key_env=api_key_env or (None if provider == "openai" and base_url else DEFAULT_KEY_ENV[provider]),
        temperature=temperature,
        max_tokens=max_tokens,
        timeout_s=timeout_s,
        max_retries=max_retries,
        output_retries=output_retries,
        usd_per_mtok_in=usd_per_mtok_in,
        usd_per_mtok_out=usd_per_mtok_out,
        structured=structured,
        context_tokens=context_tokens,
    )
    try:
        if provider == "anthropic":
            from agents.crew.llm.anthropic_llm import AnthropicLLM

            return AnthropicLLM(ledger=ledger, api_key=key, servers=servers, **fields)
        from agents.crew.llm.openai_llm import OpenAILLM

        return OpenAILLM(ledger=ledger, api_key=key, servers=servers, **fields)
    except ValueError as exc:  # pydantic validation of the fields: report it as configuration, without the key
        raise LLMConfigError(f"role {role!r}: invalid settings for {model}: {exc}") from None
