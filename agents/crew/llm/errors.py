"""Errors raised by the LLM adapters and the usage ledger.

Messages name the provider, model, role and HTTP status, never an API key. None of these carries a
`status_code` or a throttling phrase, so CrewAI does not mistake one for a retryable rate limit: the
provider SDK has already retried by the time one is raised.
"""

from __future__ import annotations


class LLMError(Exception):
    """Base class for every error of the LLM layer."""


class LLMConfigError(LLMError):
    """A role's model settings cannot work (unknown model form, missing API key, bad limits)."""


class LLMCallError(LLMError):
    """The provider could not be reached or kept failing after the SDK's own retries."""

    def __init__(self, message: str, *, provider: str, model: str, status: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        self.status = status  # HTTP status, None for timeouts and connection errors


class LLMOutputError(LLMError):
    """The provider kept answering with output that does not validate against the requested schema."""

    def __init__(self, message: str, *, provider: str, model: str, attempts: int, last_problem: str) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        self.attempts = attempts
        self.last_problem = last_problem


class BudgetExceeded(LLMError):
    """A call was refused before it was sent: its worst-case cost would pass the run's budget."""


class ContextOverflow(LLMError):
    """The prompt and the room for the reply do not fit the model's context window.

    Raised before sending when the estimate already shows it, or when the server refuses the request as too long
    (or stops the reply because its context filled up). The caller shortens the prompt and asks again; it is never
    a reason to change how structured output is requested. The message avoids the phrases CrewAI treats as its
    own context-length signal, so CrewAI passes this exception through unchanged.
    """

    def __init__(self, message: str, *, provider: str, model: str, limit: int | None, prompt_tokens: int | None,
                 reply_cut: bool = False, reply_tokens: int | None = None, local_tokens: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        self.limit = limit  # the context window in the server's tokens, when known
        self.prompt_tokens = prompt_tokens  # the prompt as the server (or the estimate) counted it
        self.reply_cut = reply_cut  # the reply, not the prompt, ran out of room
        self.reply_tokens = reply_tokens  # how far the cut reply got
        self.local_tokens = local_tokens  # the refused prompt as the local tokenizer counts it

    @property
    def server_ratio(self) -> float | None:
        """Server tokens per local token of the refused prompt, when the server counted it."""
        if self.prompt_tokens and self.local_tokens and not self.reply_cut:
            return self.prompt_tokens / self.local_tokens
        return None
