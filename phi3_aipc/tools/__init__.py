"""Tool calling and structured output for models without an API: neutral types, formats, parsing.

- ``spec``: the neutral types (ToolSpec, ToolCall, InvalidToolCall) and argument validation;
- ``protocols/``: one tool-call format per file (JSON in tags for Phi-3 and others, Phi-4-mini's native format);
- ``stream``: the one parser that turns model text into text and calls, whole or streamed;
- ``structured``: JSON schemas for structured output, the prompt instruction, and reading the answer back;
- ``json_text``: bounded JSON reading, so no model output can crash a parser.

The chat turn (``phi3_aipc.chat``) puts these together; front doors never call them piecemeal.
"""

from phi3_aipc.tools.protocols import JsonTagsProtocol, Phi4Protocol, protocol_for
from phi3_aipc.tools.spec import (
    InvalidToolCall,
    ParsedOutput,
    ToolCall,
    ToolSpec,
    normalise_tool_choice,
    to_tool_specs,
    validate_arguments,
)
from phi3_aipc.tools.stream import ToolStreamParser
from phi3_aipc.tools.structured import (
    OutputParseError,
    json_schema_of,
    parse_json_output,
    with_json_instructions,
)

__all__ = [
    "InvalidToolCall",
    "JsonTagsProtocol",
    "OutputParseError",
    "ParsedOutput",
    "Phi4Protocol",
    "ToolCall",
    "ToolSpec",
    "ToolStreamParser",
    "json_schema_of",
    "normalise_tool_choice",
    "parse_json_output",
    "protocol_for",
    "to_tool_specs",
    "validate_arguments",
    "with_json_instructions",
]
