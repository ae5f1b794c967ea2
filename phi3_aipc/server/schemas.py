"""The OpenAI request bodies the server accepts, as pydantic models that refuse unknown fields.

Only what the server honours is accepted: a field it would silently ignore (``n=3``, ``logprobs``) is a 400, so a
client never believes it got something it did not. Three fields beyond OpenAI's follow vLLM's spelling (``top_k``,
``repetition_penalty``, ``ignore_eos``), so one client works against either server.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Fields of OpenAI's schema this server does not honour. SDKs send them as null (an assistant message from
    #: ``model_dump()`` carries ``annotations``, ``audio`` and ``function_call``): null (or empty) is accepted as
    #: absent, any other value refused as unsupported. Names outside OpenAI's schema stay unknown fields.
    unhonoured: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _absent_when_null(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not cls.unhonoured:
            return data
        for name in cls.unhonoured:
            if name in data and data[name] not in (None, [], {}):
                raise PydanticCustomError(
                    "unsupported",
                    "'{name}' is not supported by this server (it is accepted only as null)",
                    {"name": name},
                )
        return {key: value for key, value in data.items() if key not in cls.unhonoured}


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ImageUrl(Strict):
    #: A data: URL ('data:image/png;base64,...'); a web URL is refused (never fetched).
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(Strict):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(Strict):
    name: str
    arguments: str = "{}"


class ToolCallIn(Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(Strict):
    unhonoured = ("annotations", "audio", "function_call")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None
    # Sent back by some clients on assistant messages; there is nothing to do with it.
    refusal: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, content: Any) -> Any:
        for part in content if isinstance(content, list) else ():
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            if kind not in ("text", "image_url"):
                raise PydanticCustomError(
                    "unsupported_part",
                    "only text and image_url content parts are supported, not '{kind}' parts",
                    {"kind": kind},
                )
        return content


class FunctionDef(Strict):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(Strict):
    name: str


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaSpec(Strict):
    name: str = "response"
    description: str | None = None
    # Called "schema" on the wire; a pydantic field named schema would shadow BaseModel.schema.
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class StreamOptions(Strict):
    include_usage: bool = False


class SamplingFields(Strict):
    """The fields both endpoints share."""

    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    # Honoured only at their no-op values (n=1, no penalties): anything else is refused, not ignored.
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    # vLLM's extensions.
    top_k: int | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool = False


class ChatCompletionRequest(SamplingFields):
    unhonoured = (
        "logit_bias",
        "top_logprobs",
        "modalities",
        "prediction",
        "audio",
        "service_tier",
        "functions",
        "function_call",
        "reasoning_effort",
        "web_search_options",
    )

    messages: list[Message]
    max_completion_tokens: int | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None


class CompletionRequest(SamplingFields):
    unhonoured = ("best_of", "logit_bias", "suffix")

    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = None
