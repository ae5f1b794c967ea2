"""The JSON-in-tags tool protocol, for models without tool tokens (Phi-3, Phi-3.5, SmolLM2 and others).

The system prompt describes the tools; the model writes ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``,
once per call. Tool results come back as a user turn holding ``<tool_result name=...>`` blocks, because these chat
templates know only system, user and assistant (the prompt does not describe them, so the model does not imitate
them; a ``<tool_result`` it writes anyway stops the turn).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from phi3_aipc.params import Constraint, TaggedSchema
from phi3_aipc.tools.json_text import JsonRefused, bare_json, guess_name, loads_bounded
from phi3_aipc.tools.spec import (
    InvalidToolCall,
    ParsedOutput,
    ToolCall,
    ToolSpec,
    call_body,
    call_schema,
    looks_like_calls,
    read_calls,
    text_of,
)


class JsonTagsProtocol:
    """Prompt rendering, constraint and parsing for one tool-call format; subclasses change the format."""

    name = "json_tags"
    open_tag = "<tool_call>"
    close_tag = "</tool_call>"
    #: Stop strings for the turn. None here: after tool results SmolLM2 answers by echoing the result block, so a
    #: stop there would leave no answer at all; ``clean_text`` unwraps it instead.
    stop_strings: tuple[str, ...] = ()
    #: Whether text after the calls is dropped: a model that goes on after its calls invents their results.
    drops_text_after_calls = True
    #: Result markup a model may echo in its answer; the answer keeps what is inside.
    result_markup = re.compile(r"</?tool_(?:result|response)\b[^>]*>")

    #: Forced with parallel calls, whether the first try lets the model begin as it likes (see ``starts_free``).
    free_start_when_forced = False

    def starts_free(self, choice: str, parallel: bool, kinds: frozenset[str]) -> bool:
        """Whether a forced turn's first try takes 'auto''s constraint (calls held to their schema once begun, text
        allowed) under the forcing prompt; a try without a valid call is then redone forced from the first token.
        Only where measured to help (BFCL parallel) and where 'auto' is constrained at all."""
        forced = choice not in ("auto", "none")
        return self.free_start_when_forced and forced and parallel and "structural_tags" in kinds

    def clean_text(self, text: str) -> str:
        """The answer without echoed result markup (the text inside stays: it is what the model answers with)."""
        return self.result_markup.sub("", text)

    def template_tools(self, tools: Sequence[ToolSpec]) -> list[dict[str, Any]] | None:
        """Tools for the chat template's own ``tools`` argument; None: this format puts them in the prompt."""
        return None

    # -- prompt ------------------------------------------------------------------------------------------------------
    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[ToolSpec],
        choice: str,
        parallel: bool = True,
    ) -> list[dict[str, Any]]:
        """The conversation as plain chat-template messages: earlier calls and results in this format (``parallel``:
        whether one answer may hold several calls)."""
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
                out.append({"role": role, "content": text_of(message.get("content"))})
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
        # A placeholder, not a real tool: an example naming the first tool made SmolLM2 call it 31 times in 50.
        example = (
            f'{self.open_tag}{{"name": <the tool\'s name>, "arguments": {{<its arguments>}}}}{self.close_tag}'
        )
        lines = [
            "You can call these tools. Each is given as JSON with its name, description and a JSON schema of "
            "its arguments:",
            listing,
            "",
            f'To call a tool, write {self.open_tag}, then a JSON object with the tool\'s "name" and its '
            f'"arguments", then {self.close_tag}. For example: {example}',
            # Nothing here says how results look: a model told so writes invented results itself.
            "To call several tools, write one block per call, then stop.",
        ]
        if choice == "auto":
            lines.append("If no tool is needed, answer in plain text.")
        elif choice == "required":
            lines.append("You must call at least one tool now.")
        else:
            lines.append(f"You must call the tool '{choice}' now.")
        return "\n".join(lines)

    def render_calls(self, message: Mapping[str, Any]) -> str:
        text = text_of(message.get("content")).strip()
        calls = "".join(
            f"{self.open_tag}{json.dumps(call_body(c), ensure_ascii=False)}{self.close_tag}"
            for c in message["tool_calls"]
        )
        return f"{text}\n{calls}" if text else calls

    def render_results(self, results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        blocks = []
        for result in results:
            name = result.get("name") or "tool"
            blocks.append(f'<tool_result name="{name}">\n{text_of(result.get("content"))}\n</tool_result>')
        return {"role": "user", "content": "\n".join(blocks)}

    # -- constraint --------------------------------------------------------------------------------------------------
    def constraint(
        self, tools: Sequence[ToolSpec], choice: str, kinds: frozenset[str], parallel: bool = True
    ) -> Constraint | None:
        """The strongest constraint ``kinds`` allows: tagged schemas for 'auto'; forced, one call (or, with
        ``parallel``, one call or a list of one or more)."""
        if choice == "auto":
            if "structural_tags" not in kinds:
                return None
            return Constraint(
                "structural_tags",
                tags=tuple(self.tagged_schema(t) for t in tools),
                triggers=(self.open_tag,),
                stop_after_first=not parallel,
            )
        if "json_schema" not in kinds:
            return None
        return Constraint("json_schema", json.dumps(self.forced_schema(tools, parallel)))

    def tagged_schema(self, tool: ToolSpec) -> TaggedSchema:
        return TaggedSchema(
            begin=f'{self.open_tag}{{"name": "{tool.name}", "arguments": ',
            schema=json.dumps(dict(tool.parameters)),
            end=f"}}{self.close_tag}",
        )

    def forced_schema(self, tools: Sequence[ToolSpec], parallel: bool = False) -> dict[str, Any]:
        """One call object for one of ``tools`` (with ``parallel``, or a list of one or more): the whole output."""
        one = {"anyOf": [call_schema(t) for t in tools]} if len(tools) > 1 else call_schema(tools[0])
        if not parallel:
            return one
        return {"anyOf": [one, {"type": "array", "items": one, "minItems": 1}]}

    # -- parsing (used by ToolStreamParser, the one parser for whole and streamed answers) ---------------------------
    def parse_bare(self, text: str, by_name: Mapping[str, ToolSpec], *, forced: bool) -> ParsedOutput | None:
        """An answer that is bare JSON (a forced call, or tags the detokenizer skipped), or None if it is not."""
        value = bare_json(text)
        if value is not None and looks_like_calls(value):
            return ParsedOutput("", *read_calls(value, text.strip(), by_name))
        if forced and value is None and text.lstrip()[:1] in ("{", "["):
            return ParsedOutput(
                "", [], [InvalidToolCall(guess_name(text), text.strip(), _why_not_json(text))]
            )
        return None

    def parse_body(
        self, body: str, by_name: Mapping[str, ToolSpec]
    ) -> tuple[list[ToolCall], list[InvalidToolCall]]:
        """The JSON between the open and close tags."""
        try:
            data = loads_bounded(body)
        except JsonRefused as exc:
            return [], [InvalidToolCall(guess_name(body), body.strip(), f"the call is refused: {exc}")]
        except ValueError as exc:
            return [], [InvalidToolCall(guess_name(body), body.strip(), f"the call is not valid JSON: {exc}")]
        return read_calls(data, body.strip(), by_name)

    def parse_unclosed(
        self, body: str, by_name: Mapping[str, ToolSpec]
    ) -> tuple[list[ToolCall], list[InvalidToolCall]]:
        """A call whose closing tag never came: fine if its JSON is complete (models often stop right there)."""
        if bare_json(body) is None:
            error = "the call was cut off before its closing tag"
            return [], [InvalidToolCall(guess_name(body), body.strip(), error)]
        return self.parse_body(body, by_name)


def _why_not_json(text: str) -> str:
    """Why a forced call's bare JSON did not parse: refused by a bound, or cut off / malformed."""
    try:
        loads_bounded(text.strip())
    except JsonRefused as exc:
        return f"the forced call is refused: {exc}"
    except ValueError as exc:
        return f"the forced call is incomplete or invalid JSON ({exc}); if generation stopped inside it, raise max_tokens"
    return "the forced call is not a call object"
