"""Tool-call formats, one class each; the model's chat template (or its family) picks one.

| format        | what a call looks like                                   | models                          |
|---------------|----------------------------------------------------------|---------------------------------|
| ``hermes``    | ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`` | Qwen2.5/3, SmolLM3, Hermes |
| ``llama3_json`` | ``{"name": ..., "parameters": {...}}``                 | Llama 3.1-3.3                   |
| ``mistral``   | ``[TOOL_CALLS][{"name": ..., "arguments": {...}}]``      | Mistral                         |
| ``phi4``      | ``<|tool_call|>[{"name": ..., "arguments": {...}}]<|/tool_call|>`` | Phi-4-mini             |
| ``json_tags`` | ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, taught by our prompt | templates without tools (Phi-3, Phi-3.5, SmolLM2) |

Adding a format: a subclass in ``native.py`` (template renders tools) or of :class:`JsonTagsProtocol`, one row here,
and one line in ``native.detect_format``.
"""

from __future__ import annotations

from phi3_aipc.families import ModelFamily, family
from phi3_aipc.tools.protocols.json_tags import JsonTagsProtocol
from phi3_aipc.tools.protocols.native import (
    HermesProtocol,
    Llama3JsonProtocol,
    MistralProtocol,
    TemplateToolsProtocol,
    detect_format,
)
from phi3_aipc.tools.protocols.phi4 import Phi4Protocol

PROTOCOLS: dict[str, type[JsonTagsProtocol]] = {
    JsonTagsProtocol.name: JsonTagsProtocol,
    Phi4Protocol.name: Phi4Protocol,
    HermesProtocol.name: HermesProtocol,
    Llama3JsonProtocol.name: Llama3JsonProtocol,
    MistralProtocol.name: MistralProtocol,
}


def protocol_for(
    model_family: str | ModelFamily | None, chat_template: str | None = None
) -> JsonTagsProtocol:
    """The tool-call format for a model: its family's when the family has a native one (Phi-4), else what its chat
    template renders (``detect_format``), else JSON in tags."""
    name = family(model_family).tool_format
    if name == JsonTagsProtocol.name:
        name = detect_format(chat_template)
    return PROTOCOLS[name]()


__all__ = [
    "PROTOCOLS",
    "HermesProtocol",
    "JsonTagsProtocol",
    "Llama3JsonProtocol",
    "MistralProtocol",
    "Phi4Protocol",
    "TemplateToolsProtocol",
    "detect_format",
    "protocol_for",
]
