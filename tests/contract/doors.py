"""The front doors of one chat turn, each driven through its own public API and read back into one Outcome.

A door takes a Scenario in neutral terms and maps it onto its framework's types exactly as a user would write them;
the contract tests then assert that every door reaches the same Outcome. The server door drives `phi3-aipc serve`
over real HTTP on loopback with the official ``openai`` client.
"""

from __future__ import annotations

import base64
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from phi3_aipc.chat import ChatTurn, JsonFormat, TurnDone
from phi3_aipc.engine import get_engine
from phi3_aipc.params import GenerationParams

# Marks a structured answer that did not parse, so outcomes stay comparable across doors.
NO_VALUE = "<no structured value>"


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass(frozen=True)
class Scenario:
    engine: dict[str, Any]
    #: Neutral messages; a user message may carry "images": [PNG bytes], which each door sends its own way.
    messages: list[dict[str, Any]]
    tools: list[Tool] = field(default_factory=list)
    tool_choice: str | None = None
    #: Structured output: a pydantic model class (LlamaIndex needs one); its JSON schema is used at every door.
    model_cls: Any = None
    max_tokens: int = 32
    stop: tuple[str, ...] = ()

    @property
    def schema(self) -> dict[str, Any] | None:
        return None if self.model_cls is None else self.model_cls.model_json_schema()


@dataclass
class Outcome:
    content: str
    calls: list[tuple[str, dict[str, Any]]]
    invalid: list[str | None]
    finish_reason: str
    prompt_tokens: int
    structured: Any = None


# -- the bare chat turn ------------------------------------------------------------------------------------------
def _turn(s: Scenario) -> ChatTurn:
    return ChatTurn(
        s.messages,
        [t.as_dict() for t in s.tools],
        s.tool_choice,
        response_format=JsonFormat(s.schema) if s.schema is not None else None,
        params=GenerationParams(max_new_tokens=s.max_tokens, stop=s.stop),
    )


def _structured(result: Any) -> Any:
    return NO_VALUE if result.structured_error is not None else result.structured


def chat_turn(s: Scenario) -> Outcome:
    result = _turn(s).run(get_engine(**s.engine))
    return _outcome_of_turn(result, s)


def chat_turn_stream(s: Scenario) -> Outcome:
    events = list(_turn(s).stream(get_engine(**s.engine)))
    done = events[-1]
    assert isinstance(done, TurnDone)
    return _outcome_of_turn(done.result, s)


def _outcome_of_turn(result: Any, s: Scenario) -> Outcome:
    return Outcome(
        result.content,
        [(c.name, c.arguments) for c in result.tool_calls],
        [c.name for c in result.invalid_tool_calls],
        result.finish_reason,
        result.generation.prompt_tokens,
        _structured(result) if s.model_cls is not None else None,
    )


# -- LangChain ---------------------------------------------------------------------------------------------------
def _lc_messages(s: Scenario) -> list[Any]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    out: list[Any] = []
    for m in s.messages:
        if m["role"] == "system":
            out.append(SystemMessage(m["content"]))
        elif m["role"] == "user" and m.get("images"):
            blocks = [{"type": "image", "base64": _b64(i), "mime_type": "image/png"} for i in m["images"]]
            out.append(HumanMessage([{"type": "text", "text": m["content"]}, *blocks]))
        elif m["role"] == "user":
            out.append(HumanMessage(m["content"]))
        elif m["role"] == "assistant":
            calls = [
                {"name": c["name"], "args": c["arguments"], "id": c["id"]} for c in m.get("tool_calls", [])
            ]
            out.append(AIMessage(m["content"] or "", tool_calls=calls))
        else:
            out.append(ToolMessage(m["content"], tool_call_id=m["tool_call_id"], name=m["name"]))
    return out


def _lc_model(s: Scenario) -> Any:
    from langchain_phi3_aipc import ChatPhi3AIPC

    llm = ChatPhi3AIPC(**s.engine, max_tokens=s.max_tokens, stop=list(s.stop) or None)
    if s.tools:
        tools = [{"type": "function", "function": t.as_dict()} for t in s.tools]
        return llm.bind_tools(tools, tool_choice=s.tool_choice)
    return llm


def _from_lc(message: Any, structured: Any = None) -> Outcome:
    return Outcome(
        message.content,
        [(c["name"], c["args"]) for c in message.tool_calls],
        [c["name"] for c in message.invalid_tool_calls],
        message.response_metadata["finish_reason"],
        message.usage_metadata["input_tokens"],
        structured,
    )


