"""LangChain's own ChatOpenAI (a peer client we did not write) against `phi3-aipc serve` over loopback."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from server_helpers import API_KEY, Served

pytestmark = pytest.mark.smollm2


class City(BaseModel):
    """A city and its country."""

    city: str
    country: str


def chat_openai(served: Served, **kwargs: Any) -> Any:
    langchain_openai = pytest.importorskip("langchain_openai")
    return langchain_openai.ChatOpenAI(
        base_url=served.base_url, api_key=API_KEY, model="smollm2", max_retries=0, **kwargs
    )


def test_invoke_and_stream(served: Served) -> None:
    llm = chat_openai(served, max_tokens=24, temperature=0)
    message = llm.invoke("What is the capital of France?")
    assert message.content.strip() and message.response_metadata["finish_reason"] in ("stop", "length")
    usage = message.usage_metadata
    assert (
        usage["input_tokens"] > 0 and usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    )

    merged = None
    for chunk in chat_openai(served, max_tokens=24, temperature=0, stream_usage=True).stream(
        "What is the capital of France?"
    ):
        merged = chunk if merged is None else merged + chunk
    assert merged.content == message.content
    assert merged.usage_metadata["output_tokens"] == usage["output_tokens"]


def test_bound_tool_is_called(served: Served) -> None:
    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        return "18 C"

    llm = chat_openai(served, max_tokens=40).bind_tools([get_weather], tool_choice="get_weather")
    message = llm.invoke("What is the weather in Paris?")
    (call,) = message.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str) and call["id"]
    assert message.invalid_tool_calls == []


def test_structured_output_json_schema(served: Served) -> None:
    llm = chat_openai(served, max_tokens=48).with_structured_output(City, method="json_schema")
    city = llm.invoke("Name a city in Japan and its country.")
    assert isinstance(city, City) and city.city and city.country


def test_a_prompt_over_the_window_is_its_context_error_streamed_or_not(served: Served) -> None:
    """Issue 23 item 3: streamed, the status used to be 200 with an error event, which ChatOpenAI cannot map."""
    from langchain_core.exceptions import ContextOverflowError

    long = "word " * 9000
    with pytest.raises(ContextOverflowError):
        chat_openai(served, max_tokens=4).invoke(long)
    with pytest.raises(ContextOverflowError):
        list(chat_openai(served, max_tokens=4).stream(long))
