"""One chat turn: the single path from messages, tools and a response format to text, calls and a result.

Every front door (LangChain, LlamaIndex, the server) maps its own types onto a :class:`ChatTurn` and maps the
neutral events back; none of them builds prompts, picks constraints or parses calls. So one policy holds at every
door:

- messages are checked: roles are system, user, assistant or tool; content is a string (or None on an assistant
  message that only calls tools). Anything else is refused with a clear error rather than rendered as a repr.
- message content is data, not control: text that spells one of the model's control tokens (``<|end|>``,
  ``<|im_start|>``) gets a zero-width space after its first character, so the tokenizer reads it as plain text and a
  retrieved document cannot forge a system turn;
- decoding is constrained where the backend can (tool calls, structured output); where it cannot, the turn falls back
  to the prompt and validation alone, and says so in ``TurnResult.constrained``;
- a call whose arguments fail validation is an :class:`InvalidToolCall` on every path, streamed or not, and is never
  surfaced as a valid call; with ``parallel_tool_calls=False`` every valid call after the first is invalid too;
- structured output accepts a ```json fence, and its parse error says when the output was cut off;
- a conversation that does not fit the window is refused (``context_overflow="error"``, the default) or trimmed
  to fit (``"trim"``: oldest turns first, then long tool results and retrieved context from the middle; see
  ``phi3_aipc.context``), and ``TurnResult.trimmed`` says what went.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any

from phi3_aipc.context import ContextOverflow, TrimReport, check_policy, fit_messages, prompt_budget
from phi3_aipc.errors import InvalidParameterError
from phi3_aipc.images import has_images, place_images, prompt_with_images, refuse_images_unless_taken
from phi3_aipc.messages import check_messages, control_spellings, neutralise_messages, neutralise_value
from phi3_aipc.params import Constraint, GenerationParams, GenerationResult
from phi3_aipc.tools.protocols import protocol_for
from phi3_aipc.tools.spec import (
    MAX_CALLS_PER_ANSWER,
    InvalidToolCall,
    ParsedOutput,
    ToolCall,
    ToolSpec,
    normalise_tool_choice,
    to_tool_specs,
)
from phi3_aipc.tools.stream import MarkupFilter, ToolStreamParser
from phi3_aipc.tools.structured import OutputParseError, parse_json_output, with_json_instructions

#: Where async turns render, count and trim their prompts (ChatTurn.aplan).
_planner = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="phi3-aipc-plan")
#: Text that does not open with '<' (markup); its end leaves the model's end-of-turn token free.
ANSWER_NOT_MARKUP = r"[^<\s][\s\S]*"


@dataclass(frozen=True)
class JsonFormat:
    """Answer with JSON: matching ``schema`` when given, else any JSON object."""

    schema: Mapping[str, Any] | None = None


# -- events ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TextDelta:
    """Text for the user, as it arrives (tool-call markup is never part of it)."""

    text: str


@dataclass
class TurnResult:
    """Everything one turn produced."""

    content: str
    tool_calls: list[ToolCall]
    invalid_tool_calls: list[InvalidToolCall]
    generation: GenerationResult
    #: Whether decoding was constrained (False on a backend without constraints, or with constrained=False).
    constrained: bool
    #: With a response format: the parsed JSON value, or why there is none.
    structured: Any = None
    structured_error: OutputParseError | None = None
    #: With context_overflow="trim": what was dropped and cut to make the prompt fit (None when nothing was).
    trimmed: TrimReport | None = None
    #: Calls were forced, and this try let the model begin as it liked (see ``ChatTurn._force_instead``).
    free_start: bool = False

    @property
    def finish_reason(self) -> str:
        """'tool_calls' when the answer holds valid calls, else the engine's reason ('stop', 'length', ...)."""
        return "tool_calls" if self.tool_calls else self.generation.finish_reason


@dataclass(frozen=True)
class TurnDone:
    """The last event of a streamed turn."""

    result: TurnResult