def _lc_structured(s: Scenario, run: Callable[[Any, list[Any]], Any]) -> Outcome:
    from langchain_core.exceptions import OutputParserException

    from langchain_phi3_aipc import ChatPhi3AIPC

    llm = ChatPhi3AIPC(**s.engine, max_tokens=s.max_tokens)
    try:
        out = run(llm.with_structured_output(s.model_cls, include_raw=True), _lc_messages(s))
    except OutputParserException:
        # langchain-core's include_raw fallback catches parse errors on invoke but not on stream.
        return Outcome("", [], [], "", 0, NO_VALUE)
    parsed = out["parsed"]
    value = NO_VALUE if out["parsing_error"] is not None else parsed.model_dump()
    return _from_lc(out["raw"], value)


def _merged_stream(runnable: Any, messages: list[Any]) -> dict[str, Any]:
    """What .stream() of an include_raw structured model yields, merged: raw chunks added, parsed taken."""
    out: dict[str, Any] = {}
    for piece in runnable.stream(messages):
        for key, value in piece.items():
            out[key] = out[key] + value if key == "raw" and key in out else value
    return out


def langchain(s: Scenario) -> Outcome:
    if s.schema is not None:
        return _lc_structured(s, lambda runnable, messages: runnable.invoke(messages))
    return _from_lc(_lc_model(s).invoke(_lc_messages(s)))


def langchain_stream(s: Scenario) -> Outcome:
    if s.schema is not None:
        return _lc_structured(s, _merged_stream)
    merged = None
    for chunk in _lc_model(s).stream(_lc_messages(s)):
        merged = chunk if merged is None else merged + chunk
    return _from_lc(merged)


# -- LlamaIndex --------------------------------------------------------------------------------------------------
def _li_messages(s: Scenario) -> list[Any]:
    from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock, ToolCallBlock

    out: list[Any] = []
    for m in s.messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            blocks: list[Any] = [TextBlock(text=m["content"])] if m["content"] else []
            blocks += [
                ToolCallBlock(tool_call_id=c["id"], tool_name=c["name"], tool_kwargs=c["arguments"])
                for c in m["tool_calls"]
            ]
            out.append(ChatMessage(role="assistant", blocks=blocks))
        elif m["role"] == "tool":
            kwargs = {"tool_call_id": m["tool_call_id"], "name": m["name"]}
            out.append(ChatMessage(role="tool", content=m["content"], additional_kwargs=kwargs))
        elif m.get("images"):
            images = [ImageBlock(image=i, image_mimetype="image/png") for i in m["images"]]
            out.append(ChatMessage(role=m["role"], blocks=[TextBlock(text=m["content"]), *images]))
        else:
            out.append(ChatMessage(role=m["role"], content=m["content"]))
    return out


def _li_tools(s: Scenario) -> list[Any]:
    from llama_index.core.tools import FunctionTool, ToolMetadata

    class SchemaMetadata(ToolMetadata):
        """Tool metadata with a given JSON schema: LlamaIndex's own builder keeps only some schema keywords."""

        def get_parameters_dict(self) -> dict:
            return self.schema

    tools = []
    for t in s.tools:
        metadata = SchemaMetadata(description=t.description, name=t.name)
        metadata.schema = t.parameters
        tools.append(FunctionTool(fn=lambda **kwargs: "unused", metadata=metadata))
    return tools


def _li_llm(s: Scenario) -> Any:
    from llama_index_phi3_aipc import Phi3AIPC

    return Phi3AIPC(**s.engine, max_new_tokens=s.max_tokens, stop=list(s.stop) or None)


def _from_li(llm: Any, response: Any, structured: Any = None) -> Outcome:
    calls = llm.get_tool_calls_from_response(response, error_on_no_tool_call=False)
    extra = response.additional_kwargs
    return Outcome(
        response.message.content or "",
        [(c.tool_name, c.tool_kwargs) for c in calls],
        [c["name"] for c in response.message.additional_kwargs.get("invalid_tool_calls", [])],
        extra["finish_reason"],
        extra["prompt_tokens"],
        structured,
    )


def _li_chat_kwargs(s: Scenario) -> dict[str, Any]:
    return {"tools": _li_tools(s), "tool_choice": s.tool_choice} if s.tools else {}


def _li_structured(s: Scenario, stream: bool) -> Outcome:
    from llama_index.core.prompts import ChatPromptTemplate

    from llama_index_phi3_aipc import StructuredOutputError

    llm = _li_llm(s)
    model_cls = s.model_cls
    prompt = ChatPromptTemplate(message_templates=_li_messages(s))
    try:
        if stream:
            value = list(llm.stream_structured_predict(model_cls, prompt))[-1].model_dump()
        else:
            value = llm.structured_predict(model_cls, prompt).model_dump()
    except StructuredOutputError:
        value = NO_VALUE
    return Outcome("", [], [], "", 0, value)


def llamaindex(s: Scenario) -> Outcome:
    if s.model_cls is not None:
        return _li_structured(s, stream=False)
    llm = _li_llm(s)
    return _from_li(llm, llm.chat(_li_messages(s), **_li_chat_kwargs(s)))


