"""Tool calling and structured output for models without an API: the prompt protocol, constraints and parsing.

Framework-free. The adapters translate their own message and tool types into the neutral forms here:

- a tool is a :class:`ToolSpec` (name, description, JSON-schema parameters);
- messages are dicts: ``{"role": "system" | "user" | "assistant", "content": str}``; an assistant message may
  carry ``"tool_calls": [{"id", "name", "arguments": dict}]``; a tool result is
  ``{"role": "tool", "content": str, "tool_call_id": str, "name": str}``;
- ``tool_choice`` is ``"auto"``, ``"none"``, ``"required"`` (alias ``"any"``) or a tool's name.

Each model family has its own format (:func:`protocol_for`):

- ``phi3`` (Phi-3, Phi-3.5) and ``other`` (e.g. SmolLM2): no tool tokens, so the system prompt describes a JSON
  protocol: the model writes ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, once per call. Tool
  results come back as a user turn holding ``<tool_result name=...>...</tool_result>`` blocks, because these
  chat templates know only system, user and assistant.
- ``phi4`` (Phi-4-mini): its native format. Tool definitions go in the system message's ``tools`` field, which
  the model's template wraps in ``<|tool|>...<|/tool|>``; the model answers ``<|tool_call|>[{...}]<|/tool_call|>``;
  results go back in a ``<|tool_response|>`` turn.

Where the backend can constrain decoding, ``tool_choice="auto"`` uses structural tags (free text, but an opened
call must be valid JSON for one bound tool's schema) and ``"required"`` / a name use a JSON schema that forces a
call. Parsing never raises on model output and never evaluates it: bad calls become :class:`InvalidToolCall`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from phi3_aipc.errors import InvalidParameterError, Phi3AIPCError
from phi3_aipc.params import Constraint, TaggedSchema

EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
TOOL_CHOICES = ("auto", "none", "required")


class OutputParseError(Phi3AIPCError, ValueError):
    """The model's output is not the JSON that was asked for."""

    def __init__(self, message: str, text: str):
        self.text = text
        super().__init__(message)


# -- neutral types ------------------------------------------------------------------------------------------------
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
        _check_schema(self.parameters, f"tool '{self.name}'")

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


def _check_schema(schema: Mapping[str, Any], what: str) -> None:
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


# -- the request: prompt messages, constraint, parser -------------------------------------------------------------
@dataclass
class ToolRequest:
    """What the engine needs for one tool-enabled generation, and how to read its output back."""

    messages: list[dict[str, Any]]
    constraint: Constraint | None
    protocol: ToolProtocol
    tools: list[ToolSpec]
    tool_choice: str

    @property
    def forced(self) -> bool:
        return self.tool_choice not in ("auto", "none")

    def parse(self, text: str) -> ParsedOutput:
        if self.tool_choice == "none":
            return ParsedOutput(text)
        return self.protocol.parse(text, self.tools, forced=self.forced)

    def stream_parser(self) -> ToolStreamParser:
        return ToolStreamParser(self)


def prepare_tool_call(
    messages: Sequence[Mapping[str, Any]],
    tools: Iterable[ToolSpec | Mapping[str, Any]] | None,
    tool_choice: str | None = "auto",
    *,
    family: str = "other",
    constraint_kinds: Iterable[str] = (),
    constrained: bool = True,
) -> ToolRequest:
    """Messages with the tools described for ``family``, plus the constraint the backend can enforce.

    ``constrained=False`` relies on the prompt and parsing alone (also what happens when the backend supports no
    suitable constraint kind).
    """
    specs = to_tool_specs(tools)
    choice = normalise_tool_choice(tool_choice, specs)
    protocol = protocol_for(family)
    shown = [] if choice == "none" else _tools_for_choice(specs, choice)
    rendered = protocol.render(messages, shown, choice)
    constraint = (
        protocol.constraint(shown, choice, frozenset(constraint_kinds)) if constrained and shown else None
    )
    return ToolRequest(rendered, constraint, protocol, shown, choice)


def prepare_for_engine(
    engine: Any,
    messages: Sequence[Mapping[str, Any]],
    tools: Iterable[ToolSpec | Mapping[str, Any]] | None,
    tool_choice: str | None = "auto",
    *,
    constrained: bool = True,
) -> ToolRequest:
    """``prepare_tool_call`` with the family and constraint kinds of a loaded :class:`~phi3_aipc.Engine`."""
    return prepare_tool_call(
        messages,
        tools,
        tool_choice,
        family=engine.model_family,
        constraint_kinds=engine.constraint_kinds,
        constrained=constrained,
    )


