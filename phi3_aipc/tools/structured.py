"""Structured output: a JSON schema from what the user gave, the prompt instruction, and reading the answer back."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from phi3_aipc.errors import InvalidParameterError, Phi3AIPCError
from phi3_aipc.tools.json_text import JsonRefused, bare_json, loads_bounded
from phi3_aipc.tools.spec import EMPTY_PARAMETERS, check_schema, text_of


class OutputParseError(Phi3AIPCError, ValueError):
    """The model's output is not the JSON that was asked for."""

    def __init__(self, message: str, text: str):
        self.text = text
        super().__init__(message)


def json_schema_of(schema: Any) -> dict[str, Any]:
    """A JSON schema from a dict, a pydantic model class, or a TypedDict / dataclass (through pydantic)."""
    if isinstance(schema, Mapping):
        result = dict(schema)
        if result.get("type") == "function" and isinstance(result.get("function"), Mapping):
            result = dict(result["function"].get("parameters") or EMPTY_PARAMETERS)
        elif "parameters" in result and "name" in result and "properties" not in result:
            result = dict(result["parameters"])
        check_schema(result, "the structured output")
        return result
    if hasattr(schema, "model_json_schema"):
        return schema.model_json_schema()
    try:
        from pydantic import TypeAdapter
    except ImportError:
        raise InvalidParameterError(
            f"Cannot build a JSON schema from {schema!r}: pass a JSON schema dict, or install pydantic."
        ) from None
    try:
        return TypeAdapter(schema).json_schema()
    except Exception as exc:  # pydantic raises several error types for types it cannot describe
        raise InvalidParameterError(
            f"Cannot build a JSON schema from {schema!r} ({exc}); pass a pydantic model, a TypedDict or a dict."
        ) from None


def with_json_instructions(
    messages: Sequence[Mapping[str, Any]], schema: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """``messages`` with a system instruction to answer in JSON (matching ``schema`` when given).

    The constraint alone would force valid JSON, but a model that was told what is wanted fills it in far better,
    and without a constraint (a backend that has none) the instruction is all there is.
    """
    prompt = "Answer with a single JSON object and nothing else."
    if schema is not None:
        # Sorted keys: the same schema reads the same whichever converter built it (LangChain's orders keys its way).
        prompt += " It must match this JSON schema:\n" + json.dumps(
            dict(schema), ensure_ascii=False, sort_keys=True
        )
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        out[0]["content"] = f"{text_of(out[0].get('content'))}\n\n{prompt}".strip()
    else:
        out.insert(0, {"role": "system", "content": prompt})
    return out


def parse_json_output(text: str, schema: Any | None = None) -> Any:
    """The JSON value in ``text``, validated against ``schema`` (a JSON schema, pydantic model or TypedDict) when given. Never evaluates anything.

    A ```json fence around it is accepted: an unconstrained model often writes one, and the content is the same.
    Raises OutputParseError, with the text, when there is no JSON or it does not match.
    """
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    candidate = text.strip() if bare_json(text) is not None or not fenced else fenced.group(1).strip()
    try:
        value = loads_bounded(candidate)
    except JsonRefused as exc:
        raise OutputParseError(f"The model's output is refused as JSON: {exc}.", text) from None
    except ValueError:
        raise OutputParseError(f"The model's output is not JSON: {text[:200]!r}", text) from None
    if schema is not None:
        import jsonschema

        resolved = json_schema_of(schema)
        validator = jsonschema.validators.validator_for(resolved)(resolved)
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            raise OutputParseError(f"The model's JSON does not match the schema: {error.message}", text)
    return value
