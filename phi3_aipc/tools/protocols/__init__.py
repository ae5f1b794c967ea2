"""Tool-call formats, one file each; a model family names its format in ``phi3_aipc.families``.

Adding a format: subclass :class:`JsonTagsProtocol` in a new file and add one row to ``PROTOCOLS``.
"""

from __future__ import annotations

from phi3_aipc.families import ModelFamily, family
from phi3_aipc.tools.protocols.json_tags import JsonTagsProtocol
from phi3_aipc.tools.protocols.phi4 import Phi4Protocol

PROTOCOLS: dict[str, type[JsonTagsProtocol]] = {
    JsonTagsProtocol.name: JsonTagsProtocol,
    Phi4Protocol.name: Phi4Protocol,
}


def protocol_for(model_family: str | ModelFamily | None) -> JsonTagsProtocol:
    """The tool-call format of a model family ('phi3', 'phi4', 'other' or a ModelFamily)."""
    return PROTOCOLS[family(model_family).tool_format]()


__all__ = ["PROTOCOLS", "JsonTagsProtocol", "Phi4Protocol", "protocol_for"]
