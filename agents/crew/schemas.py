"""Structured outputs of the four roles.

Every backend (Anthropic, OpenAI, OpenAI-compatible, offline) fills these same models, so the loop
never needs to know which one produced them.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from agents.crew.replies import VERBATIM
from agents.trainpy import EDITABLE_FILE

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
Category = Literal[CATEGORIES]  # type: ignore[valid-type]  # a closed set: an enum in every schema sent
_NO_VALUE = re.compile(r"^\s*(|none|null|nil|n/?a|no|false|-+|0)\s*$", re.IGNORECASE)


class ConstantChange(BaseModel):
    """Set a constant of train.py."""

    constant: str = Field(description="Its name in train.py.")
    # Python, taken as it is (`None` is a value here, not a placeholder; validation checks it is an expression)
    value: Annotated[str, VERBATIM] = Field(
        description="New value as train.py would write it; 'A if CUDA else B' where profiles differ.")

    @field_validator("value", mode="before")
    @classmethod
    def _as_python(cls, value: object) -> object:
        """A number or a list given as JSON is written as Python: 3 -> '3', [0.9, 0.95] -> '(0.9, 0.95)'."""
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, list | tuple):
            return "(" + ", ".join(repr(v) for v in value) + ("," if len(value) == 1 else "") + ")"
        return value


class PartChange(BaseModel):
    """Rewrite code of train.py."""

    part: str = Field(description="Function, class or method, e.g. 'MLP.forward'.")
    technique: str = Field(description="What is done to it, in a few words, e.g. 'SwiGLU'.")


CHANGES_DESCRIPTION = "Every change, one item each: memory compares experiments by these, not by the title."


class Idea(BaseModel):
    """The hypothesis role's proposal for the next experiment."""

    title: str = Field(description="One line naming the change, e.g. 'MATRIX_LR 0.04 -> 0.03'.")
    rationale: str = Field(description="Why this should lower val_bpb within the fixed budget.")
    expected_effect: str = Field(description="What result would confirm or refute it.")
    category: Category = Field(description="The kind of change.")
    retry_of: str | None = Field(
        default=None,
        description="Only when deliberately retrying an earlier experiment: its id (the reason goes in the "
        "rationale). Otherwise null.",
    )
    # offered in the hypothesis's schema for one train.py (crew/idea_schema.py: its constants and parts as enums);
    # the bare schema leaves it out, so a reply never names constants it was not shown
    changes: SkipJsonSchema[list[ConstantChange | PartChange]] = Field(default_factory=list,
                                                                      description=CHANGES_DESCRIPTION)

    @field_validator("category", mode="before")
    @classmethod
    def _known_category(cls, value: object) -> object:
        """'Learning rate' -> 'learning_rate'; a kind outside the set is 'other' (free-text replies, old records)."""
        if not isinstance(value, str):
            return value
        key = re.sub(r"[\s-]+", "_", value.strip().lower())
        return key if key in CATEGORIES else "other"

    @field_validator("retry_of", mode="before")
    @classmethod
    def _no_placeholder(cls, value: object) -> object:
        """A model made to fill the field writes 'none', 'N/A' or ''; that means no retry."""
        if isinstance(value, str) and _NO_VALUE.match(value):
            return None
        return value.strip() if isinstance(value, str) else value


class EditBlock(BaseModel):
    """Replace the exact text `search` (which must occur once in train.py) by `replace`."""

    search: Annotated[str, VERBATIM]  # code, taken as it is: an empty `replace` deletes
    replace: Annotated[str, VERBATIM]


class CodeEdit(BaseModel):
    """The coder role's edit: search/replace blocks on one file, which must be train.py."""

    path: str = EDITABLE_FILE
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
