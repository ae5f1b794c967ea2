"""Remote mode of both adapters (base_url=...) against `phi3-aipc serve` over loopback.

The server runs the same engine this process uses locally, so a remote answer is compared with the local answer to
the same request, here, on the same engine: equal text and usage mean the same prompt and the same parsing.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from pydantic import BaseModel
from server_helpers import API_KEY, MAX_TOKENS_LIMIT, SMOLLM2, Served

from phi3_aipc.errors import InvalidParameterError

pytestmark = pytest.mark.smollm2

QUESTION = "What is the capital of France?"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


class City(BaseModel):
    """A city and its country."""

    city: str
    country: str


def lc(served: Served | None = None, **kwargs: Any) -> Any:
    pytest.importorskip("langchain_core")
    from langchain_phi3_aipc import ChatPhi3AIPC

    if served is None:
        return ChatPhi3AIPC(**SMOLLM2, **kwargs)
    return ChatPhi3AIPC(base_url=served.base_url, api_key=API_KEY, model="smollm2", **kwargs)


def li(served: Served | None = None, **kwargs: Any) -> Any:
    pytest.importorskip("llama_index.core")
    from llama_index_phi3_aipc import Phi3AIPC

    if served is None:
        return Phi3AIPC(**SMOLLM2, **kwargs)
    return Phi3AIPC(base_url=served.base_url, api_key=API_KEY, model="smollm2", **kwargs)


# -- LangChain -------------------------------------------------------------------------------------------------------
def test_langchain_remote_answers_as_local(served: Served) -> None:
    remote, local = lc(served, max_tokens=24).invoke(QUESTION), lc(max_tokens=24).invoke(QUESTION)
    assert remote.content == local.content and remote.content.strip()
    assert remote.usage_metadata == local.usage_metadata
    assert remote.response_metadata["finish_reason"] == local.response_metadata["finish_reason"]
    assert remote.response_metadata["backend"] == "remote"

    merged = None
    for chunk in lc(served, max_tokens=24).stream(QUESTION):
        merged = chunk if merged is None else merged + chunk
    assert merged.content == local.content and merged.usage_metadata == local.usage_metadata


async def test_langchain_remote_async(served: Served) -> None:
    local = lc(max_tokens=24).invoke(QUESTION)
    assert (await lc(served, max_tokens=24).ainvoke(QUESTION)).content == local.content
    parts = [chunk.content async for chunk in lc(served, max_tokens=24).astream(QUESTION)]
    assert len(parts) > 2 and "".join(parts) == local.content


def test_langchain_remote_exact_stop(served: Served) -> None:
    free = lc(max_tokens=24).invoke(QUESTION).content
    stop = free[len(free) // 2 : len(free) // 2 + 3]
    cut = lc(served, max_tokens=24, stop=[stop]).invoke(QUESTION)
    assert cut.content == free[: free.index(stop)]
    assert cut.response_metadata["finish_reason"] == "stop_string"


def test_langchain_remote_forced_tool_call(served: Served) -> None:
    message = (
        lc(served, max_tokens=48).bind_tools([WEATHER], tool_choice="get_weather").invoke("Weather in Paris?")
    )
    (call,) = message.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    assert message.response_metadata["finish_reason"] == "tool_calls"


def test_langchain_remote_structured_output_as_local(served: Served) -> None:
    ask = "Name a city in Japan and its country."
    remote = lc(served, max_tokens=48).with_structured_output(City, include_raw=True).invoke(ask)
    local = lc(max_tokens=48).with_structured_output(City, include_raw=True).invoke(ask)
    assert isinstance(remote["parsed"], City) and remote["parsed"] == local["parsed"]
    # The server takes off the JSON instruction the client's turn planned and adds its own: one prompt, as locally.
    assert remote["raw"].usage_metadata == local["raw"].usage_metadata


# -- LlamaIndex ------------------------------------------------------------------------------------------------------
def test_llamaindex_remote_chat_stream_and_complete(served: Served) -> None:
    from llama_index.core.base.llms.types import ChatMessage

    messages = [ChatMessage(role="user", content=QUESTION)]
    local = li(max_new_tokens=24).chat(messages)
    remote = li(served, max_new_tokens=24).chat(messages)
    assert remote.message.content == local.message.content
    assert remote.additional_kwargs["prompt_tokens"] == local.additional_kwargs["prompt_tokens"]
    last = list(li(served, max_new_tokens=24).stream_chat(messages))[-1]
    assert last.message.content == local.message.content
    assert (
        li(served, max_new_tokens=8).complete(QUESTION).text == li(max_new_tokens=8).complete(QUESTION).text
    )


def test_llamaindex_remote_tools_and_structured(served: Served) -> None:
    from llama_index.core.prompts import PromptTemplate
    from llama_index.core.tools import FunctionTool

    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        return "18 C"

    llm = li(served, max_new_tokens=48)
    response = llm.chat_with_tools(
        [FunctionTool.from_defaults(get_weather)], "Weather in Paris?", tool_required=True
    )
    (call,) = llm.get_tool_calls_from_response(response)
    assert call.tool_name == "get_weather" and isinstance(call.tool_kwargs["city"], str)

    prompt = PromptTemplate("Name a city in Japan and its country.")
    remote = llm.structured_predict(City, prompt)
    assert remote == li(max_new_tokens=48).structured_predict(City, prompt)


# -- the HTTP side ---------------------------------------------------------------------------------------------------
def test_closing_a_remote_stream_cancels_the_server_generation(served: Served, produced: list[int]) -> None:
    from phi3_aipc.params import GenerationParams
    from phi3_aipc.remote import RemoteEngine

    engine = RemoteEngine(served.base_url, "smollm2", api_key=API_KEY)
    stream = engine.stream(
        [{"role": "user", "content": "Tell a long story."}],
        GenerationParams(max_new_tokens=200, ignore_eos=True),
    )
    assert next(stream) and next(stream)
    stream.close()
    assert stream.result is not None and stream.result.finish_reason == "cancelled"
    deadline = time.monotonic() + 60  # waits for the server's job to end; it times nothing
    while not produced and time.monotonic() < deadline:
        time.sleep(0.05)
    assert produced and produced[0] < 200


def test_remote_errors_are_clear(served: Served) -> None:
    from phi3_aipc.params import GenerationParams
    from phi3_aipc.remote import RemoteEngine, RemoteError

    ask = [{"role": "user", "content": "Hi"}]
    with pytest.raises(RemoteError, match="API key"):
        RemoteEngine(served.base_url, "smollm2", api_key="wrong").generate(ask)
    with pytest.raises(InvalidParameterError, match="limit"):
        RemoteEngine(served.base_url, "smollm2", api_key=API_KEY).generate(
            ask, GenerationParams(max_new_tokens=MAX_TOKENS_LIMIT + 1)
        )
    with pytest.raises(RemoteError, match="Cannot reach"):
        RemoteEngine(served.root.rsplit(":", 1)[0] + ":9/v1", "smollm2", max_retries=0).generate(ask)
    with pytest.raises(InvalidParameterError, match="base_url"):
        RemoteEngine("localhost:8000", "smollm2")


def test_a_request_to_a_loading_server_is_retried_until_it_is_ready(served: Served) -> None:
    import httpx

    from phi3_aipc.remote import RemoteEngine
    from phi3_aipc.server import BackgroundServer, ServerConfig, create_app

    refused = threading.Event()

    def load() -> Any:
        refused.wait(60)  # the engine becomes ready only once a request was turned away with 503
        return served.engine

    app = create_app(load, ServerConfig(model_id="smollm2"))

    async def note_refusals(scope: Any, receive: Any, send: Any) -> None:
        async def watch(message: Any) -> None:
            if (
                message["type"] == "http.response.start"
                and message["status"] == 503
                and scope["path"] != "/health"
            ):
                refused.set()
            await send(message)

        await app(scope, receive, watch)

    with BackgroundServer(note_refusals) as server:
        assert httpx.get(server.base_url.removesuffix("/v1") + "/health").status_code == 503
        result = RemoteEngine(server.base_url, "smollm2", max_retries=6).generate(
            [{"role": "user", "content": "Hi"}]
        )
    assert refused.is_set() and result.completion_tokens > 0
