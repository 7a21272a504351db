"""When a structured reply that matches its schema's types is still no answer: placeholders and echoes.

A weak model made to fill a schema often copies the schema back: a field's description as its value, a field's
name ("Explanation"), the JSON type ("string"), or nothing but an ellipsis. Such a reply parses; it is still
malformed, and is retried and counted like one. What counts as a placeholder is read from the schema itself
(its field names, titles, descriptions and JSON types), never from a list of phrases:

- blank after trimming, in a field the schema requires;
- a field's name or title, or a schema's own name, alone (any case, `_` or spaces, in <>, [] or {}), of this
  schema or of another role's (the crew's reply schemas: "Explanation" is no idea's title);
- a JSON type name of the schema (string, number, array, ...);
- no letter or digit at all ("…", "...", "---", "?");
- a field's description copied back: at least half of the description's word trigrams are in the value and
  make at least half of it (for descriptions of five words or more).

Fields whose text is taken literally (code in an edit block, where an empty `replace` deletes) are marked
`Verbatim` in the schema and left alone.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from pydantic import BaseModel

_WORD = re.compile(r"[a-z0-9]+")
_BRACKETS = "<>[]{}()\"'`*_ "
ECHO_SHARE = 0.5  # of the description's word trigrams in the value, and of the value's from the description
ECHO_MIN_WORDS = 5


class Verbatim:
    """Field marker (`Annotated[str, VERBATIM]`): the text is taken as it is; not checked for placeholders."""

    def __repr__(self) -> str:
        return "VERBATIM"


VERBATIM = Verbatim()


def placeholder_problem(value: BaseModel) -> str:
    """Why a validated reply is a placeholder rather than an answer ("" when it is an answer)."""
    schema = type(value).model_json_schema()
    types = _schema_types(schema)
    return _check_model(value, _crew_names() | _schema_names(schema), types, "")


@functools.cache
def _crew_names() -> frozenset[str]:
    """Field names and titles of every reply schema of the crew: a model that answers one role with a heading
    of another ("Explanation" as an idea's title) is filling in a form, not answering."""
    from agents.crew import schemas  # imported here: schemas marks its verbatim fields with this module

    models = [m for m in vars(schemas).values() if isinstance(m, type) and issubclass(m, BaseModel)
              and m.__module__ == schemas.__name__]
    return frozenset(name for m in models for name in _schema_names(m.model_json_schema()) | {_norm(m.__name__)})


def _check_model(value: BaseModel, names: set[str], types: set[str], where: str) -> str:
    for name, info in type(value).model_fields.items():
        if any(isinstance(m, Verbatim) for m in info.metadata):
            continue
        path = f"{where}{name}"
        problem = _check_value(getattr(value, name), info.is_required(), info.description or "", names, types, path)
        if problem:
            return problem
    return ""


def _check_value(item: Any, required: bool, description: str, names: set[str], types: set[str], path: str) -> str:
    if isinstance(item, BaseModel):
        return _check_model(item, names, types, path + ".")
    if isinstance(item, list | tuple):
        for i, element in enumerate(item):
            problem = _check_value(element, True, description, names, types, f"{path}[{i}]")
            if problem:
                return problem
        return ""
    if not isinstance(item, str):
        return ""
    text = item.strip()
    if not text:
        return f"{path} is empty" if required else ""
    bare = _norm(text.strip(_BRACKETS))
    if bare in names:
        return f"{path} is a placeholder (the field name {text!r}), not a value"
    if bare in types:
        return f"{path} is a placeholder (the type name {text!r}), not a value"
    if not any(ch.isalnum() for ch in text):
        return f"{path} is a placeholder ({text!r}), not a value"
    if _echoes(text, description):
        return f"{path} copies the schema's description of the field instead of answering it"
    return ""


def _echoes(text: str, description: str) -> bool:
    """Most of the description is in the value, and most of the value is the description (a reason that merely
    uses some of the description's words is an answer)."""
    described = _trigrams(description)
    if len(described) < ECHO_MIN_WORDS - 2:
        return False
    said = _trigrams(text)
    shared = len(described & said)
    return shared >= ECHO_SHARE * len(described) and shared >= ECHO_SHARE * len(said)


def _trigrams(text: str) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def _norm(text: str) -> str:
    return " ".join(_WORD.findall(text.lower().replace("_", " ")))


def _schema_names(schema: dict) -> set[str]:
    """Every property name and title in the schema (nested definitions too)."""
    names: set[str] = set()
    for node in _nodes(schema):
        names |= {_norm(k) for k in node.get("properties", {})}
        if isinstance(node.get("title"), str):
            names.add(_norm(node["title"]))
    return names - {""}


# how each JSON type of a schema is also spelled when a model writes the type instead of a value
_TYPE_SPELLINGS = {"string": ("string", "str", "text"), "number": ("number", "float"), "integer": ("integer", "int"),
                   "boolean": ("boolean", "bool"), "array": ("array", "list"), "object": ("object", "dict"),
                   "null": ("null", "none")}


def _schema_types(schema: dict) -> set[str]:
    """The JSON types the schema uses (every reply schema has strings), as a model might write them."""
    return {spelling for kind in _types_in(schema) | {"string", "null"} for spelling in _TYPE_SPELLINGS.get(kind, ())}


def _types_in(schema: dict) -> set[str]:
    found: set[str] = set()
    for node in _nodes(schema):
        kind = node.get("type")
        found |= set(kind) if isinstance(kind, list) else ({kind} if isinstance(kind, str) else set())
    return found


def _nodes(node: Any):
    if isinstance(node, dict):
        yield node
        for child in node.values():
            yield from _nodes(child)
    elif isinstance(node, list):
        for child in node:
            yield from _nodes(child)
