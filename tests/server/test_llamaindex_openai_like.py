"""LlamaIndex's own OpenAILike (a peer client we did not write) against `phi3-aipc serve` over loopback: it keeps
working behind the Host/Origin/content-type guard, and a prompt over the window is an error, streamed or not."""

from __future__ import annotations

from typing import Any

import pytest
from server_helpers import API_KEY, Served

pytestmark = pytest.mark.smollm2


def openai_like(served: Served, **kwargs: Any) -> Any:
    module = pytest.importorskip("llama_index.llms.openai_like")
    return module.OpenAILike(
        api_base=served.base_url,
        api_key=API_KEY,
        model="smollm2",
        is_chat_model=True,
        max_retries=0,
        **kwargs,
    )


def test_chat_whole_and_streamed(served: Served) -> None:
    from llama_index.core.llms import ChatMessage

    llm = openai_like(served, max_tokens=24, temperature=0)
    question = [ChatMessage(role="user", content="What is the capital of France?")]
    whole = llm.chat(question).message.content
    streamed = "".join(part.delta or "" for part in llm.stream_chat(question))
    assert whole and whole.strip() and streamed == whole


def test_a_prompt_over_the_window_raises_streamed_or_not(served: Served) -> None:
    import openai
    from llama_index.core.llms import ChatMessage

    llm = openai_like(served, max_tokens=4)
    long = [ChatMessage(role="user", content="word " * 9000)]
    with pytest.raises(openai.BadRequestError, match="context window"):
        llm.chat(long)
    with pytest.raises(openai.BadRequestError, match="context window"):
        list(llm.stream_chat(long))
