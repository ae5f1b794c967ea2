"""Tool formats a model's own chat template knows: definitions go through the template's ``tools`` block, earlier
calls are assistant ``tool_calls`` and results are ``tool`` messages, so the model sees exactly what it was trained on.

One class per format (a row of ``phi3_aipc.tools.protocols.FORMATS``); :func:`detect_format` picks it from the
template's text. We parse the output ourselves rather than with OpenVINO GenAI's tool parsers
(``Llama3JsonToolParser`` ...): the chat turn serves every backend and must not import one, and our parser already
streams, validates arguments against their schema and bounds the JSON it reads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from phi3_aipc.params import Constraint, TaggedSchema
from phi3_aipc.tools.protocols.json_tags import JsonTagsProtocol
from phi3_aipc.tools.spec import ToolSpec, call_body, call_schema, text_of


class TemplateToolsProtocol(JsonTagsProtocol):
    """The template renders tools, calls and results; subclasses say what a call looks like."""

    name = "template"
    #: The model's own call opener as its template writes it (Hermes: the tag, then a newline, then the JSON).
    call_begin = ""
    call_end = ""
    #: The key that holds a call's arguments in this format ("arguments", Llama 3.x: "parameters").
    arguments_key = "arguments"

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[ToolSpec],
        choice: str,
        parallel: bool = True,
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for message in messages:
            role = message.get("role")
            if role == "tool":
                out.append(
                    {
                        "role": "tool",
                        "content": text_of(message.get("content")),
                        "tool_call_id": self.call_id(message.get("tool_call_id") or ""),
                        "name": message.get("name") or "",
                    }
                )
            elif role == "assistant" and message.get("tool_calls"):
                out.append(
                    {
                        "role": "assistant",
                        "content": text_of(message.get("content")),
                        "tool_calls": [self.template_call(c) for c in message["tool_calls"]],
                    }
                )
            else:
                out.append({"role": role, "content": text_of(message.get("content"))})
        if tools and choice not in ("auto", "none"):
            self.add_forcing_instruction(out, choice, parallel)
        return out

    def add_forcing_instruction(self, out: list[dict[str, Any]], choice: str, parallel: bool = True) -> None:
        # Only when a call is forced: in 'auto' the template's own system block is left exactly as trained.
        line = (
            "You must call at least one tool now."
            if choice == "required"
            else f"You must call '{choice}' now."
        )
        if parallel:
            # Forced, the constraint allows one or more calls, but the model ends after its first unless told
            # that a request for several things takes several calls (BFCL parallel, Qwen2.5-Coder-0.5B).
            line += (
                " If the request asks for several things, make one call for each of them, "
                f"each in its own {self.open_tag} block."
            )
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{line}".strip()}
        else:
            out.insert(0, {"role": "system", "content": line})

    def template_call(self, call: Mapping[str, Any]) -> dict[str, Any]:
        """An earlier call in the OpenAI shape chat templates read (``function.arguments`` as a dict)."""
        body = call_body(call)
        return {
            "id": self.call_id(call.get("id") or ""),
            "type": "function",
            "function": {"name": body["name"], "arguments": body["arguments"]},
        }

    def template_tools(self, tools: Sequence[ToolSpec]) -> list[dict[str, Any]] | None:
        return [{"type": "function", "function": t.to_dict()} for t in tools] or None

    def call_id(self, given: str) -> str:
        """A call's id as the template takes it (the same for the call and its result, so they still match)."""
        return given

    # -- constraint --------------------------------------------------------------------------------------------------
    def tagged_schema(self, tool: ToolSpec) -> TaggedSchema:
        return TaggedSchema(
            begin=f'{self.call_begin}{{"name": "{tool.name}", "{self.arguments_key}": ',
            schema=json.dumps(dict(tool.parameters)),
            end=f"}}{self.call_end}",
        )


