"""The one tool-call parser, for whole and streamed answers alike, so both paths reach the same calls."""

from __future__ import annotations

import re
from collections.abc import Sequence

from phi3_aipc.tools.protocols import JsonTagsProtocol
from phi3_aipc.tools.spec import InvalidToolCall, ParsedOutput, ToolCall, ToolSpec

ParserEvent = str | ToolCall | InvalidToolCall


class ToolStreamParser:
    """Splits output into text deltas and whole tool calls as soon as each call closes.

    Text that might be the start of a call tag is held back; output that opens with a bare JSON object or list (a
    forced call, or a native format whose tag tokens the detokenizer skipped) is held to the end and parsed whole.
    A whole answer is parsed by feeding it at once and calling :meth:`finish`.
    """

    def __init__(self, protocol: JsonTagsProtocol, tools: Sequence[ToolSpec], tool_choice: str):
        self.protocol = protocol
        self._by_name = {t.name: t for t in tools}
        self._active = tool_choice != "none"
        self._forced = tool_choice not in ("auto", "none")
        self._buffer = ""
        self._mode = "start"  # start -> text | call | bare
        self.result = ParsedOutput("")

    def feed(self, delta: str) -> list[ParserEvent]:
        """Text deltas (str) and finished calls, in order."""
        if not self._active:
            self.result.content += delta
            return [delta] if delta else []
        self._buffer += delta
        events: list[ParserEvent] = []
        while True:
            before = (self._mode, self._buffer)
            events += self._step()
            if (self._mode, self._buffer) == before:
                return events

    def finish(self) -> list[ParserEvent]:
        """At the end of generation: everything still held, parsed."""
        if not self._active:
            return []
        events: list[ParserEvent] = []
        if self._mode == "bare":
            events += self._finish_bare()
        elif self._mode == "call":
            events += self._parse_call(self._buffer, closed=False)
        elif self._buffer and not (self._has_calls() and self.protocol.drops_text_after_calls):
            events.append(self._buffer)
        self._buffer = ""
        for event in events:
            self._record(event)
        if self._forced and not self._has_calls():
            missing = InvalidToolCall(
                None, self.result.content, "a tool call was required but the output holds none"
            )
            self._record(missing)
            events.append(missing)
        return events

    def _has_calls(self) -> bool:
        return bool(self.result.tool_calls or self.result.invalid_tool_calls)

    def _finish_bare(self) -> list[ParserEvent]:
        parsed = self.protocol.parse_bare(self._buffer, self._by_name, forced=self._forced)
        if parsed is None:
            return [self._buffer]
        return [*parsed.tool_calls, *parsed.invalid_tool_calls]

    def _step(self) -> list[ParserEvent]:
        if self._mode == "start":
            stripped = self._buffer.lstrip()
            if stripped:
                self._mode = "bare" if stripped[0] in "[{" else "text"
            return []
        if self._mode == "text":
            return self._step_text()
        if self._mode == "call":
            return self._step_call()
        return []  # bare: wait for finish()

    def _step_text(self) -> list[ParserEvent]:
        tag = self.protocol.open_tag
        start = self._buffer.find(tag)
        if start >= 0:
            text, self._buffer = self._buffer[:start], self._buffer[start + len(tag) :]
            self._mode = "call"
            return self._emit_text(text)
        keep = _partial_suffix(self._buffer, tag)
        cut = len(self._buffer) - keep
        text, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return self._emit_text(text)

    def _step_call(self) -> list[ParserEvent]:
        end = self._buffer.find(self.protocol.close_tag)
        if end < 0:
            return []
        body, self._buffer = self._buffer[:end], self._buffer[end + len(self.protocol.close_tag) :]
        self._mode = "text"
        events = self._parse_call(body, closed=True)
        for event in events:
            self._record(event)
        return events

    def _emit_text(self, text: str) -> list[ParserEvent]:
        if not text:
            return []
        if self._has_calls() and self.protocol.drops_text_after_calls:
            # A native-format model that goes on after its calls invents their results: that is no answer.
            return []
        self._record(text)
        return [text]

    def _parse_call(self, body: str, *, closed: bool) -> list[ParserEvent]:
        parse = self.protocol.parse_body if closed else self.protocol.parse_unclosed
        good, bad = parse(body, self._by_name)
        return [*good, *bad]

    def _record(self, event: ParserEvent) -> None:
        if isinstance(event, str):
            self.result.content += event
        elif isinstance(event, ToolCall):
            self.result.tool_calls.append(event)
        else:
            self.result.invalid_tool_calls.append(event)


class MarkupFilter:
    """Takes echoed result markup (``<tool_result ...>``, ``</tool_response>``) out of streamed text, holding back
    a piece that may be the start of such a tag, so streamed and whole answers read the same."""

    STARTS = ("<tool_result", "</tool_result", "<tool_response", "</tool_response")

    def __init__(self, pattern: re.Pattern[str]):
        self._pattern = pattern
        self._held = ""

    def push(self, text: str) -> str:
        text = self._held + text
        self._held = ""
        cut = text.rfind("<")
        if cut >= 0 and ">" not in text[cut:] and self._may_open(text[cut:]):
            text, self._held = text[:cut], text[cut:]
        return self._pattern.sub("", text)

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self._pattern.sub("", text)

    def _may_open(self, rest: str) -> bool:
        return any(s.startswith(rest) or rest.startswith(s) for s in self.STARTS)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0
