"""The hypothesis role's schema for one train.py: `Idea` whose changes name its constants and parts as enums.

Built when the prompt is made, from the train.py the idea is proposed on, so every provider (tool use,
json_schema, json_object, schema in the prompt) is offered exactly the constants and parts that exist, and a
reply naming another is refused by validation and asked again. A value must be a Python expression.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, Union

from pydantic import Field, create_model, field_validator

from agents import trainpy
from agents.crew.schemas import CHANGES_DESCRIPTION, ConstantChange, Idea, PartChange
from memory.changes import expression, parts_of


def _python(cls: type, value: str) -> str:
    try:
        expression(value.strip())
    except SyntaxError:
        raise ValueError(f"{value!r} is not a Python expression (write it as train.py would)") from None
    return value.strip()


@lru_cache(maxsize=16)
def idea_schema(train_py: str) -> type[Idea]:
    """`Idea` with `changes` naming train.py's CAPS constants and its functions, classes and methods; plain `Idea`
    (no `changes` offered: memory reads the idea's words, the fingerprint judges the edit) when train.py does not
    parse."""
    try:
        model = trainpy.read(train_py)
    except (SyntaxError, ValueError, RecursionError):
        return Idea
    constants = tuple(sorted(name for name in model.constants if name.isupper() and name not in model.flags))
    parts = parts_of(train_py)
    if not constants and not parts:
        return Idea
    kinds: list[type] = []
    if constants:
        kinds.append(create_model(
            "ConstantChange", __base__=ConstantChange, __doc__=ConstantChange.__doc__,
            __validators__={"value_is_python": field_validator("value")(_python)},
            constant=(Literal[constants], Field(description=ConstantChange.model_fields["constant"].description))))
    if parts:
        kinds.append(create_model(
            "PartChange", __base__=PartChange, __doc__=PartChange.__doc__,
            part=(Literal[parts], Field(description=PartChange.model_fields["part"].description))))
    item = Union[tuple(kinds)] if len(kinds) > 1 else kinds[0]  # noqa: UP007 (built at run time)
    return create_model("Idea", __base__=Idea, __doc__=Idea.__doc__,
                        changes=(list[item], Field(default_factory=list, description=CHANGES_DESCRIPTION)))


def plain_idea(idea: Idea) -> Idea:
    """The schema's answer as a plain `Idea` (what records, the journal and memory keep)."""
    return idea if type(idea) is Idea else Idea.model_validate(idea.model_dump())
