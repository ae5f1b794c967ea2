"""OpenAI requests to a ChatTurn, and the turn's result and events back to OpenAI responses and chunks.

The server is the third front door of the shared chat turn: it builds no prompt, picks no constraint and parses no
call itself. What OpenAI has no word for travels in two extra fields, which OpenAI clients keep but ignore:

- ``stop_reason`` on a choice: the stop string that ended the answer (vLLM's name and meaning), else null;
- ``invalid_tool_calls`` on the message (or a chunk's delta): calls the model wrote whose arguments did not validate,
  ``[{"id", "name", "raw", "error"}]``. They are never in ``tool_calls`` and never make finish_reason "tool_calls":
  a client acts only on valid calls, and whoever wants to show or retry the others finds them there.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from phi3_aipc.chat import ChatTurn, JsonFormat, TurnResult
from phi3_aipc.errors import InvalidParameterError
from phi3_aipc.images import image_from_block
from phi3_aipc.params import GenerationParams, GenerationResult
from phi3_aipc.server.schemas import ChatCompletionRequest, CompletionRequest, Message, SamplingFields
from phi3_aipc.tools.spec import InvalidToolCall, ToolCall
from phi3_aipc.tools.structured import with_json_instructions


class RequestError(InvalidParameterError):
    """A request the server refuses, with the OpenAI error fields to report."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.param = param
        self.code = code
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_tokens: int = 4096
    default_max_tokens: int = 512


# -- requests ------------------------------------------------------------------------------------------------------
def generation_params(
    request: SamplingFields, max_tokens: int | None, limits: Limits, max_tokens_field: str = "max_tokens"
) -> GenerationParams:
    _refuse_unsupported(request)
    if max_tokens is not None and max_tokens < 1:
        raise RequestError(
            f"{max_tokens_field} is {max_tokens}; it must be at least 1 (or left out for this server's default of "
            f"{limits.default_max_tokens}).",
            param=max_tokens_field,
        )
    if max_tokens is not None and max_tokens > limits.max_tokens:
        raise RequestError(
            f"max_tokens is {max_tokens}, over this server's limit of {limits.max_tokens} "
            f"(set by `phi3-aipc serve --max-tokens-limit`).",
            param="max_tokens",
            code="max_tokens_over_limit",
        )
    stop = [request.stop] if isinstance(request.stop, str) else request.stop
    try:
        return _params(request, max_tokens, limits, tuple(stop or ()))
    except InvalidParameterError as exc:
        # The engine's checks name its own fields; the client sent OpenAI's, which are spelled the same but one.
        named = [f for f in _OPENAI_FIELDS if f in str(exc)]
        raise RequestError(str(exc), param=named[0] if named else None) from None


_OPENAI_FIELDS = ("temperature", "top_p", "top_k", "seed", "repetition_penalty", "stop")


def _params(
    request: SamplingFields, max_tokens: int | None, limits: Limits, stop: tuple[str, ...]
) -> GenerationParams:
    # temperature 0 (or none given) decodes greedily, as the engine does locally; OpenAI's own default is 1.
    return GenerationParams(
        max_new_tokens=max_tokens if max_tokens is not None else limits.default_max_tokens,
        temperature=request.temperature or None,
        top_p=request.top_p,
        top_k=request.top_k,
        seed=request.seed,
        repetition_penalty=request.repetition_penalty,
        stop=stop,
        ignore_eos=request.ignore_eos,
    )


def _refuse_unsupported(request: SamplingFields) -> None:
    if request.n not in (None, 1):
        raise RequestError("Only n=1 is supported: send one request per answer.", param="n")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(request, name) not in (None, 0, 0.0):
            raise RequestError(f"{name} is not supported; use repetition_penalty instead.", param=name)
    if getattr(request, "logprobs", None):
        raise RequestError("logprobs are not supported.", param="logprobs")


def chat_turn(request: ChatCompletionRequest, limits: Limits) -> ChatTurn:
    max_tokens = (
        request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
    )
    field = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    params = generation_params(request, max_tokens, limits, field)
    messages = neutral_messages(request.messages)
    response_format = _json_format(request)
    if response_format is not None:
        messages = _without_json_instructions(messages, response_format.schema)
    return ChatTurn(
        messages,
        tools=[t.function.model_dump(exclude_none=True) for t in request.tools or ()],
        tool_choice=_tool_choice(request),
        response_format=response_format,
        params=params,
        parallel_tool_calls=request.parallel_tool_calls is not False,
    )


