"""Structured outputs of the four roles.

Every backend (Anthropic, OpenAI, OpenAI-compatible, offline) fills these same models, so the loop
never needs to know which one produced them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

CATEGORIES = (
    "architecture",
    "optimizer",
    "learning_rate",
    "schedule",
    "batch_size",
    "regularization",
    "initialization",
    "simplification",
    "other",
)


class Idea(BaseModel):
    """The hypothesis role's proposal for the next experiment."""

    title: str = Field(description="One line naming the change, e.g. 'MATRIX_LR 0.04 -> 0.03'.")
    rationale: str = Field(description="Why this should lower val_bpb within the fixed budget.")
    expected_effect: str = Field(description="What result would confirm or refute it.")
    category: str = Field(description=f"One of: {', '.join(CATEGORIES)}.")
    retry_of: str | None = Field(
        default=None,
        description="Id of an earlier experiment this deliberately retries, with the reason in the rationale.",
    )


class EditBlock(BaseModel):
    """Replace the exact text `search` (which must occur once in train.py) by `replace`."""

    search: str
    replace: str


class CodeEdit(BaseModel):
    """The coder role's edit: search/replace blocks on one file, which must be train.py."""

    path: str = "train.py"
    blocks: list[EditBlock]
    summary: str = ""


class Review(BaseModel):
    """The reviewer role's verdict before any GPU time is spent."""

    verdict: Literal["approve", "revise", "reject"]
    reasons: list[str] = Field(default_factory=list)


class Analysis(BaseModel):
    """The analyst role's reading of a finished experiment."""

    explanation: str
    lesson: str
    rerun: bool = Field(default=False, description="Ask for a confirming re-run with another seed.")