def llamaindex_stream(s: Scenario) -> Outcome:
    if s.model_cls is not None:
        return _li_structured(s, stream=True)
    llm = _li_llm(s)
    last = list(llm.stream_chat(_li_messages(s), **_li_chat_kwargs(s)))[-1]
    return _from_li(llm, last)


# -- the server (phi3-aipc serve), through the official openai client -----------------------------------------------
_servers: dict[str, Any] = {}


def _server_client(s: Scenario) -> Any:
    """An OpenAI client for a server over the scenario's shared engine, started once per engine on a free port."""
    import openai

    from phi3_aipc.server import BackgroundServer, ServerConfig, create_app

    key = repr(sorted(s.engine.items()))
    if key not in _servers:
        app = create_app(get_engine(**s.engine), ServerConfig(model_id="contract"))
        _servers[key] = BackgroundServer(app).start()
    return openai.OpenAI(base_url=_servers[key].base_url, api_key="unused", max_retries=0)


def _oa_messages(s: Scenario) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in s.messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            calls = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
                }
                for c in m["tool_calls"]
            ]
            out.append({"role": "assistant", "content": m["content"] or None, "tool_calls": calls})
        elif m["role"] == "tool":
            out.append({"role": "tool", "content": m["content"], "tool_call_id": m["tool_call_id"]})
        elif m.get("images"):
            parts = [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{_b64(i)}"}}
                for i in m["images"]
            ]
            out.append({"role": m["role"], "content": [{"type": "text", "text": m["content"]}, *parts]})
        else:
            out.append({"role": m["role"], "content": m["content"]})
    return out


def _b64(image: bytes) -> str:
    """A scenario's image (PNG bytes) as base64, the way each framework's users send one."""
    return base64.b64encode(image).decode()


def _oa_request(s: Scenario) -> dict[str, Any]:
    request: dict[str, Any] = {"model": "contract", "messages": _oa_messages(s), "max_tokens": s.max_tokens}
    if s.stop:
        request["stop"] = list(s.stop)
    if s.tools:
        request["tools"] = [{"type": "function", "function": t.as_dict()} for t in s.tools]
        if s.tool_choice in ("auto", "none", "required"):
            request["tool_choice"] = s.tool_choice
        elif s.tool_choice is not None:
            request["tool_choice"] = {"type": "function", "function": {"name": s.tool_choice}}
    if s.schema is not None:
        request["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "out", "schema": s.schema},
        }
    return request


def _oa_outcome(
    s: Scenario,
    content: str,
    calls: list[dict[str, Any]],
    invalid: list[dict[str, Any]],
    choice: Any,
    usage: Any,
) -> Outcome:
    # The server reports a stop string as OpenAI's "stop" plus vLLM's stop_reason (the string itself).
    reason = choice.finish_reason
    if reason == "stop" and isinstance((choice.model_extra or {}).get("stop_reason"), str):
        reason = "stop_string"
    structured = None
    if s.model_cls is not None:
        from phi3_aipc.tools.structured import OutputParseError, parse_json_output

        try:
            structured = parse_json_output(content, s.schema)
        except OutputParseError:
            structured = NO_VALUE
    return Outcome(
        content,
        [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls],
        [c["name"] for c in invalid],
        reason,
        usage.prompt_tokens,
        structured,
    )


def server(s: Scenario) -> Outcome:
    response = _server_client(s).chat.completions.create(**_oa_request(s))
    choice = response.choices[0]
    message = choice.message
    calls = [c.model_dump() for c in message.tool_calls or ()]
    invalid = (message.model_extra or {}).get("invalid_tool_calls") or []
    return _oa_outcome(s, message.content or "", calls, invalid, choice, response.usage)


def server_stream(s: Scenario) -> Outcome:
    chunks = list(
        _server_client(s).chat.completions.create(
            **_oa_request(s), stream=True, stream_options={"include_usage": True}
        )
    )
    content, calls, invalid, last = "", [], [], None
    for chunk in chunks:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            calls += [c.model_dump() for c in choice.delta.tool_calls or ()]
            invalid += (choice.delta.model_extra or {}).get("invalid_tool_calls") or []
            if choice.finish_reason is not None:
                last = choice
    return _oa_outcome(s, content, calls, invalid, last, chunks[-1].usage)


DOORS: dict[str, Callable[[Scenario], Outcome]] = {
    "chat_turn": chat_turn,
    "chat_turn_stream": chat_turn_stream,
    "langchain": langchain,
    "langchain_stream": langchain_stream,
    "llamaindex": llamaindex,
    "llamaindex_stream": llamaindex_stream,
}
# The server door needs the serve extra and the openai client (the lowest-versions CI job installs neither).
if all(importlib.util.find_spec(name) is not None for name in ("fastapi", "uvicorn", "openai")):
    DOORS.update(server=server, server_stream=server_stream)
