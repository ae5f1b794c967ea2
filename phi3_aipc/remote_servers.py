"""What each OpenAI-compatible server takes beyond the OpenAI API: the one table remote mode reads.

A server is recognised by the ``owned_by`` of the models it lists (``GET /v1/models``): ``phi3-aipc serve`` says
"phi3-aipc", vLLM "vllm", llama-cpp-python's server "me" (its source spells it so) and llama.cpp's own
``llama-server`` "llamacpp". An unrecognised server gets the OpenAI parameters plus vLLM's extensions (the most
common dialect), with a warning that the extensions may be ignored.

``response_format`` is the constraint: "json_schema" (OpenAI's ``{"type": "json_schema", "json_schema": ...}``),
"json_object" (``{"type": "json_object", "schema": ...}``: llama-cpp-python turns the schema into a grammar) or
"none". A server that refuses the form it was sent is asked again with the next one (see ``FALLBACK``), and the
result's notes say which one was used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The constraint forms in the order remote mode tries them.
FALLBACK = ("json_schema", "json_object", "none")
#: Parameters that are not OpenAI's (vLLM's extensions, which phi3-aipc serve takes too).
EXTENSIONS = ("top_k", "repetition_penalty", "ignore_eos")


@dataclass(frozen=True)
class ServerDialect:
    """How one kind of server spells what the OpenAI API does not have."""

    name: str
    #: Our parameter name -> the server's (llama.cpp calls repetition_penalty repeat_penalty).
    renamed: Mapping[str, str] = field(default_factory=dict)
    #: Parameters the server does not take at all (sending them would be silently ignored).
    unsupported: frozenset[str] = frozenset()
    #: The first constraint form to try (see FALLBACK).
    response_format: str = "json_schema"
    #: Whether its own parameters are known: an unknown server is warned about when extensions are used.
    known: bool = True
    #: Whether it says which stop string ended an answer (``stop_reason``). One that does not (llama-cpp-python
    #: cuts the stop text and reports "stop", as for EOS) is not sent the stops: they are cut here, where the match
    #: is seen, and the connection is closed there, which ends the generation.
    reports_stop: bool = True


DIALECTS: dict[str, ServerDialect] = {
    "phi3-aipc": ServerDialect("phi3-aipc serve"),
    "vllm": ServerDialect("vLLM"),
    "me": ServerDialect(
        "llama-cpp-python",
        renamed={"repetition_penalty": "repeat_penalty"},
        unsupported=frozenset({"ignore_eos"}),
        response_format="json_object",
        reports_stop=False,
    ),
    "llamacpp": ServerDialect(
        "llama.cpp server", renamed={"repetition_penalty": "repeat_penalty"}, unsupported=frozenset()
    ),
}
UNKNOWN = ServerDialect("an unrecognised OpenAI-compatible server", known=False)


def dialect_of(models_body: Any) -> ServerDialect:
    """The dialect from a ``GET /v1/models`` body (UNKNOWN when it is not a model list or no owner is known)."""
    data = models_body.get("data") if isinstance(models_body, dict) else None
    for card in data if isinstance(data, list) else ():
        owner = card.get("owned_by") if isinstance(card, dict) else None
        if isinstance(owner, str) and owner in DIALECTS:
            return DIALECTS[owner]
    return UNKNOWN


def translate(dialect: ServerDialect, extensions: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(the body fields to send, notes) for the non-OpenAI parameters that were set."""
    body: dict[str, Any] = {}
    notes: list[str] = []
    for name, value in extensions.items():
        if name in dialect.unsupported:
            notes.append(f"{dialect.name} does not take {name}; it was not sent and has no effect.")
        elif name in dialect.renamed:
            body[dialect.renamed[name]] = value
        else:
            body[name] = value
    unknown_sent = [name for name in extensions if name in EXTENSIONS and not dialect.known]
    if unknown_sent:
        notes.append(
            f"The server is not one remote mode recognises (by GET /v1/models owned_by): {', '.join(unknown_sent)} "
            "are not OpenAI parameters and it may ignore them."
        )
    return body, notes
