"""``Phi3AIPC``: a LlamaIndex FunctionCallingLLM over the phi3-aipc engine.

Everything model- and device-specific lives in the engine; this module only translates LlamaIndex's types.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, Literal

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
    ToolCallBlock,
)
from llama_index.core.bridge.pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection

from llama_index_phi3_aipc import _convert
from phi3_aipc.chat import ChatTurn, JsonFormat, TextDelta, TurnDone, TurnEvent, TurnResult
from phi3_aipc.context import prompt_budget
from phi3_aipc.engine import Engine, aget_engine, get_engine
from phi3_aipc.engine.load_options import with_speed_options
from phi3_aipc.errors import InvalidParameterError, Phi3AIPCError
from phi3_aipc.models import DEFAULT_MODEL
from phi3_aipc.params import DEFAULT_MAX_NEW_TOKENS, GenerationParams, GenerationResult
from phi3_aipc.tools import InvalidToolCall, ToolCall, json_schema_of

if TYPE_CHECKING:
    from llama_index.core.prompts import BasePromptTemplate
    from llama_index.core.tools.types import BaseTool

logger = logging.getLogger(__name__)

# Per-call keyword arguments that override the generation fields; `max_tokens` is the OpenAI-style spelling.
_PARAM_KEYS = (
    "temperature",
    "max_new_tokens",
    "top_p",
    "top_k",
    "seed",
    "repetition_penalty",
    "stop",
    "do_sample",
)
_TOOL_KEYS = ("tools", "tool_required", "tool_choice", "allow_parallel_tool_calls")
#: Prompt tokens kept free of retrieved text for the chat template's role markup (a few tokens a message).
TEMPLATE_ROOM_TOKENS = 32
#: English text on which the model's tokenizer is compared with LlamaIndex's.
TOKEN_RATIO_SAMPLE = (
    "The quarterly report shows that revenue grew by 12 percent, driven by strong demand for laptops with "
    "neural processing units. Customers asked how local models keep their documents private, and engineers "
    "explained that retrieval-augmented generation sends only the relevant passages to the model."
)


class Phi3AIPCMetadata(LLMMetadata):
    """LlamaIndex's metadata, plus whether the model takes images (ImageBlocks in ChatMessage.blocks)."""

    takes_images: bool = Field(default=False, description="Whether ImageBlocks in messages reach the model.")


class StructuredOutputError(Phi3AIPCError, ValueError):
    """The model's constrained output did not validate into the requested class."""


class NoToolCallError(Phi3AIPCError, ValueError):
    """A tool call was expected in a response that holds none."""


