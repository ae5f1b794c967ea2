"""A client that goes away mid-stream stops its generation; 32 concurrent streams all complete, each its own.

The load test is bounded: loopback only, a fixed number of requests, each with a fixed number of tokens.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from server_helpers import API_KEY, Served

pytestmark = pytest.mark.smollm2

LONG = 200
CONCURRENT = 32
TOKENS_EACH = 6


def test_a_client_that_disconnects_mid_stream_cancels_its_generation(
    served: Served, produced: list[int]
) -> None:
    import httpx

    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": LONG,
        "ignore_eos": True,  # the answer would run to LONG tokens unless the disconnect stops it
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", f"{served.base_url}/chat/completions", json=body, headers=headers) as response,
    ):
        lines = response.iter_lines()
        received = [line for line, _ in zip(lines, range(6), strict=False) if line.startswith("data:")]
    assert len(received) >= 3  # the stream was running when the client left
    # The connection is closed; the engine's job ends at its next token (this waits for that, it times nothing).
    deadline = time.monotonic() + 60
    while not produced and time.monotonic() < deadline:
        time.sleep(0.05)
    assert produced and produced[0] < LONG
    # The engine is free and serves the next request in full.
    after = served.openai().chat.completions.create(
        model="smollm2", messages=body["messages"], max_tokens=4, extra_body={"ignore_eos": True}
    )
    assert after.usage.completion_tokens == 4


async def test_32_concurrent_streams_complete_each_with_its_own_answer(served: Served) -> None:
    import openai

    client = openai.AsyncOpenAI(base_url=served.base_url, api_key=API_KEY, max_retries=0, timeout=300)
    # Request i's prompt is i words longer than request 0's: its prompt_tokens say which request a response answers.
    prompts = [[{"role": "user", "content": "Say ok." + " ok" * i}] for i in range(CONCURRENT)]

    async def one(messages: list[dict[str, str]]) -> list[Any]:
        stream = await client.chat.completions.create(
            model="smollm2",
            messages=messages,
            max_tokens=TOKENS_EACH,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
        return [chunk async for chunk in stream]

    results = await asyncio.gather(*(one(p) for p in prompts), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == []
    engine = served.engine
    ids = set()
    for messages, chunks in zip(prompts, results, strict=True):
        (stream_id,) = {c.id for c in chunks}
        ids.add(stream_id)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        usage = chunks[-1].usage
        assert text and finals == ["length"] and usage.completion_tokens == TOKENS_EACH
        assert usage.prompt_tokens == engine.count_tokens(engine.format_chat(messages))
    assert len(ids) == CONCURRENT
    await client.close()