TurnEvent = TextDelta | ToolCall | InvalidToolCall | TurnDone


# -- the turn --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatTurn:
    """One request to the model. Build it from neutral messages; run it on an engine, whole or streamed.

    ``messages`` are dicts: ``{"role": "system" | "user" | "assistant" | "tool", "content": str}``; an assistant
    message may carry ``"tool_calls": [{"id", "name", "arguments": dict}]``; a tool result carries
    ``"tool_call_id"`` and ``"name"``. ``tools`` are ToolSpecs or OpenAI-style dicts.
    """

    messages: Sequence[Mapping[str, Any]]
    tools: Sequence[ToolSpec | Mapping[str, Any]] = ()
    tool_choice: str | None = None
    response_format: JsonFormat | None = None
    params: GenerationParams = field(default_factory=GenerationParams)
    parallel_tool_calls: bool = True
    #: Constrain decoding where the backend can; False relies on the prompt and validation alone.
    constrained: bool = True
    #: A conversation that does not fit the window: "error" refuses it, "trim" drops and shortens to fit.
    context_overflow: ContextOverflow = "error"

    # Checked once, at construction: every plan reuses them.
    _checked: list[dict[str, Any]] = field(init=False, repr=False, compare=False)
    _specs: list[ToolSpec] = field(init=False, repr=False, compare=False)
    _choice: str = field(init=False, repr=False, compare=False)
    #: Set on the turn that answers instead of repeating a call (see ``_answer_instead``).
    _answering: bool = field(init=False, repr=False, compare=False, default=False)
    #: Set on the turn that forces calls from the first token after a free start made none (``_force_instead``).
    _forcing: bool = field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self) -> None:
        # Refuse bad input now, before a model loads (a first NPU compile takes minutes).
        specs = to_tool_specs(self.tools)
        choice = normalise_tool_choice(self.tool_choice, specs)
        if self.response_format is not None and choice != "none":
            raise InvalidParameterError("Use either tools or a response format in one call, not both.")
        check_policy(self.context_overflow)
        object.__setattr__(self, "_checked", check_messages(self.messages))
        object.__setattr__(self, "_specs", specs)
        object.__setattr__(self, "_choice", choice)

    def plan(self, engine: Any) -> TurnPlan:
        """The prompt, the constraint and the parser for ``engine``'s model family and backend (and, with
        context_overflow="trim", its window)."""
        family, kinds = engine.model_family, engine.constraint_kinds
        # The template's text picks the tool format (a remote engine has none: the server's model decides).
        template = getattr(engine, "chat_template", None)
        tokens = control_spellings(engine.special_tokens)
        messages = neutralise_messages(self._checked, tokens)
        images: list[Any] = []
        if has_images(messages):
            refuse_images_unless_taken(engine)
            messages, images = place_images(messages)
        budget = prompt_budget(engine, self.params.max_new_tokens)
        if self.context_overflow != "trim" or budget is None:
            plan = self._plan_messages(messages, family, kinds, template, tokens)
            plan.images = images
            return plan

        def count(candidate: list[dict[str, Any]]) -> int:
            planned = self._plan_messages(candidate, family, kinds, template, tokens)
            return engine.count_tokens(planned.render(engine))

        fitted, report = fit_messages(messages, count, budget, engine.count_tokens)
        plan = self._plan_messages(fitted, family, kinds, template, tokens)
        plan.trimmed = report if report.changed else None
        plan.messages = fitted
        plan.images = images  # render() keeps those whose tags survived the trim
        return plan

    def plan_for(
        self,
        model_family: str,
        constraint_kinds: Iterable[str] = (),
        special_tokens: Iterable[str] = (),
        chat_template: str | None = None,
    ) -> TurnPlan:
        """``plan`` from the facts it needs: the model family, the backend's constraint kinds, control tokens and
        the chat template's source (which picks the tool format)."""
        tokens = control_spellings(special_tokens)
        return self._plan_messages(
            neutralise_messages(self._checked, tokens), model_family, constraint_kinds, chat_template, tokens
        )

    def _plan_messages(
        self,
        messages: list[dict[str, Any]],
        model_family: str,
        constraint_kinds: Iterable[str],
        chat_template: str | None = None,
        tokens: Sequence[str] = (),
    ) -> TurnPlan:
        choice = self._choice
        protocol = protocol_for(model_family, chat_template)
        shown = [] if choice == "none" else [t for t in self._specs if choice in ("auto", "required", t.name)]
        # The prompt shows the tools with control-token text broken; the constraint and parser keep them as given.
        shown_in_prompt = [_neutral_spec(t, tokens) for t in shown]
        parallel = self.parallel_tool_calls
        prompt = protocol.render(messages, shown_in_prompt, choice, parallel)
        kinds = frozenset(constraint_kinds) if self.constrained else frozenset()
        free_start = bool(shown) and not self._forcing and protocol.starts_free(choice, parallel, kinds)
        constraint_choice = "auto" if free_start else choice  # the forcing prompt, 'auto''s constraint
        constraint = protocol.constraint(shown, constraint_choice, kinds, parallel) if shown else None
        if self._answering and "regex" in kinds:
            # The answer must not open with markup: given no tools, the model echoes the <tool_response> block.
            constraint = Constraint("regex", ANSWER_NOT_MARKUP)
        if self.response_format is not None:
            schema = self.response_format.schema
            prompt = with_json_instructions(prompt, neutralise_value(schema, tokens) if tokens else schema)
            constraint = _json_constraint(schema, kinds)
        wanted = bool(shown) or self.response_format is not None
        parser = ToolStreamParser(protocol, shown, choice)
        plan = TurnPlan(
            self, prompt, constraint, parser, choice, shown, constrained=not wanted or constraint is not None
        )
        plan.messages = messages
        plan.free_start = free_start
        if self._answering:  # no call now, and no invented result either
            plan.params = self.params.with_stop((*protocol.stop_strings, protocol.open_tag))
        if shown:
            plan.template_tools = protocol.template_tools(shown_in_prompt)
            # A model that goes on after its calls writes invented results: stop where they would begin.
            plan.params = self.params.with_stop(protocol.stop_strings)
        return plan

    # -- running -------------------------------------------------------------------------------------------------
    def run(self, engine: Any) -> TurnResult:
        result = self._run_once(engine)
        again = self._answer_instead(result) or self._force_instead(result)
        return again._run_once(engine) if again is not None else result

    async def arun(self, engine: Any) -> TurnResult:
        result = await self._arun_once(engine)
        again = self._answer_instead(result) or self._force_instead(result)
        return await again._arun_once(engine) if again is not None else result

    def stream(self, engine: Any) -> Iterator[TurnEvent]:
        """Events as they happen; the last is TurnDone. Closing the iterator early cancels the generation.

        Right after tool results, events are held to the end of the answer: a repeated call is replaced by an answer
        (see ``_answer_instead``) before anything reaches the caller. So are a forced turn's that starts free (an answer
        of calls only): a free start that made none is redone forced (``_force_instead``)."""
        plan = self.plan(engine)
        if not self._may_retry(plan):
            yield from self._stream_once(engine, plan)
            return
        events = list(self._stream_once(engine, plan))
        again = self._retry(events)
        yield from again._stream_once(engine) if again is not None else events

    async def astream(self, engine: Any) -> AsyncIterator[TurnEvent]:
        # aclosing: a reader that stops (a break, a dropped stream) closes the layers below in the same aclose(), so
        # the generation is cancelled now, not after the event loop finalises each abandoned generator in turn.
        plan = await self.aplan(engine)
        if not self._may_retry(plan):
            async with aclosing(self._astream_once(engine, plan)) as events:
                async for event in events:
                    yield event
            return
        events = [event async for event in self._astream_once(engine, plan)]
        again = self._retry(events)
        if again is not None:
            async with aclosing(again._astream_once(engine)) as retried:
                async for event in retried:
                    yield event
            return
        for event in events:
            yield event

    # -- a second try: a repeated call is answered instead; forced calls a free start did not make are forced -----
    def _may_retry(self, plan: TurnPlan) -> bool:
        """Whether this try's events must be held: it may be replaced by a second try."""
        return plan.free_start or bool(self._just_answered())

    def _retry(self, events: list[TurnEvent]) -> ChatTurn | None:
        if not events or not isinstance(events[-1], TurnDone):
            return None
        result = events[-1].result
        return self._answer_instead(result) or self._force_instead(result)

    def _force_instead(self, result: TurnResult) -> ChatTurn | None:
        """Forced with parallel calls, the first try uses the forcing prompt but lets the model begin as it likes
        (a call, once begun, is still held to its schema; ``starts_free`` of the protocol says where): forced from
        the first token, Qwen2.5-Coder-0.5B ended after one call where BFCL's parallel entries want several. A try
        that made no valid call is run again with the call forced from the first token."""
        if not result.free_start or result.tool_calls:
            return None
        again = replace(self)
        object.__setattr__(again, "_forcing", True)
        return again

    def _just_answered(self) -> list[tuple[str, str]]:
        """The calls of the last assistant turn whose results follow it, as (name, arguments JSON)."""
        if self._choice != "auto" or not self._checked or self._checked[-1].get("role") != "tool":
            return []
        for message in reversed(self._checked):
            if message.get("role") == "assistant":
                return [_call_key(c.get("name"), c.get("arguments")) for c in message.get("tool_calls") or ()]
        return []

    def _answer_instead(self, result: TurnResult) -> ChatTurn | None:
        """With 'auto' right after tool results, a small model often calls the same tool with the same arguments
        again (Qwen2.5-Coder-0.5B does, through its own template, and an agent then loops to its recursion limit).
        Those results are already in the conversation, so the turn is generated once more without tools: the
        model answers from them. A call with other arguments, or another tool, is kept."""
        answered = self._just_answered()
        if not answered or not result.tool_calls or result.invalid_tool_calls:
            return None
        if any(_call_key(c.name, c.arguments) not in answered for c in result.tool_calls):
            return None
        again = replace(self, tool_choice="none")
        object.__setattr__(again, "_answering", True)
        return again

    def _run_once(self, engine: Any) -> TurnResult:
        plan = self.plan(engine)
        generation = engine.generate(plan.render(engine), plan.params, constraint=plan.constraint)
        plan.feed(generation.text)
        return plan.finish(generation)

    async def aplan(self, engine: Any) -> TurnPlan:
        """``plan`` off the event loop: rendering and counting a long conversation (and trimming it) takes seconds,
        and other requests on the loop would stall meanwhile. On a pool of its own, not asyncio's default one,
        which callers may have filled (see ``phi3_aipc.engine.cache``)."""
        return await asyncio.wrap_future(_planner.submit(self.plan, engine))

    async def _arun_once(self, engine: Any) -> TurnResult:
        plan = await self.aplan(engine)
        generation = await engine.agenerate(plan.render(engine), plan.params, constraint=plan.constraint)
        plan.feed(generation.text)
        return plan.finish(generation)

    def _stream_once(self, engine: Any, plan: TurnPlan | None = None) -> Iterator[TurnEvent]:
        plan = plan or self.plan(engine)
        stream = engine.stream(plan.render(engine), plan.params, constraint=plan.constraint)
        try:
            for delta in stream:
                yield from plan.feed(delta)
        finally:
            stream.close()
        yield from plan.finish_events(stream.result)

    async def _astream_once(self, engine: Any, plan: TurnPlan | None = None) -> AsyncIterator[TurnEvent]:
        plan = plan or await self.aplan(engine)
        stream = engine.astream(plan.render(engine), plan.params, constraint=plan.constraint)
        try:
            async for delta in stream:
                for event in plan.feed(delta):
                    yield event
        finally:
            await stream.aclose()
        for event in plan.finish_events(stream.result):
            yield event


