"""The rules every message follows before a chat template sees it: content is data, never control.

- roles are system, user, assistant or tool (``developer``, ``human``, ``ai``, ``function`` are mapped);
- content is a string (None only on an assistant message that just calls tools); anything else is refused with an
  error that says what to pass, rather than rendered as a Python repr;
- text that spells one of the model's control tokens (``<|end|>``, ``<|im_start|>``) gets a zero-width space after
  its first character, so the tokenizer reads it as plain text and a retrieved document cannot forge a turn. This
  holds for every string that reaches the prompt, whatever field it came from: content, a tool result's name,
  earlier calls' names and arguments, tool and schema descriptions (``neutralise_value``).

The engine applies them to every message list it is given; the chat turn applies them before its tool protocol adds
the model's own markup.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from phi3_aipc.errors import InvalidParameterError

ROLES = ("system", "user", "assistant", "tool")
#: Spellings some frameworks use for the four roles the chat templates know.
ROLE_ALIASES = {"developer": "system", "human": "user", "ai": "assistant", "function": "tool"}
#: Inserted after the first character of control-token text inside content: invisible, and it keeps any tokenizer
#: from matching the control token.
NEUTRALISER = "\u200b"


def check_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise InvalidParameterError(
            "messages must be a non-empty list of {'role': ..., 'content': ...} dicts."
        )
    checked = [check_message(index, message) for index, message in enumerate(messages)]
    if any(m.get("images") for m in checked):
        from phi3_aipc.images import check_count

        check_count([image for m in checked for image in m.get("images") or ()])
    return checked


def check_message(index: int, message: Any) -> dict[str, Any]:
    if not isinstance(message, Mapping):
        raise InvalidParameterError(
            f"Message {index} must be a dict with 'role' and 'content', got {message!r}."
        )
    role = message.get("role")
    role = ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
    if role not in ROLES:
        raise InvalidParameterError(
            f"Message {index} has the role {message.get('role')!r}; the chat templates know only "
            f"{', '.join(ROLES)}. Map it to one of those."
        )
    content = message.get("content")
    if message.get("images") is not None:
        # Images ride beside the text (decoded and checked now); the chat turn places them (phi3_aipc.images).
        from phi3_aipc.images import check_message_images

        images = check_message_images(index, role, message["images"])
        return {
            **message,
            "role": role,
            "content": _text_beside_images(index, role, content),
            "images": images,
        }
    if content is None and not (role == "assistant" and message.get("tool_calls")):
        raise InvalidParameterError(f"Message {index} ({role}) has no content; pass its text as a string.")
    if content is not None and not isinstance(content, str):
        raise InvalidParameterError(
            f"Message {index} ({role}) has content of type {type(content).__name__}; the models here take text "
            f"only: pass a string (join text parts; extract text from documents first)."
        )
    return {**message, "role": role, "content": content or ""}


def _text_beside_images(index: int, role: str, content: Any) -> str:
    if content is not None and not isinstance(content, str):
        raise InvalidParameterError(
            f"Message {index} ({role}) has content of type {type(content).__name__} beside its images; pass the "
            f"text as a string."
        )
    return content or ""


def neutralise_messages(
    messages: list[dict[str, Any]], special_tokens: Iterable[str]
) -> list[dict[str, Any]]:
    """Every string a message carries, neutralised: its content, and also a tool result's ``name``, earlier calls'
    names, ids and arguments (keys and values, however deep), and any other field a template may print."""
    tokens = control_spellings(special_tokens)
    if not tokens:
        return messages
    # A message's role is ours to check, not text; decoded images (main's "images" field) are not text either.
    return [neutralise_value(m, tokens, keep=("role", "images")) for m in messages]


def control_spellings(special_tokens: Iterable[str]) -> list[str]:
    """The control tokens worth breaking (single characters cannot be), longest first."""
    return sorted((t for t in special_tokens if len(t) > 1), key=len, reverse=True)


def neutralise_value(value: Any, tokens: Sequence[str], keep: tuple[str, ...] = ()) -> Any:
    """``value`` (a string, or JSON-like dicts and lists of them) with every string in it neutralised, dict keys
    included; the fields named in ``keep`` (a message's role) stay as they are."""
    if isinstance(value, str):
        return neutralise(value, tokens)
    if isinstance(value, Mapping):
        return {
            (neutralise(k, tokens) if isinstance(k, str) else k): (
                v if k in keep else neutralise_value(v, tokens)
            )
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [neutralise_value(v, tokens) for v in value]
    return value


def neutralise(text: str, special_tokens: Sequence[str]) -> str:
    """``text`` with every control-token spelling broken by a zero-width space, so it tokenizes as plain text."""
    for token in special_tokens:
        if token in text:
            text = text.replace(token, token[0] + NEUTRALISER + token[1:])
    return text
