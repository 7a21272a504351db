"""LLM backends of the crew: one adapter per provider over its official SDK, metered by a shared ledger.

`make_llm("anthropic/<model>" | "openai/<model>", role=..., ledger=...)` returns a CrewAI `BaseLLM`. Importing
this package does not import CrewAI; building an adapter does.
"""

from agents.crew.llm.errors import (
    BudgetExceeded,
    ContextOverflow,
    LLMCallError,
    LLMConfigError,
    LLMError,
    LLMOutputError,
)
from agents.crew.llm.factory import ALLOWED_FORMS, default_timeout, make_llm, split_model
from agents.crew.llm.faults import FaultLog, Notice, describe_faults
from agents.crew.llm.pricing import Price, price_for
from agents.crew.llm.servers import STRUCTURED_MODES, ServerRegistry
from agents.crew.llm.usage import UsageLedger, UsageRecord, UsageTotals

__all__ = [
    "ALLOWED_FORMS",
    "BudgetExceeded",
    "ContextOverflow",
    "FaultLog",
    "LLMCallError",
    "LLMConfigError",
    "LLMError",
    "LLMOutputError",
    "Notice",
    "Price",
    "STRUCTURED_MODES",
    "ServerRegistry",
    "UsageLedger",
    "UsageRecord",
    "UsageTotals",
    "default_timeout",
    "describe_faults",
    "make_llm",
    "price_for",
    "split_model",
]