class HermesProtocol(TemplateToolsProtocol):
    """``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``: Qwen2.5/3, SmolLM3, Hermes."""

    name = "hermes"
    open_tag = "<tool_call>"
    close_tag = "</tool_call>"
    call_begin = "<tool_call>\n"
    call_end = "\n</tool_call>"
    # An invented result starts like the template's own result block (or ours): stop there.
    stop_strings = ("<tool_response>", "<tool_result>")
    # Forced from the first token, Qwen2.5-Coder-0.5B ends after one call: BFCL parallel, forced, 33.3% so and
    # 46.7% starting free (benchmarks/RESULTS.md, "Tool calls on BFCL").
    free_start_when_forced = True

    def constraint(
        self, tools: Sequence[ToolSpec], choice: str, kinds: frozenset[str], parallel: bool = True
    ) -> Constraint | None:
        """'auto': free text until the model writes its own opener, then a real tool with schema-valid arguments;
        forced: only calls (one, or one or more with parallel calls), each in the template's shape."""
        if "structural_tags" not in kinds:
            return None
        return Constraint(
            "structural_tags",
            tags=tuple(self.tagged_schema(t) for t in tools),
            triggers=(self.open_tag,),
            at_least_one=choice != "auto",
            stop_after_first=not parallel,
            separator="\n",
            # Text after calls is dropped by the parser: a model that closes a code fence or writes a bare
            # third call instead of its opener (Qwen2.5-Coder does) is held to calls, so a call it means is kept.
            end_after_tags=True,
        )


class Llama3JsonProtocol(TemplateToolsProtocol):
    """Llama 3.1-3.3: a bare ``{"name": ..., "parameters": {...}}`` object (or after ``<|python_tag|>``).

    Unverified on a real Llama here (no such model offline): the rendering follows the published templates.
    """

    name = "llama3_json"
    open_tag = "<|python_tag|>"
    close_tag = "<|eom_id|>"
    arguments_key = "parameters"
    stop_strings = ("<|start_header_id|>ipython",)

    def constraint(
        self, tools: Sequence[ToolSpec], choice: str, kinds: frozenset[str], parallel: bool = True
    ) -> Constraint | None:
        # The opener is a bare '{', which also starts a plain JSON answer: 'auto' relies on the model's training.
        if choice == "auto" or "json_schema" not in kinds:
            return None
        schemas = [_with_arguments_key(call_schema(t), self.arguments_key) for t in tools]
        return Constraint("json_schema", json.dumps({"anyOf": schemas} if len(schemas) > 1 else schemas[0]))


class MistralProtocol(TemplateToolsProtocol):
    """Mistral: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]``. ``[TOOL_CALLS]`` is a control token the
    detokenizer skips, so the answer reads as a bare JSON list. Unverified on a real Mistral here; its templates
    insist on 9-character alphanumeric call ids (``call_id``)."""

    name = "mistral"
    open_tag = "[TOOL_CALLS]"
    close_tag = "</s>"
    stop_strings = ("[TOOL_RESULTS]",)

    def call_id(self, given: str) -> str:
        # Mistral's templates raise unless every call id (and each result's tool_call_id) is 9 alphanumerics:
        # ours are 'call_' plus 24 hex digits, so each id maps to 9 hex digits of its hash, the same everywhere.
        if len(given) == 9 and given.isascii() and given.isalnum():
            return given
        return hashlib.sha256(given.encode("utf-8")).hexdigest()[:9]

    def constraint(
        self, tools: Sequence[ToolSpec], choice: str, kinds: frozenset[str], parallel: bool = True
    ) -> Constraint | None:
        # The opener is a control token; a grammar over text may mask it, so 'auto' is left to the model.
        if choice == "auto" or "json_schema" not in kinds:
            return None
        item = {"anyOf": [call_schema(t) for t in tools]} if len(tools) > 1 else call_schema(tools[0])
        schema: dict[str, Any] = {"type": "array", "items": item, "minItems": 1}
        if not parallel:
            schema["maxItems"] = 1
        return Constraint("json_schema", json.dumps(schema))


def _with_arguments_key(schema: dict[str, Any], key: str) -> dict[str, Any]:
    properties = dict(schema["properties"])
    properties[key] = properties.pop("arguments")
    return {**schema, "properties": properties, "required": ["name", key]}


def detect_format(template: str | None) -> str:
    """The tool format a chat template speaks, from its text; 'json_tags' when it renders no tools."""
    if not template or "tools" not in template:
        return "json_tags"
    if "<tool_call>" in template:
        return HermesProtocol.name
    if "[TOOL_CALLS]" in template:
        return MistralProtocol.name
    if "<|python_tag|>" in template or ("ipython" in template and "parameters" in template):
        return Llama3JsonProtocol.name
    return "json_tags"
