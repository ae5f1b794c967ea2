"""Phi-4-mini's native tool format: ``<|tool|>`` definitions in the system message, ``<|tool_call|>`` output."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from phi3_aipc.params import Constraint
from phi3_aipc.tools.protocols.json_tags import JsonTagsProtocol
from phi3_aipc.tools.spec import ToolSpec, call_body, call_schema, text_of


class Phi4Protocol(JsonTagsProtocol):
    name = "phi4"
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
            system = {"role": "system", "content": "You are a helpful assistant with some tools." + extra}
            out.insert(0, {**system, "tools": listing})

    def render_calls(self, message: Mapping[str, Any]) -> str:
        text = text_of(message.get("content")).strip()
        body = json.dumps([call_body(c) for c in message["tool_calls"]], ensure_ascii=False)
        calls = f"{self.open_tag}{body}{self.close_tag}"
        return f"{text}\n{calls}" if text else calls

    def render_results(self, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if len(results) == 1:
            return {"role": "tool_response", "content": text_of(results[0].get("content"))}
        body = [{"name": r.get("name"), "result": text_of(r.get("content"))} for r in results]
        return {"role": "tool_response", "content": json.dumps(body, ensure_ascii=False)}

    stop_strings = ()  # unchanged from before: Phi-4-mini stops at its own end token

    def constraint(
        self, tools: Sequence[ToolSpec], choice: str, kinds: frozenset[str], parallel: bool = True
    ) -> Constraint | None:
        # <|tool_call|> is one special token; a structural-tag trigger is matched on text, and a grammar may mask
        # special tokens, so "auto" relies on the model's training rather than risk forbidding its own call token.
        if choice == "auto" or "json_schema" not in kinds:
            return None
        return Constraint("json_schema", json.dumps(self.forced_schema(tools, parallel)))

    def forced_schema(self, tools: Sequence[ToolSpec], parallel: bool = True) -> dict[str, Any]:
        item = {"anyOf": [call_schema(t) for t in tools]} if len(tools) > 1 else call_schema(tools[0])
        schema: dict[str, Any] = {"type": "array", "items": item, "minItems": 1}
        if not parallel:
            schema["maxItems"] = 1
        return schema