class TurnPlan:
    """A planned turn: what the engine is given, and the state that turns its text into events."""

    def __init__(
        self,
        turn: ChatTurn,
        prompt: list[dict[str, Any]],
        constraint: Constraint | None,
        parser: ToolStreamParser,
        tool_choice: str,
        tools: list[ToolSpec],
        *,
        constrained: bool,
    ):
        self.turn = turn
        self.prompt = prompt
        self.constraint = constraint
        self.tool_choice = tool_choice
        #: The tools the model is shown (only the named one when tool_choice names one).
        self.tools = tools
        self.constrained = constrained
        #: What context_overflow="trim" removed from the messages (None when nothing was).
        self.trimmed: TrimReport | None = None
        #: The checked messages the prompt was rendered from (after any trim), before the tool protocol's markup.
        self.messages: list[dict[str, Any]] = []
        #: Tools for the chat template's own ``tools`` argument (formats the template knows), else None.
        self.template_tools: list[dict[str, Any]] | None = None
        #: Calls are forced but this try's constraint lets the model begin as it likes (``ChatTurn._force_instead``).
        self.free_start = False
        #: The turn's parameters with the format's stop strings added.
        self.params: GenerationParams = turn.params
        #: The images of the messages, in the order of their tags (empty for a text-only turn).
        self.images: list[Any] = []
        self._parser = parser
        self._markup = MarkupFilter(parser.protocol.result_markup)
        self._calls: list[ToolCall] = []
        self._invalid: list[InvalidToolCall] = []

    def render(self, engine: Any) -> str:
        """The prompt text: the chat template over the planned messages (and tools, for formats it knows); with
        images, an ``ImagePrompt`` carrying them."""
        if self.template_tools:
            return prompt_with_images(engine.render(self.prompt, self.template_tools), self.images)
        return prompt_with_images(engine.render(self.prompt), self.images)

    def feed(self, delta: str) -> list[TextDelta | ToolCall | InvalidToolCall]:
        """Events for the next piece of the answer."""
        return self._events(self._parser.feed(delta), end=False)

    def flush(self) -> list[TextDelta | ToolCall | InvalidToolCall]:
        """Events for whatever the parser still held when the answer ended."""
        return self._events(self._parser.finish(), end=True)

    def _events(
        self, raw: list[str | ToolCall | InvalidToolCall], *, end: bool
    ) -> list[TextDelta | ToolCall | InvalidToolCall]:
        # Echoed result markup leaves the text as it streams, as parsed() leaves it from the whole answer.
        events: list[TextDelta | ToolCall | InvalidToolCall] = []
        for event in raw:
            text = self._markup.push(event) if isinstance(event, str) else self._markup.flush()
            if text:
                events.append(TextDelta(text))
            if not isinstance(event, str):
                events.append(self._event(event))
        if end and (rest := self._markup.flush()):
            events.append(TextDelta(rest))
        return events

    def parsed(self) -> ParsedOutput:
        """Text and calls so far, after the parallel-call policy."""
        content = self._parser.protocol.clean_text(self._parser.result.content)
        if self._calls or self._invalid:
            content = _without_fence(content.strip())
        return ParsedOutput(content, list(self._calls), list(self._invalid))

    def read(self, text: str) -> ParsedOutput:
        """A whole answer, read by the same steps as a streamed one, on a fresh parser (this plan's state stays)."""
        fresh = self.fresh()
        fresh.feed(text)
        fresh.flush()
        return fresh.parsed()

    def fresh(self) -> TurnPlan:
        """The same plan with nothing read yet."""
        parser = ToolStreamParser(self._parser.protocol, self.tools, self.tool_choice)
        fresh = TurnPlan(
            self.turn,
            self.prompt,
            self.constraint,
            parser,
            self.tool_choice,
            self.tools,
            constrained=self.constrained,
        )
        fresh.trimmed, fresh.messages = self.trimmed, self.messages
        fresh.template_tools, fresh.params = self.template_tools, self.params
        fresh.images = self.images
        return fresh

    def finish_events(self, generation: GenerationResult | None) -> list[TurnEvent]:
        if generation is None:  # the stream was cancelled before the engine reported back
            return []
        events: list[TurnEvent] = [*self.flush()]
        events.append(TurnDone(self._result(generation)))
        return events

    def finish(self, generation: GenerationResult) -> TurnResult:
        """The result of a whole answer that was fed at once (the same steps as the streamed path)."""
        self.flush()
        return self._result(generation)

    def _event(self, event: str | ToolCall | InvalidToolCall) -> TextDelta | ToolCall | InvalidToolCall:
        if isinstance(event, str):
            return TextDelta(event)
        if isinstance(event, ToolCall) and len(self._calls) >= MAX_CALLS_PER_ANSWER:
            event = InvalidToolCall(
                event.name,
                _call_json(event),
                f"more than {MAX_CALLS_PER_ANSWER} calls in one answer; the rest are refused",
                id=event.id,
            )
        if isinstance(event, ToolCall) and self._calls and not self.turn.parallel_tool_calls:
            event = InvalidToolCall(
                event.name,
                _call_json(event),
                "parallel tool calls are off (parallel_tool_calls=False): only the first call is kept",
                id=event.id,
            )
        (self._calls if isinstance(event, ToolCall) else self._invalid).append(event)  # type: ignore[arg-type]
        return event

    def _result(self, generation: GenerationResult) -> TurnResult:
        parsed = self.parsed()
        result = TurnResult(
            parsed.content,
            parsed.tool_calls,
            parsed.invalid_tool_calls,
            generation,
            self.constrained,
            trimmed=self.trimmed,
            free_start=self.free_start,
        )
        if self.turn.response_format is not None:
            _read_structured(result, self.turn.response_format, generation)
        return result


