"""List prices and context windows of current Anthropic and OpenAI models.

Prices are USD per million tokens, as published on the providers' pricing pages at the time of writing; they
change, so each role can override them in crew.yaml (`usd_per_mtok_in`, `usd_per_mtok_out`). A model missing
from the table costs 0 (its tokens are still counted). Model ids are matched by their longest known prefix,
so dated ids such as `claude-sonnet-4-5-20250929` find their family. Cached-prompt discounts are ignored:
costs are an upper bound.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFacts:
    usd_per_mtok_in: float
    usd_per_mtok_out: float
    context_tokens: int


_CLAUDE_CONTEXT = 200_000

MODEL_FACTS: dict[str, ModelFacts] = {
    # Anthropic
    "claude-opus-4": ModelFacts(15.0, 75.0, _CLAUDE_CONTEXT),  # opus 4 and 4.1
    "claude-opus-4-5": ModelFacts(5.0, 25.0, _CLAUDE_CONTEXT),
    "claude-opus-4-6": ModelFacts(5.0, 25.0, _CLAUDE_CONTEXT),
    "claude-sonnet-4": ModelFacts(3.0, 15.0, _CLAUDE_CONTEXT),  # sonnet 4.x
    "claude-3-7-sonnet": ModelFacts(3.0, 15.0, _CLAUDE_CONTEXT),
    "claude-haiku-4": ModelFacts(1.0, 5.0, _CLAUDE_CONTEXT),
    "claude-3-5-haiku": ModelFacts(0.80, 4.0, _CLAUDE_CONTEXT),
    "claude-3-haiku": ModelFacts(0.25, 1.25, _CLAUDE_CONTEXT),
    # OpenAI
    "gpt-5": ModelFacts(1.25, 10.0, 400_000),
    "gpt-5-mini": ModelFacts(0.25, 2.0, 400_000),
    "gpt-5-nano": ModelFacts(0.05, 0.40, 400_000),
    "gpt-4.1": ModelFacts(2.0, 8.0, 1_047_576),
    "gpt-4.1-mini": ModelFacts(0.40, 1.60, 1_047_576),
    "gpt-4.1-nano": ModelFacts(0.10, 0.40, 1_047_576),
    "gpt-4o": ModelFacts(2.50, 10.0, 128_000),
    "gpt-4o-mini": ModelFacts(0.15, 0.60, 128_000),
    "o3": ModelFacts(2.0, 8.0, 200_000),
    "o3-mini": ModelFacts(1.10, 4.40, 200_000),
    "o4-mini": ModelFacts(1.10, 4.40, 200_000),
}


def model_facts(model: str) -> ModelFacts | None:
    """Facts for `model` (with or without a `provider/` prefix) by longest matching prefix, or None."""
    name = model.split("/", 1)[1] if model.startswith(("anthropic/", "openai/")) else model
    name = name.lower()
    matches = [prefix for prefix in MODEL_FACTS if name.startswith(prefix)]
    return MODEL_FACTS[max(matches, key=len)] if matches else None


@dataclass(frozen=True)
class Price:
    """What one million input and output tokens cost, in USD."""

    usd_per_mtok_in: float
    usd_per_mtok_out: float

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.usd_per_mtok_in + output_tokens * self.usd_per_mtok_out) / 1_000_000


def price_for(model: str, *, usd_per_mtok_in: float | None = None, usd_per_mtok_out: float | None = None) -> Price:
    """The table price of `model`, with either side replaced by an explicit override; unknown models cost 0."""
    for name, value in (("usd_per_mtok_in", usd_per_mtok_in), ("usd_per_mtok_out", usd_per_mtok_out)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    facts = model_facts(model)
    table_in = facts.usd_per_mtok_in if facts else 0.0
    table_out = facts.usd_per_mtok_out if facts else 0.0
    return Price(
        usd_per_mtok_in=table_in if usd_per_mtok_in is None else usd_per_mtok_in,
        usd_per_mtok_out=table_out if usd_per_mtok_out is None else usd_per_mtok_out,
    )


def context_window(model: str, default: int) -> int:
    """The model's context window in tokens, or `default` when the model is not in the table."""
    facts = model_facts(model)
    return facts.context_tokens if facts else default
