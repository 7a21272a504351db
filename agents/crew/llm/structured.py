"""Provider-neutral helpers for structured output: find the JSON, validate it, explain what was wrong.

The adapters ask the provider for JSON that matches a pydantic model (forced tool use, json_schema); these
helpers check what came back and word the feedback sent with a retry.
"""

from __future__ import annotations

import json
import re
from typing import Any

import openai
from pydantic import BaseModel, ValidationError

from agents.crew.replies import placeholder_problem

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_TOOL_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_MAX_PROBLEM_CHARS = 1500


def tool_name(model: type[BaseModel]) -> str:
    """A tool / schema name the providers accept (letters, digits, _ and -, at most 64 characters)."""
    return _TOOL_NAME_CHARS.sub("_", model.__name__)[:64] or "output"


def schema_for(model: type[BaseModel], *, strict: bool) -> dict[str, Any]:
    """The JSON schema sent with a request.

    `strict` (api.openai.com's strict mode): the SDK's transformation, where every property is required and
    optional ones are nullable. Otherwise the model's own schema: optional fields are nullable and not required,
    so a server that constrains output with a grammar never forces a model to invent a value for them.
    """
    if strict:
        return openai.pydantic_function_tool(model)["function"]["parameters"]
    return model.model_json_schema()


def schema_instruction(model: type[BaseModel], shown: str = "") -> str:
    """Plain-text instructions for servers that do not constrain the output to a schema themselves.

    `shown`: the prompt so far; when it already carries the schema (CrewAI writes it into the task), only the
    instruction is added, not the schema a second time.
    """
    schema = model.model_json_schema()
    if shown and '"properties"' in shown and all(f'"{name}"' in shown for name in schema.get("properties", {})):
        return ("Reply with a single JSON object that validates against the schema given above, and nothing else "
                "(no prose, no code fences).")
    return (
        "Reply with a single JSON object and nothing else (no prose, no code fences). "
        f"It must validate against this JSON schema:\n{json.dumps(schema, separators=(',', ':'))}"
    )


def extract_json(text: str) -> Any:
    """The JSON value in `text`: the whole text, a fenced ```json block, or the outermost {...}; else ValueError."""
    candidates = [text.strip()]
    candidates += [m.group(1).strip() for m in _FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        if not candidate:
            continue
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    preview = text.strip()[:120].replace("\n", " ")
    raise ValueError(f"the reply is not JSON (starts with {preview!r})" if preview else "the reply was empty")


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, `field.path: message`, without echoing the (possibly long) input."""
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in item["loc"]) or "(root)"
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)


def validate_output(
    model: type[BaseModel], *, data: Any = None, text: str | None = None
) -> tuple[BaseModel | None, str]:
    """Validate parsed `data`, or the JSON found in `text`; returns (instance, "") or (None, problem).

    A reply that validates but holds placeholders (a field's name or description copied back, "string", "…",
    a blank required field: agents/crew/replies.py) is a problem too."""
    if data is None:
        try:
            data = extract_json(text or "")
        except ValueError as exc:
            return None, str(exc)
    try:
        value = model.model_validate(data)
    except ValidationError as exc:
        problem = f"the JSON does not match the {model.__name__} schema: {describe_validation_error(exc)}"
        return None, problem[:_MAX_PROBLEM_CHARS]
    placeholder = placeholder_problem(value)  # parses, but fills the schema with its own words
    if placeholder:
        return None, f"the JSON is not a real {model.__name__}: {placeholder}"[:_MAX_PROBLEM_CHARS]
    return value, ""


def feedback_text(model: type[BaseModel], problem: str) -> str:
    """What the provider is told before it tries again."""
    return (
        f"Your previous reply could not be used: {problem}. "
        f"Answer again with a complete {model.__name__} object that validates against the schema; "
        "keep the text fields concise so the reply fits."
    )
