"""The neutral tool types every front door maps to, and the checks on them.

- a tool is a :class:`ToolSpec` (name, description, JSON-schema parameters);
- a call the model made is a :class:`ToolCall` when its arguments match the tool's schema, else an
  :class:`InvalidToolCall`, which is never executable;
- ``tool_choice`` is ``"auto"``, ``"none"``, ``"required"`` (alias ``"any"``) or a bound tool's name.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from phi3_aipc.errors import InvalidParameterError

EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
TOOL_CHOICES = ("auto", "none", "required")
#: Calls beyond this many in one answer are refused: no agent needs them, and each is validated and run.
MAX_CALLS_PER_ANSWER = 32


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: its name, what it does, and a JSON schema for its arguments."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: dict(EMPTY_PARAMETERS))

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", self.name):
            raise InvalidParameterError(
                f"Tool name {self.name!r} is not valid: use 1-64 letters, digits, '_', '.' or '-'."
            )
        if not isinstance(self.parameters, Mapping):
            raise InvalidParameterError(f"Tool '{self.name}': parameters must be a JSON schema dict.")
        check_schema(self.parameters, f"tool '{self.name}'")

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> ToolSpec:
        """From an OpenAI-style ``{"type": "function", "function": {...}}`` or a bare ``{"name", ...}`` dict."""
        if spec.get("type") == "function" and isinstance(spec.get("function"), Mapping):
            spec = spec["function"]
        if "name" not in spec:
            raise InvalidParameterError(f"A tool needs a 'name'; got {dict(spec)!r}.")
        parameters = spec.get("parameters") or dict(EMPTY_PARAMETERS)
        return cls(str(spec["name"]), str(spec.get("description") or ""), parameters)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": dict(self.parameters)}


@dataclass(frozen=True)
class ToolCall:
    """A well-formed call whose arguments match the tool's schema."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: new_call_id())


@dataclass(frozen=True)
class InvalidToolCall:
    """A call the model attempted that cannot be used: unknown tool, bad JSON, or arguments off-schema."""

    name: str | None
    raw: str
    error: str
    id: str = field(default_factory=lambda: new_call_id())


@dataclass
class ParsedOutput:
    """Model output split into plain text and tool calls."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    invalid_tool_calls: list[InvalidToolCall] = field(default_factory=list)


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def to_tool_specs(tools: Iterable[ToolSpec | Mapping[str, Any]] | None) -> list[ToolSpec]:
    specs = [t if isinstance(t, ToolSpec) else ToolSpec.from_dict(t) for t in tools or ()]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidParameterError(f"Tool names must be unique; repeated: {', '.join(duplicates)}.")
    return specs


def normalise_tool_choice(choice: str | None, tools: Sequence[ToolSpec]) -> str:
    """'auto', 'none', 'required', or a bound tool's name. ``None`` means 'auto' ('none' without tools)."""
    if choice is None:
        return "auto" if tools else "none"
    if not isinstance(choice, str):
        raise InvalidParameterError(
            f"tool_choice must be 'auto', 'none', 'required'/'any' or a tool name, got {choice!r}."
        )
    if choice == "any":
        choice = "required"
    if choice in TOOL_CHOICES:
        if choice != "none" and not tools:
            raise InvalidParameterError(f"tool_choice={choice!r} needs at least one tool; bind tools first.")
        return choice
    if choice not in {t.name for t in tools}:
        raise InvalidParameterError(
            f"tool_choice names the tool {choice!r}, which is not bound; bound tools: "
            f"{', '.join(t.name for t in tools) or 'none'}."
        )
    return choice


def check_schema(schema: Mapping[str, Any], what: str) -> None:
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidParameterError(f"The JSON schema of {what} is invalid: {exc.message}.") from None


def validate_arguments(tool: ToolSpec, arguments: Any) -> str | None:
    """Why ``arguments`` do not fit ``tool``'s schema, or None when they do."""
    import jsonschema

    if not isinstance(arguments, dict):
        return f"arguments must be a JSON object, got {type(arguments).__name__}"
    validator_cls = jsonschema.validators.validator_for(tool.parameters)
    errors = sorted(validator_cls(tool.parameters).iter_errors(arguments), key=lambda e: list(e.path))
    if not errors:
        return None
    where = "/".join(str(p) for p in errors[0].path)
    return (
        f"arguments do not match the schema of '{tool.name}'"
        + (f" at '{where}'" if where else "")
        + (f": {errors[0].message}")
    )


def read_calls(
    data: Any, raw: str, by_name: Mapping[str, ToolSpec]
) -> tuple[list[ToolCall], list[InvalidToolCall]]:
    """Parsed call JSON (one object or a list of them) as valid and invalid calls, each checked on its own."""
    items = data if isinstance(data, list) else [data]
    if len(items) > MAX_CALLS_PER_ANSWER:
        error = f"{len(items)} calls in one answer; at most {MAX_CALLS_PER_ANSWER} are accepted"
        return [], [InvalidToolCall(None, raw[:2000], error)]
    good: list[ToolCall] = []
    bad: list[InvalidToolCall] = []
    for item in items:
        item_raw = json.dumps(item, ensure_ascii=False) if len(items) > 1 else raw
        call = _read_call(item, item_raw, by_name)
        (good if isinstance(call, ToolCall) else bad).append(call)  # type: ignore[arg-type]
    return good, bad


def _read_call(item: Any, raw: str, by_name: Mapping[str, ToolSpec]) -> ToolCall | InvalidToolCall:
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        return InvalidToolCall(None, raw, 'a call must be a JSON object with a string "name"')
    name = item["name"]
    arguments = item.get("arguments", item.get("parameters", {}))
    if isinstance(arguments, str):
        # Some models encode the arguments as a JSON string, as OpenAI's API does.
        from phi3_aipc.tools.json_text import bare_json

        arguments = bare_json(arguments)
        if arguments is None:
            return InvalidToolCall(name, raw, "the arguments are a string that is not a JSON object")
    tool = by_name.get(name)
    if tool is None:
        known = ", ".join(by_name) or "none"
        return InvalidToolCall(name, raw, f"there is no tool named '{name}' (bound tools: {known})")
    error = validate_arguments(tool, arguments)
    return InvalidToolCall(name, raw, error) if error else ToolCall(name, arguments)


def call_body(call: Mapping[str, Any]) -> dict[str, Any]:
    """An earlier call as the model writes it: its name and arguments."""
    arguments = call.get("arguments", call.get("args", {}))
    return {"name": call["name"], "arguments": arguments}


def call_schema(tool: ToolSpec) -> dict[str, Any]:
    """A JSON schema for one whole call of ``tool``."""
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": dict(tool.parameters)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def looks_like_calls(value: Any) -> bool:
    items = value if isinstance(value, list) else [value]
    return bool(items) and all(
        isinstance(i, dict) and "name" in i and ("arguments" in i or "parameters" in i) for i in items
    )


def text_of(content: str | None) -> str:
    """Message content as text: the message rules (``phi3_aipc.messages``) admit only strings, or None."""
    return content or ""