def _tools_for_choice(tools: list[ToolSpec], choice: str) -> list[ToolSpec]:
    if choice in TOOL_CHOICES:
        return tools
    return [t for t in tools if t.name == choice]


# -- per-family protocols -------------------------------------------------------------------------------------------
class ToolProtocol:
    """The JSON-in-tags protocol for models without tool tokens (Phi-3, Phi-3.5, others)."""

    family = "phi3"
    open_tag = "<tool_call>"
    close_tag = "</tool_call>"

    # -- prompt ------------------------------------------------------------------------------------------------------
    def render(
        self, messages: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec], choice: str
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        pending_results: list[Mapping[str, Any]] = []
        for message in messages:
            role = message.get("role")
            if role == "tool":
                pending_results.append(message)
                continue
            if pending_results:
                out.append(self.render_results(pending_results))
                pending_results = []
            if role == "assistant" and message.get("tool_calls"):
                out.append({"role": "assistant", "content": self.render_calls(message)})
            else:
                out.append({"role": role, "content": _text(message.get("content"))})
        if pending_results:
            out.append(self.render_results(pending_results))
        if tools:
            self.add_tool_system_prompt(out, tools, choice)
        return out

    def add_tool_system_prompt(
        self, out: list[dict[str, Any]], tools: Sequence[ToolSpec], choice: str
    ) -> None:
        prompt = self.instructions(tools, choice)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{prompt}".strip()}
        else:
            out.insert(0, {"role": "system", "content": prompt})

    def instructions(self, tools: Sequence[ToolSpec], choice: str) -> str:
        listing = "\n".join(json.dumps(t.to_dict(), ensure_ascii=False) for t in tools)
        example = f'{self.open_tag}{{"name": "{tools[0].name}", "arguments": {{...}}}}{self.close_tag}'
        lines = [
            "You can call these tools. Each is given as JSON with its name, description and a JSON schema of "
            "its arguments:",
            listing,
            "",
            f'To call a tool, write {self.open_tag}, then a JSON object with the tool\'s "name" and its '
            f'"arguments", then {self.close_tag}. For example: {example}',
            "To call several tools, write one block per call. The results come back in <tool_result> blocks.",
        ]
        if choice == "auto":
            lines.append("If no tool is needed, answer in plain text.")
        elif choice == "required":
            lines.append("You must call at least one tool now.")
        else:
            lines.append(f"You must call the tool '{choice}' now.")
        return "\n".join(lines)

    def render_calls(self, message: Mapping[str, Any]) -> str:
        text = _text(message.get("content")).strip()
        calls = "".join(
            f"{self.open_tag}{json.dumps(_call_body(c), ensure_ascii=False)}{self.close_tag}"
            for c in message["tool_calls"]
        )
        return f"{text}\n{calls}" if text else calls

    def render_results(self, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        blocks = []
        for result in results:
            name = result.get("name") or "tool"
            blocks.append(f'<tool_result name="{name}">\n{_text(result.get("content"))}\n</tool_result>')
        return {"role": "user", "content": "\n".join(blocks)}

    # -- constraint --------------------------------------------------------------------------------------------------
    def constraint(self, tools: Sequence[ToolSpec], choice: str, kinds: frozenset[str]) -> Constraint | None:
        if choice == "auto":
            if "structural_tags" not in kinds:
                return None
            return Constraint(
                "structural_tags",
                tags=tuple(self.tagged_schema(t) for t in tools),
                triggers=(self.open_tag,),
            )
        if "json_schema" not in kinds:
            return None
        return Constraint("json_schema", json.dumps(self.forced_schema(tools)))

    def tagged_schema(self, tool: ToolSpec) -> TaggedSchema:
        return TaggedSchema(
            begin=f'{self.open_tag}{{"name": "{tool.name}", "arguments": ',
            schema=json.dumps(dict(tool.parameters)),
            end=f"}}{self.close_tag}",
        )

    def forced_schema(self, tools: Sequence[ToolSpec]) -> dict[str, Any]:
        """One call object, for one of ``tools``: the whole output is this JSON."""
        return {"anyOf": [_call_schema(t) for t in tools]} if len(tools) > 1 else _call_schema(tools[0])

    # -- parsing -----------------------------------------------------------------------------------------------------
    def parse(self, text: str, tools: Sequence[ToolSpec], *, forced: bool = False) -> ParsedOutput:
        by_name = {t.name: t for t in tools}
        bare = _bare_json(text)
        if bare is not None and _looks_like_calls(bare):
            return ParsedOutput("", *_read_calls(bare, json.dumps(bare), by_name))
        if forced and bare is None and text.lstrip()[:1] in ("{", "["):
            # A forced call is bare JSON; if it does not parse, generation stopped inside it (max tokens).
            error = "the forced call is incomplete JSON: generation stopped inside it (raise max_tokens?)"
            return ParsedOutput("", [], [InvalidToolCall(_guess_name(text), text.strip(), error)])
        content: list[str] = []
        calls: list[ToolCall] = []
        invalid: list[InvalidToolCall] = []
        position = 0
        while True:
            start = text.find(self.open_tag, position)
            if start < 0:
                content.append(text[position:])
                break
            content.append(text[position:start])
            body_start = start + len(self.open_tag)
            end = text.find(self.close_tag, body_start)
            body = text[body_start:] if end < 0 else text[body_start:end]
            good, bad = self.parse_unclosed(body, by_name) if end < 0 else self.parse_body(body, by_name)
            calls += good
            invalid += bad
            if end < 0:
                break
            position = end + len(self.close_tag)
        if forced and not calls and not invalid:
            invalid.append(InvalidToolCall(None, text, "a tool call was required but the output holds none"))
        return ParsedOutput(
            "".join(content).strip() if calls or invalid else "".join(content), calls, invalid
        )

    def parse_unclosed(
        self, body: str, by_name: Mapping[str, ToolSpec]
    ) -> tuple[list[ToolCall], list[InvalidToolCall]]:
        """A call whose closing tag never came: fine if its JSON is complete (models often stop right there)."""
        if _bare_json(body) is None:
            error = "the call was cut off before its closing tag"
            return [], [InvalidToolCall(_guess_name(body), body.strip(), error)]
        return self.parse_body(body, by_name)

    def parse_body(
        self, body: str, by_name: Mapping[str, ToolSpec]
    ) -> tuple[list[ToolCall], list[InvalidToolCall]]:
        try:
            data = json.loads(body)
        except ValueError as exc:
            return [], [
                InvalidToolCall(_guess_name(body), body.strip(), f"the call is not valid JSON: {exc}")
            ]
        return _read_calls(data, body.strip(), by_name)


class OtherToolProtocol(ToolProtocol):
    """Models of other families use the same JSON protocol as Phi-3."""

    family = "other"


class Phi4ToolProtocol(ToolProtocol):
    """Phi-4-mini's native format: ``<|tool|>`` definitions in the system message, ``<|tool_call|>`` output."""

    family = "phi4"
    open_tag = "<|tool_call|>"
    close_tag = "<|/tool_call|>"

    def add_tool_system_prompt(
        self, out: list[dict[str, Any]], tools: Sequence[ToolSpec], choice: str
    ) -> None:
        # The model's template renders message['tools'] between <|tool|> and <|/tool|> (its model card's format).
        listing = json.dumps([t.to_dict() for t in tools], ensure_ascii=False)
        extra = ""
        if choice == "required":
            extra = " You must call at least one tool now."
        elif choice != "auto":
            extra = f" You must call the tool '{choice}' now."
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + extra, "tools": listing}
        else:
            out.insert(
                0,
                {
                    "role": "system",
                    "content": "You are a helpful assistant with some tools." + extra,
                    "tools": listing,
                },
            )

    def render_calls(self, message: Mapping[str, Any]) -> str:
        text = _text(message.get("content")).strip()
        body = json.dumps([_call_body(c) for c in message["tool_calls"]], ensure_ascii=False)
        calls = f"{self.open_tag}{body}{self.close_tag}"
        return f"{text}\n{calls}" if text else calls

    def render_results(self, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if len(results) == 1:
            return {"role": "tool_response", "content": _text(results[0].get("content"))}
        body = [{"name": r.get("name"), "result": _text(r.get("content"))} for r in results]
        return {"role": "tool_response", "content": json.dumps(body, ensure_ascii=False)}

    def constraint(self, tools: Sequence[ToolSpec], choice: str, kinds: frozenset[str]) -> Constraint | None:
        # <|tool_call|> is one special token; a structural-tag trigger is matched on text, and a grammar may mask
        # special tokens, so "auto" relies on the model's training rather than risk forbidding its own call token.
        if choice == "auto" or "json_schema" not in kinds:
            return None
        return Constraint("json_schema", json.dumps(self.forced_schema(tools)))

    def forced_schema(self, tools: Sequence[ToolSpec]) -> dict[str, Any]:
        item = {"anyOf": [_call_schema(t) for t in tools]} if len(tools) > 1 else _call_schema(tools[0])
        return {"type": "array", "items": item, "minItems": 1}


_PROTOCOLS: dict[str, type[ToolProtocol]] = {
    "phi3": ToolProtocol,
    "phi4": Phi4ToolProtocol,
    "other": OtherToolProtocol,
}


def protocol_for(family: str) -> ToolProtocol:
    """The tool-call format for a model family ('phi3', 'phi4' or 'other')."""
    return _PROTOCOLS.get(family, OtherToolProtocol)()


# -- streaming ---------------------------------------------------------------------------------------------------
class ToolStreamParser:
    """Splits streamed output into text deltas and whole tool calls as soon as each call closes.

    Text that might be the start of a call tag is held back; output that opens with a bare JSON object or list (a
    forced call, or a native format whose tag tokens the detokenizer skipped) is held to the end and parsed whole.
    """

    def __init__(self, request: ToolRequest):
        self._request = request
        self._protocol = request.protocol
        self._active = request.tool_choice != "none"
        self._buffer = ""
        self._mode = "start"  # start -> text | call | bare
        self.result = ParsedOutput("")

    def feed(self, delta: str) -> list[str | ToolCall | InvalidToolCall]:
        """Text deltas (str) and finished calls, in order."""
        if not self._active:
            self.result.content += delta
            return [delta] if delta else []
        self._buffer += delta
        events: list[str | ToolCall | InvalidToolCall] = []
        while True:
            before = (self._mode, self._buffer)
            events += self._step()
            if (self._mode, self._buffer) == before:
                return events

    def finish(self) -> list[str | ToolCall | InvalidToolCall]:
        """At the end of generation: everything still held, parsed."""
        if not self._active:
            return []
        events: list[str | ToolCall | InvalidToolCall] = []
        if self._mode == "bare":
            parsed = self._request.parse(self._buffer)
            if parsed.content:
                events.append(parsed.content)
            events += [*parsed.tool_calls, *parsed.invalid_tool_calls]
        elif self._mode == "call":
            events += self._parse_body(self._buffer, closed=False)
        elif self._buffer:
            events.append(self._buffer)
        self._buffer = ""
        for event in events:
            self._record(event)
        if self._request.forced and not self.result.tool_calls and not self.result.invalid_tool_calls:
            missing = InvalidToolCall(
                None, self.result.content, "a tool call was required but the output holds none"
            )
            self._record(missing)
            events.append(missing)
        return events

    def _step(self) -> list[str | ToolCall | InvalidToolCall]:
        p = self._protocol
        if self._mode == "start":
            stripped = self._buffer.lstrip()
            if not stripped:
                return []
            self._mode = "bare" if stripped[0] in "[{" else "text"
            return []
        if self._mode == "text":
            start = self._buffer.find(p.open_tag)
            if start >= 0:
                text, self._buffer = self._buffer[:start], self._buffer[start + len(p.open_tag) :]
                self._mode = "call"
                return self._emit_text(text)
            keep = _partial_suffix(self._buffer, p.open_tag)
            text, self._buffer = (
                self._buffer[: len(self._buffer) - keep],
                self._buffer[len(self._buffer) - keep :],
            )
            return self._emit_text(text)
        if self._mode == "call":
            end = self._buffer.find(p.close_tag)
            if end < 0:
                return []
            body, self._buffer = self._buffer[:end], self._buffer[end + len(p.close_tag) :]
            self._mode = "text"
            return self._record_all(self._parse_body(body, closed=True))
        return []  # bare: wait for finish()

    def _emit_text(self, text: str) -> list[str | ToolCall | InvalidToolCall]:
        if text:
            self._record(text)
            return [text]
        return []

    def _parse_body(self, body: str, *, closed: bool) -> list[ToolCall | InvalidToolCall]:
        by_name = {t.name: t for t in self._request.tools}
        parse = self._protocol.parse_body if closed else self._protocol.parse_unclosed
        good, bad = parse(body, by_name)
        return [*good, *bad]

    def _record_all(self, events: list[ToolCall | InvalidToolCall]) -> list[str | ToolCall | InvalidToolCall]:
        for event in events:
            self._record(event)
        return list(events)

    def _record(self, event: str | ToolCall | InvalidToolCall) -> None:
        if isinstance(event, str):
            self.result.content += event
        elif isinstance(event, ToolCall):
            self.result.tool_calls.append(event)
        else:
            self.result.invalid_tool_calls.append(event)


# -- structured output -------------------------------------------------------------------------------------------
def json_schema_of(schema: Any) -> dict[str, Any]:
    """A JSON schema from a dict, a pydantic model class, or a TypedDict / dataclass (through pydantic)."""
    if isinstance(schema, Mapping):
        result = dict(schema)
        if result.get("type") == "function" and isinstance(result.get("function"), Mapping):
            result = dict(result["function"].get("parameters") or EMPTY_PARAMETERS)
        elif "parameters" in result and "name" in result and "properties" not in result:
            result = dict(result["parameters"])
        _check_schema(result, "the structured output")
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
    if schema is None:
        prompt = "Answer with a single JSON object and nothing else."
    else:
        prompt = (
            "Answer with a single JSON object and nothing else. It must match this JSON schema:\n"
            + json.dumps(dict(schema), ensure_ascii=False)
        )
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        out[0]["content"] = f"{_text(out[0].get('content'))}\n\n{prompt}".strip()
    else:
        out.insert(0, {"role": "system", "content": prompt})
    return out


def json_constraint(schema: Any) -> Constraint:
    """Constrain the whole output to JSON matching ``schema`` (dict, pydantic model or TypedDict)."""
    return Constraint("json_schema", json.dumps(json_schema_of(schema)))


def parse_json_output(text: str, schema: Any | None = None) -> Any:
    """The JSON value in ``text`` (a ```json fence is tolerated), validated against ``schema`` when given.

    Raises OutputParseError, with the text, when there is no JSON or it does not match.
    """
    value = _bare_json(text)
    if value is None:
        fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
        value = _bare_json(fenced.group(1)) if fenced else None
    if value is None:
        raise OutputParseError(f"The model's output is not JSON: {text[:200]!r}", text)
    if schema is not None:
        import jsonschema

        resolved = json_schema_of(schema)
        error = jsonschema.exceptions.best_match(
            jsonschema.validators.validator_for(resolved)(resolved).iter_errors(value)
        )
        if error is not None:
            raise OutputParseError(f"The model's JSON does not match the schema: {error.message}", text)
    return value


# -- helpers -----------------------------------------------------------------------------------------------------
def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False)