class Phi3AIPC(FunctionCallingLLM):
    """Phi-3 family models on an AI PC (NPU, Intel GPU, CPU) as a LlamaIndex LLM with function calling.

    Nothing loads at construction; the first call loads the model through the process-wide engine cache,
    so every Phi3AIPC (and every LangChain wrapper) with the same model, device, backend and options shares it.

    Example:
        ```python
        from llama_index_phi3_aipc import Phi3AIPC
        llm = Phi3AIPC(model="phi-3-mini", device="npu", options={"MAX_PROMPT_LEN": 2048})
        print(llm.complete("What is an NPU?"))
        ```
    """

    model: str = Field(
        default=DEFAULT_MODEL, description="Repo id, alias, local IR folder, .gguf file or 'smollm2'."
    )
    device: str = Field(default="auto", description="'auto', 'npu', 'gpu', 'cpu' or an OpenVINO device id.")
    backend: str | None = Field(default=None, description="Engine backend ('openvino', 'transformers', ...).")
    temperature: float | None = Field(
        default=None, description="Sampling temperature; greedy when unset or 0."
    )
    max_new_tokens: int = Field(
        default=DEFAULT_MAX_NEW_TOKENS, description="Most tokens to generate (num_output)."
    )
    top_p: float | None = Field(default=None, description="Nucleus sampling probability mass.")
    top_k: int | None = Field(default=None, description="Sample among the k most likely tokens.")
    seed: int | None = Field(default=None, description="Random seed for sampling.")
    repetition_penalty: float | None = Field(
        default=None, description="Penalty for repeated tokens (>1 discourages)."
    )
    stop: list[str] | None = Field(default=None, description="Stop strings, cut at the exact character.")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Backend/device options, e.g. {'MAX_PROMPT_LEN': 2048, 'CACHE_DIR': ..., 'NPUW_DEVICES': 'CPU'}.",
    )
    constrained_decoding: bool = Field(
        default=True,
        description="Constrain tool calls and structured output to their JSON schemas where the backend can.",
    )
    context_window: int | None = Field(
        default=None,
        description="Override the context window the engine reports (tokens, prompt plus output).",
    )
    prompt_lookup: bool | None = Field(
        default=None,
        description="Prompt-lookup decoding (OpenVINO GenAI): drafts copied from the prompt make answers that quote "
        "their context decode faster, same greedy text. None: off (at bf16 it changed greedy text); never on the NPU.",
    )
    draft_model: str | None = Field(
        default=None,
        description="Speculative decoding: a draft model sharing the model's tokenizer (path, repo id, or 'auto' for "
        "the catalogue's); raw['assisted_decoding'] reports its acceptance rate.",
    )
    context_overflow: Literal["error", "trim"] = Field(
        default="error",
        description="A chat that does not fit: 'error' refuses it; 'trim' drops the oldest turns, then shortens "
        "long tool results / retrieved context (additional_kwargs['context_trimmed'] says what went).",
    )

    base_url: str | None = Field(
        default=None,
        description="Remote mode: an OpenAI-compatible server, e.g. 'http://127.0.0.1:8000/v1' (phi3-aipc serve, "
        "OpenVINO Model Server, vLLM). The model runs there; `model` names it.",
    )
    api_key: str | None = Field(default=None, description="Remote mode: the server's bearer token.")
    timeout: float | None = Field(default=None, gt=0, description="Remote mode: seconds to wait for data.")
    max_retries: int = Field(
        default=2, ge=0, description="Remote mode: retries of a failed connection or 5xx."
    )

    _engine: Engine | None = PrivateAttr(default=None)
    _token_ratio: float | None = PrivateAttr(default=None)

    # A misspelt argument (devcie="npu") is an error, not silently ignored, as in the LangChain classes.
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._defaults()  # validate the generation fields now, not at the first call

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, values: Any) -> Any:
        # LlamaIndex users know the output budget as num_output, LangChain users as max_tokens.
        if not isinstance(values, dict):
            return values
        given = [k for k in ("max_new_tokens", "num_output", "max_tokens") if k in values]
        if len(given) > 1:
            raise InvalidParameterError(f"Pass only one of {given}: they all set max_new_tokens.")
        if given and given[0] != "max_new_tokens":
            values = dict(values)
            values["max_new_tokens"] = values.pop(given[0])
        return values

    @field_validator("model", "device")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            raise InvalidParameterError(f"Expected a non-empty string, got {value!r}.")
        return value

    @field_validator("options", mode="before")
    @classmethod
    def _check_options(cls, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise InvalidParameterError(
                f"options must be a dict of option names to values, e.g. {{'MAX_PROMPT_LEN': 2048}}, got {value!r}."
            )
        return value

    @field_validator("context_window")
    @classmethod
    def _check_window(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise InvalidParameterError(f"context_window must be a positive number of tokens, got {value}.")
        return value

    @classmethod
    def class_name(cls) -> str:
        return "Phi3AIPC"

    # -- the engine ------------------------------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The shared engine, loaded on first use."""
        if self._engine is None:
            self._engine = self._remote() or get_engine(
                self.model, self.device, self.backend, self._engine_options()
            )
        return self._engine

    async def _aengine(self) -> Engine:
        # Loading takes seconds (minutes for a first NPU compile): never on the event loop.
        if self._engine is None:
            self._engine = self._remote() or await aget_engine(
                self.model, self.device, self.backend, self._engine_options()
            )
        return self._engine

    def _engine_options(self) -> dict[str, Any]:
        return with_speed_options(self.options, self.prompt_lookup, self.draft_model)

    def _remote(self) -> Any:
        if self.base_url is None:
            return None
        from phi3_aipc.remote import get_remote_engine

        return get_remote_engine(
            self.base_url,
            self.model,
            api_key=self.api_key,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    @property
    def metadata(self) -> LLMMetadata:
        engine = self.engine
        window = self.context_window or self._packing_window(engine)
        if window is None:
            logger.warning(
                "The context window of %s is unknown; assuming %d tokens. Pass context_window= to set it.",
                engine.model_name,
                DEFAULT_CONTEXT_WINDOW,
            )
            window = DEFAULT_CONTEXT_WINDOW
        return Phi3AIPCMetadata(
            context_window=window,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=engine.model_name,
            system_role=MessageRole.SYSTEM,
            takes_images=bool(getattr(engine, "takes_images", False)),
        )

    def _packing_window(self, engine: Engine) -> int | None:
        """The window LlamaIndex packs retrieved chunks into, so that what it packs fits the engine.

        LlamaIndex subtracts num_output and its prompt template from context_window and fills the rest, counting
        with its own tokenizer (tiktoken unless Settings.tokenizer is set). So the window given is num_output plus
        the engine's real prompt budget (the NPU's MAX_PROMPT_LEN included), less room for the chat template's
        markup, in LlamaIndex's tokens: divided by how many more tokens the model's tokenizer makes of the same
        English text.
        """
        budget = prompt_budget(engine, self.max_new_tokens)
        if budget is None:
            return engine.context_window
        room = int((budget - TEMPLATE_ROOM_TOKENS) / self._tokens_per_llama_index_token(engine))
        return max(room, 1) + self.max_new_tokens

    def _tokens_per_llama_index_token(self, engine: Engine) -> float:
        if self._token_ratio is None:
            from llama_index.core.utils import get_tokenizer

            theirs = len(get_tokenizer()(TOKEN_RATIO_SAMPLE))
            ours = engine.count_tokens(TOKEN_RATIO_SAMPLE) - engine.count_tokens("")
            # Never above 1: a tokenizer that makes fewer tokens still gets no extra room. The 10% margin covers
            # text that splits worse than the sample.
            self._token_ratio = max(1.0, ours / max(theirs, 1)) * 1.1
        return self._token_ratio

    # -- parameters ------------------------------------------------------------------------------------------------
    def _defaults(self) -> GenerationParams:
        return GenerationParams(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=self.seed,
            repetition_penalty=self.repetition_penalty,
            stop=tuple(self.stop or ()),
        )

    def _params(self, kwargs: dict[str, Any]) -> GenerationParams:
        """Generation parameters: the fields, overridden by per-call keyword arguments."""
        overrides = dict(kwargs)
        if "max_tokens" in overrides:
            overrides["max_new_tokens"] = overrides.pop("max_tokens")
        unknown = sorted(set(overrides) - set(_PARAM_KEYS))
        if unknown:
            raise InvalidParameterError(
                f"Phi3AIPC does not understand the argument(s) {unknown}. Per-call arguments are "
                f"{sorted((*_PARAM_KEYS, 'max_tokens'))}; set device options through options= at construction."
            )
        params = self._defaults()
        extra_stop = overrides.pop("stop", None)
        values = {k: v for k, v in overrides.items() if v is not None}
        params = GenerationParams(**{**_fields(params), **values})
        return params.with_stop([extra_stop] if isinstance(extra_stop, str) else extra_stop)

    # -- completion ------------------------------------------------------------------------------------------------
    def _completion_prompt(self, prompt: str, formatted: bool) -> str | list[dict[str, Any]]:
        if not isinstance(prompt, str):
            raise InvalidParameterError(f"prompt must be a string, got {type(prompt).__name__}.")
        # formatted=True means the caller already applied a template: pass it through untouched. Otherwise the
        # prompt is a user message and follows the engine's message rules (control-token text neutralised).
        return prompt if formatted else [{"role": "user", "content": prompt}]

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        params = self._params(kwargs)
        result = self.engine.generate(self._completion_prompt(prompt, formatted), params)
        return _completion(result.text, result)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        params = self._params(kwargs)
        stream = self.engine.stream(self._completion_prompt(prompt, formatted), params)

        def gen() -> CompletionResponseGen:
            text = ""
            with stream:  # closing cancels generation if the caller stops early
                for delta in stream:
                    text += delta
                    yield CompletionResponse(text=text, delta=delta)
            yield _completion(text, stream.result, delta="")

        return gen()

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        params = self._params(kwargs)
        engine = await self._aengine()
        result = await engine.agenerate(self._completion_prompt(prompt, formatted), params)
        return _completion(result.text, result)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        params = self._params(kwargs)
        engine = await self._aengine()
        stream = engine.astream(self._completion_prompt(prompt, formatted), params)

        async def gen() -> CompletionResponseAsyncGen:
            text = ""
            try:
                async for delta in stream:
                    text += delta
                    yield CompletionResponse(text=text, delta=delta)
            finally:
                await stream.aclose()
            yield _completion(text, stream.result, delta="")

        return gen()

    # -- chat ------------------------------------------------------------------------------------------------------
    def _turn(self, messages: Sequence[ChatMessage], kwargs: dict[str, Any]) -> ChatTurn:
        tool_kwargs = {k: kwargs.pop(k) for k in _TOOL_KEYS if k in kwargs}
        choice = tool_kwargs.get("tool_choice")
        if choice is None and tool_kwargs.get("tool_required"):
            choice = "required"
        return ChatTurn(
            _convert.to_engine_messages(messages),
            tools=[_tool_spec(t) for t in tool_kwargs.get("tools") or ()],
            tool_choice=choice,
            params=self._params(kwargs),
            parallel_tool_calls=tool_kwargs.get("allow_parallel_tool_calls", True) is not False,
            constrained=self.constrained_decoding,
            context_overflow=self.context_overflow,
        )

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        turn = self._turn(messages, kwargs)
        return _response(turn.run(self.engine))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        turn = self._turn(messages, kwargs)
        events = turn.stream(self.engine)

        def gen() -> ChatResponseGen:
            responses = _StreamedResponses()
            for event in events:
                yield responses.of(event)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        turn = self._turn(messages, kwargs)
        return _response(await turn.arun(await self._aengine()))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        turn = self._turn(messages, kwargs)
        engine = await self._aengine()

        async def gen() -> ChatResponseAsyncGen:
            responses = _StreamedResponses()
            async with aclosing(
                turn.astream(engine)
            ) as events:  # a reader that stops closes the generation now
                async for event in events:
                    yield responses.of(event)

        return gen()

    # -- function calling ------------------------------------------------------------------------------------------
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The chat() arguments for a tool-enabled turn: tool_required forces a call (tool_choice='required')."""
        if isinstance(user_msg, str):
            user_msg = ChatMessage(role=MessageRole.USER, content=user_msg)
        messages = [*(chat_history or []), *([user_msg] if user_msg is not None else [])]
        if tool_choice is None and tool_required:
            tool_choice = "required"
        return {
            "messages": messages,
            "tools": list(tools),
            "tool_choice": tool_choice,
            "allow_parallel_tool_calls": allow_parallel_tool_calls,
            **kwargs,
        }

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The valid tool calls in a response (arguments already checked against each tool's schema)."""
        calls = [
            ToolSelection(tool_id=c["id"] or "", tool_name=c["name"], tool_kwargs=c["arguments"])
            for c in _convert.tool_calls_of(response.message)
        ]
        if not calls and error_on_no_tool_call:
            invalid = response.message.additional_kwargs.get("invalid_tool_calls") or []
            detail = "; ".join(f"{c.get('name') or 'unnamed call'}: {c['error']}" for c in invalid)
            if response.additional_kwargs.get("finish_reason") == "length":
                hint = " The output was cut off at max_new_tokens: raise it (per call: max_tokens=...)."
            else:
                hint = " Pass tool_required=True to force a call, or use a larger model."
            raise NoToolCallError(
                "Expected at least one tool call, but the model made none"
                + (f" that is valid ({detail})." if detail else ".")
                + hint
            )
        return calls

    # -- structured output -----------------------------------------------------------------------------------------
    def _structured_turn(
        self,
        output_cls: type[BaseModel],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None,
        prompt_args: dict,
    ) -> ChatTurn:
        if not (isinstance(output_cls, type) and issubclass(output_cls, BaseModel)):
            raise InvalidParameterError(
                f"output_cls must be a pydantic BaseModel subclass, got {output_cls!r}."
            )
        return ChatTurn(
            _convert.to_engine_messages(self._get_messages(prompt, **prompt_args)),
            response_format=JsonFormat(json_schema_of(output_cls)),
            params=self._params(dict(llm_kwargs or {})),
            constrained=self.constrained_decoding,
            context_overflow=self.context_overflow,
        )

    def structured_predict(
        self,
        output_cls: type[BaseModel],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> BaseModel:
        """Generate JSON constrained to ``output_cls``'s schema and validate it into an ``output_cls``."""
        turn = self._structured_turn(output_cls, prompt, llm_kwargs, prompt_args)
        return _validate(output_cls, turn.run(self.engine))

    async def astructured_predict(
        self,
        output_cls: type[BaseModel],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> BaseModel:
        turn = self._structured_turn(output_cls, prompt, llm_kwargs, prompt_args)
        return _validate(output_cls, await turn.arun(await self._aengine()))

    def _structured_stream_call(
        self,
        output_cls: type[BaseModel],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Iterator[Any]:
        turn = self._structured_turn(output_cls, prompt, llm_kwargs, prompt_args)
        events = turn.stream(self.engine)

        def gen() -> Iterator[Any]:
            partial = _PartialObjects(output_cls)
            for event in events:
                yield partial.of(event)

        return gen()

    async def _structured_astream_call(
        self,
        output_cls: type[BaseModel],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> AsyncIterator[Any]:
        turn = self._structured_turn(output_cls, prompt, llm_kwargs, prompt_args)
        engine = await self._aengine()

        async def gen() -> AsyncIterator[Any]:
            partial = _PartialObjects(output_cls)
            async with aclosing(turn.astream(engine)) as events:
                async for event in events:
                    yield partial.of(event)

        return gen()


class _StreamedResponses:
    """Turn events as cumulative ChatResponses: text grows, calls are announced once whole."""

    def __init__(self) -> None:
        self.text = ""
        self.calls: list[ToolCall] = []
        self.invalid: list[InvalidToolCall] = []

    def of(self, event: TurnEvent) -> ChatResponse:
        if isinstance(event, TurnDone):
            return _response(event.result, delta="")
        delta = ""
        if isinstance(event, TextDelta):
            self.text += event.text
            delta = event.text
        elif isinstance(event, ToolCall):
            self.calls.append(event)
        else:
            self.invalid.append(event)
        return ChatResponse(message=_message(self.text, self.calls, self.invalid), delta=delta)


class _PartialObjects:
    """Structured-output events as the partial object so far, then the validated object."""

    def __init__(self, output_cls: type[BaseModel]):
        self.output_cls = output_cls
        self.text = ""
        self.current: Any = None

    def of(self, event: TurnEvent) -> Any:
        if isinstance(event, TurnDone):
            return _validate(self.output_cls, event.result)
        if isinstance(event, TextDelta):
            self.text += event.text
            self.current = _partial(self.text, self.output_cls, self.current)
        return self.current


def _response(result: TurnResult, delta: str | None = None) -> ChatResponse:
    return ChatResponse(
        message=_message(result.content, result.tool_calls, result.invalid_tool_calls),
        raw=_convert.raw(result.generation),
        delta=delta,
        additional_kwargs={
            **_convert.usage(result.generation),
            "finish_reason": result.finish_reason,
            **({"context_trimmed": result.trimmed.as_dict()} if result.trimmed is not None else {}),
        },
    )


def _message(text: str, calls: list[ToolCall], invalid: list[InvalidToolCall]) -> ChatMessage:
    message = ChatMessage(role=MessageRole.ASSISTANT, content=text)
    if calls:
        message.blocks.extend(
            ToolCallBlock(tool_call_id=c.id, tool_name=c.name, tool_kwargs=c.arguments) for c in calls
        )
        message.additional_kwargs["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in calls
        ]
    if invalid:
        message.additional_kwargs["invalid_tool_calls"] = [
            {"id": c.id, "name": c.name, "raw": c.raw, "error": c.error} for c in invalid
        ]
    return message


def _tool_spec(tool: BaseTool) -> dict[str, Any]:
    metadata = tool.metadata
    name = metadata.get_name()
    return {
        "name": name,
        "description": _describe(name, metadata.description),
        "parameters": metadata.get_parameters_dict(),
    }


def _describe(name: str, description: str) -> str:
    # FunctionTool.from_defaults prefixes the docstring with the Python signature ("f(city: 'str') -> 'str'").
    # The JSON schema already says what the arguments are, and small models copy the type names into them.
    first, newline, rest = description.partition("\n")
    if newline and first.startswith(f"{name}(") and rest.strip():
        return rest.strip()
    return description


def _final(result: GenerationResult | None) -> GenerationResult:
    if result is None:  # only when a stream was closed before the engine reported back
        raise Phi3AIPCError("The generation ended without a result; it was cancelled before it finished.")
    return result


def _completion(text: str, result: GenerationResult | None, delta: str | None = None) -> CompletionResponse:
    final = _final(result)
    return CompletionResponse(
        text=text, delta=delta, raw=_convert.raw(final), additional_kwargs=_convert.usage(final)
    )


def _partial(text: str, output_cls: type[BaseModel], current: Any) -> Any:
    """The object so far, from incomplete JSON (LlamaIndex's own partial-object parser)."""
    from llama_index.core.program.utils import process_streaming_objects

    return process_streaming_objects(
        CompletionResponse(text=text), output_cls, [current] if current is not None else None
    )


def _fields(params: GenerationParams) -> dict[str, Any]:
    return {name: getattr(params, name) for name in params.__dataclass_fields__}


def _validate(output_cls: type[BaseModel], result: TurnResult) -> BaseModel:
    if result.structured_error is not None:
        raise StructuredOutputError(
            f"No {output_cls.__name__} in the model's output: {result.structured_error}"
        ) from result.structured_error
    try:
        return output_cls.model_validate(result.structured)
    except ValueError as exc:
        raise StructuredOutputError(
            f"The model's output does not validate as {output_cls.__name__}: {exc}. "
            f"Output was: {result.generation.text[:500]!r}"
        ) from exc
