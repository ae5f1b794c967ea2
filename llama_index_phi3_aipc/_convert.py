"""Conversions between LlamaIndex types and the engine's plain dicts and results. No backend logic here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)

from phi3_aipc.errors import InvalidParameterError, UnsupportedFeatureError
from phi3_aipc.images import DecodedImage, decode_image
from phi3_aipc.params import GenerationResult

# LlamaIndex roles the chat templates do not know, mapped to the ones they do.
_ROLE_MAP = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}


def message_text(message: ChatMessage, index: int) -> str:
    """The text of a message; refuses content the text-only models here cannot see."""
    parts: list[str] = []
    for block in message.blocks:
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif isinstance(block, (ToolCallBlock, ThinkingBlock)):
            continue  # tool calls are rendered from tool_calls; earlier reasoning is not fed back
        elif isinstance(block, ImageBlock):
            continue  # carried beside the text (message_images)
        else:
            raise UnsupportedFeatureError(
                f"Message {index} holds a {type(block).__name__}; Phi3AIPC handles text only. "
                "Pass the content as text (for a document, extract its text first)."
            )
    return "\n".join(parts)


def message_images(message: ChatMessage) -> list[DecodedImage]:
    """The message's ImageBlocks, decoded and checked (phi3_aipc.images). A web URL is refused, never fetched."""
    return [_block_image(block) for block in message.blocks if isinstance(block, ImageBlock)]


def _block_image(block: ImageBlock) -> DecodedImage:
    mime = block.image_mimetype
    if block.url is not None:
        return decode_image(str(block.url), mime)  # data: URLs only; LlamaIndex's resolver would download
    if block.image is None and block.path is None:
        raise UnsupportedFeatureError(
            "An ImageBlock holds no image: give it image bytes, a path or a data: URL."
        )
    try:
        raw = block.resolve_image().read()  # the bytes LlamaIndex keeps base64-encoded, or the local file's
    except (OSError, ValueError) as exc:
        raise InvalidParameterError(f"The ImageBlock's image could not be read ({exc}).") from exc
    return decode_image(raw, mime)


def tool_calls_of(message: ChatMessage) -> list[dict[str, Any]]:
    """The tool calls an assistant message made, from ToolCallBlocks or additional_kwargs['tool_calls']."""
    calls: list[dict[str, Any]] = []
    for block in message.blocks:
        if isinstance(block, ToolCallBlock):
            calls.append(
                {"id": block.tool_call_id, "name": block.tool_name, "arguments": _as_dict(block.tool_kwargs)}
            )
    if calls:
        return calls
    for raw in message.additional_kwargs.get("tool_calls") or []:
        function = raw.get("function", raw) if isinstance(raw, dict) else {}
        calls.append(
            {
                "id": raw.get("id"),
                "name": function.get("name"),
                "arguments": _as_dict(function.get("arguments", {})),
            }
        )
    return calls


def _as_dict(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def to_engine_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """LlamaIndex messages as the role/content dicts the engine formats with the model's chat template."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InvalidParameterError(
            f"messages must be a list of llama_index ChatMessage objects, got {type(messages).__name__}."
        )
    if not messages:
        raise InvalidParameterError("messages is empty; pass at least one ChatMessage.")
    names_by_id: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, ChatMessage):
            raise InvalidParameterError(
                f"Message {index} is a {type(message).__name__}, not a llama_index ChatMessage."
            )
        role = _ROLE_MAP.get(message.role)
        if role is None:
            raise InvalidParameterError(f"Message {index} has the unknown role {message.role!r}.")
        entry: dict[str, Any] = {"role": role, "content": message_text(message, index)}
        images = message_images(message)
        if images:
            entry["images"] = images
        calls = tool_calls_of(message) if role == "assistant" else []
        if calls:
            entry["tool_calls"] = calls
            names_by_id.update({c["id"]: c["name"] for c in calls if c.get("id")})
        if role == "tool":
            call_id = message.additional_kwargs.get("tool_call_id")
            entry["tool_call_id"] = call_id
            name = message.additional_kwargs.get("name") or names_by_id.get(call_id)
            if name:
                entry["name"] = name
        out.append(entry)
    return out


def usage(result: GenerationResult) -> dict[str, Any]:
    """Token counts, timings and the finish reason, flat, as they go into a response's additional_kwargs."""
    timings = result.timings
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.total_tokens,
        "cached_prompt_tokens": result.cached_prompt_tokens,
        "ttft_ms": timings.ttft_ms,
        "tpot_ms": timings.tpot_ms,
        "tokens_per_second": timings.tokens_per_second,
        "queued_ms": timings.queued_ms,
        "finish_reason": result.finish_reason,
    }


def raw(result: GenerationResult) -> dict[str, Any]:
    """Everything the engine reported about one generation, for a response's ``raw``."""
    return {
        **usage(result),
        "text": result.text,
        "stop_string": result.stop_string,
        "load_ms": result.timings.load_ms,
        "generate_ms": result.timings.generate_ms,
        "model": result.model,
        "device": result.device,
        "backend": result.backend,
        "notes": list(result.notes),
        "assisted_decoding": result.assisted.as_dict() if result.assisted is not None else None,
    }