def _call_body(call: Mapping[str, Any]) -> dict[str, Any]:
    arguments = call.get("arguments", call.get("args", {}))
    return {"name": call["name"], "arguments": arguments}


def _call_schema(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": dict(tool.parameters)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _bare_json(text: str) -> Any | None:
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        return json.loads(stripped)
    except ValueError:
        return None


def _looks_like_calls(value: Any) -> bool:
    items = value if isinstance(value, list) else [value]
    return bool(items) and all(
        isinstance(i, dict) and "name" in i and ("arguments" in i or "parameters" in i) for i in items
    )


def _read_calls(
    data: Any, raw: str, by_name: Mapping[str, ToolSpec]
) -> tuple[list[ToolCall], list[InvalidToolCall]]:
    items = data if isinstance(data, list) else [data]
    good: list[ToolCall] = []
    bad: list[InvalidToolCall] = []
    for item in items:
        item_raw = json.dumps(item, ensure_ascii=False) if len(items) > 1 else raw
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            bad.append(InvalidToolCall(None, item_raw, 'a call must be a JSON object with a string "name"'))
            continue
        name = item["name"]
        arguments = item.get("arguments", item.get("parameters", {}))
        if isinstance(arguments, str):
            # Some models encode the arguments as a JSON string, as OpenAI's API does.
            try:
                arguments = json.loads(arguments)
            except ValueError:
                bad.append(InvalidToolCall(name, item_raw, "the arguments are a string that is not JSON"))
                continue
        tool = by_name.get(name)
        if tool is None:
            known = ", ".join(by_name) or "none"
            bad.append(
                InvalidToolCall(name, item_raw, f"there is no tool named '{name}' (bound tools: {known})")
            )
            continue
        error = validate_arguments(tool, arguments)
        if error:
            bad.append(InvalidToolCall(name, item_raw, error))
        else:
            good.append(ToolCall(name, arguments))
    return good, bad


def _guess_name(body: str) -> str | None:
    match = re.search(r'"name"\s*:\s*"([^"]+)"', body)
    return match.group(1) if match else None


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