# -- helpers ---------------------------------------------------------------------------------------------------------
def _neutral_spec(tool: ToolSpec, tokens: Sequence[str]) -> ToolSpec:
    """``tool`` as the prompt shows it: control-token text in its description and schema broken (names cannot
    hold any: ToolSpec refuses them)."""
    if not tokens:
        return tool
    description = neutralise_value(tool.description, tokens)
    parameters = neutralise_value(dict(tool.parameters), tokens)
    if description == tool.description and parameters == dict(tool.parameters):
        return tool
    return ToolSpec(tool.name, description, parameters)


def _json_constraint(schema: Mapping[str, Any] | None, kinds: frozenset[str]) -> Constraint | None:
    if "json_schema" not in kinds:
        return None
    return Constraint("json_schema", json.dumps(dict(schema) if schema is not None else {"type": "object"}))


def _read_structured(result: TurnResult, response_format: JsonFormat, generation: GenerationResult) -> None:
    try:
        result.structured = parse_json_output(generation.text, response_format.schema)
    except OutputParseError as exc:
        if generation.finish_reason == "length":
            exc = OutputParseError(
                f"{exc} The output was cut off after {generation.completion_tokens} tokens: raise max_new_tokens.",
                exc.text,
            )
        result.structured_error = exc


def _without_fence(text: str) -> str:
    """Text beside calls without the code fence a model may open around them (Qwen writes ```json first)."""
    stripped = text.strip()
    for fence in ("```json", "```"):
        if stripped.endswith(fence):
            stripped = stripped[: -len(fence)].rstrip()
            break
    return stripped


def _call_key(name: Any, arguments: Any) -> tuple[str, str]:
    return str(name), json.dumps(arguments, sort_keys=True, ensure_ascii=False, default=str)


def _call_json(call: ToolCall) -> str:
    return json.dumps({"name": call.name, "arguments": call.arguments}, ensure_ascii=False)