def neutral_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """OpenAI messages as the chat turn's dicts: text parts joined, tool-call arguments parsed, tool names found."""
    names: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        item: dict[str, Any] = {"role": message.role, "content": _text(message.content)}
        images = _images(message.content)
        if images:
            item["images"] = images
        if message.tool_calls:
            item["tool_calls"] = [
                _call(index, c.id, c.function.name, c.function.arguments) for c in message.tool_calls
            ]
            names.update((c.id, c.function.name) for c in message.tool_calls)
        if message.role == "tool":
            if message.tool_call_id is None:
                raise RequestError(
                    f"messages[{index}] is a tool message without tool_call_id.", param="messages"
                )
            item["tool_call_id"] = message.tool_call_id
            item["name"] = message.name or names.get(message.tool_call_id, "tool")
        out.append(item)
    return out


def _text(content: str | list[Any] | None) -> str | None:
    if content is None or isinstance(content, str):
        return content
    return "".join(part.text for part in content if part.type == "text")


def _images(content: str | list[Any] | None) -> list[Any]:
    """The image_url parts, decoded and checked (data: URLs; a web URL is a 400, never fetched)."""
    if content is None or isinstance(content, str):
        return []
    return [image_from_block(part.model_dump()) for part in content if part.type == "image_url"]


def _call(index: int, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        raise RequestError(
            f"messages[{index}]: the arguments of tool call {call_id!r} are not JSON: {arguments[:100]!r}.",
            param="messages",
        ) from None
    return {"id": call_id, "name": name, "arguments": parsed}


def _tool_choice(request: ChatCompletionRequest) -> str | None:
    choice = request.tool_choice
    if choice is None or isinstance(choice, str):
        return choice
    return choice.function.name


def _json_format(request: ChatCompletionRequest) -> JsonFormat | None:
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return JsonFormat(None)
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise RequestError(
            "response_format type 'json_schema' needs json_schema.schema.", param="response_format"
        )
    return JsonFormat(fmt.json_schema.schema_)


def _without_json_instructions(
    messages: list[dict[str, Any]], schema: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """The messages less a JSON instruction the chat turn is about to add anyway.

    A remote phi3-aipc client (``RemoteEngine``) sends the prompt its own chat turn planned, instruction included;
    the turn here adds the same instruction again. Taking it off first makes the prompt the one a local run sees.
    """
    instruction = with_json_instructions([], schema)[0]["content"]
    if not messages or messages[0]["role"] not in ("system", "developer"):
        return messages
    content = messages[0]["content"] or ""
    if content == instruction:
        return messages[1:]
    suffix = f"\n\n{instruction}"
    if content.endswith(suffix):
        return [{**messages[0], "content": content[: -len(suffix)]}, *messages[1:]]
    return messages


# -- responses -----------------------------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def finish_reason(result: TurnResult | GenerationResult) -> str:
    reason = result.finish_reason
    if reason in ("tool_calls", "length"):
        return reason
    # A deadline cut the answer short, as max_tokens would; a stop string, EOS or a cancel all just stop.
    return "length" if reason == "timeout" else "stop"


def usage(generation: GenerationResult) -> dict[str, int]:
    return {
        "prompt_tokens": generation.prompt_tokens,
        "completion_tokens": generation.completion_tokens,
        "total_tokens": generation.total_tokens,
    }


def tool_call_out(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {} if index is None else {"index": index}
    out.update(
        id=call.id,
        type="function",
        function={"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
    )
    return out


def invalid_call_out(call: InvalidToolCall) -> dict[str, Any]:
    return {"id": call.id, "name": call.name, "raw": call.raw, "error": call.error}


def chat_completion(result: TurnResult, completion_id: str, model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.content}
    if result.tool_calls:
        message["tool_calls"] = [tool_call_out(c) for c in result.tool_calls]
        message["content"] = result.content or None
    if result.invalid_tool_calls:
        message["invalid_tool_calls"] = [invalid_call_out(c) for c in result.invalid_tool_calls]
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": finish_reason(result),
        "stop_reason": result.generation.stop_string,
        "logprobs": None,
    }
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage(result.generation),
    }


def chat_chunk(
    completion_id: str, model: str, created: int, delta: dict[str, Any], **choice: Any
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None, **choice}],
    }


def usage_chunk(completion_id: str, model: str, created: int, generation: GenerationResult) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage(generation),
    }


def completion_prompt(request: CompletionRequest) -> str:
    prompt = request.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise RequestError("Send one prompt per request (a list of exactly one string).", param="prompt")
        prompt = prompt[0]
    if request.echo:
        raise RequestError("echo is not supported.", param="echo")
    if not prompt:
        raise RequestError("The prompt is empty.", param="prompt")
    return prompt


def completion(
    result: GenerationResult,
    completion_id: str,
    model: str,
    text: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": result.text if text is None else text,
                "finish_reason": finish_reason(result),
                "stop_reason": result.stop_string,
                "logprobs": None,
            }
        ],
        "usage": usage(result),
    }


def completion_chunk(completion_id: str, model: str, created: int, text: str) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": None, "logprobs": None}],
    }
