"""A LangChain stream held after its first chunk and not read on gives way to the next caller (issue 23 item 20).

Before, its generation ran on to max_tokens into a buffer nobody read, and the next call waited behind it.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

pytestmark = pytest.mark.smollm2

BUDGET = 300
#: The held stream's budget: with IDLE_S cut to 0.25 s, far more than any CPU decodes before it must give way.
HELD_BUDGET = 1500
LONG_ASK = "Write a very long story about a dragon who learns to paint, at least 600 words."


@pytest.fixture
def chat(smollm2_gguf: Any) -> Any:
    pytest.importorskip("langchain_core")
    from langchain_phi3_aipc import ChatPhi3AIPC

    return ChatPhi3AIPC(model="smollm2", device="cpu", max_tokens=BUDGET)


def _long_first_answer(engine: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The real backend, with ignore_eos on its first call only (so that answer would run to BUDGET tokens on any
    CPU); records each call's completion tokens."""
    engine.wait_for_warm_up()  # a warm-up still running would take the first call's place
    real = engine.backend.generate
    counts: list[int] = []

    def generate_first_without_eos(prompt: str, params: Any, on_text: Any, constraint: Any = None) -> Any:
        if not counts:
            params = dataclasses.replace(params, ignore_eos=True)
        counts.append(-1)
        index = len(counts) - 1
        output = real(prompt, params, on_text, constraint)
        counts[index] = output.completion_tokens
        return output

    monkeypatch.setattr(engine.backend, "generate", generate_first_without_eos)
    return counts


def test_a_held_stream_gives_way_to_the_next_caller(chat: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from phi3_aipc.engine import get_engine

    # The stream gives way after IDLE_S unread while someone waits; a short IDLE_S and a long budget keep that from
    # depending on how fast this CPU decodes (at 2 s, a fast CPU finishes 300 tokens before it would give way).
    monkeypatch.setattr("phi3_aipc.engine.streams.IDLE_S", 0.25)
    engine = get_engine("smollm2", "cpu")
    counts = _long_first_answer(engine, monkeypatch)
    held = chat.stream(LONG_ASK, max_tokens=HELD_BUDGET)
    first = next(held)  # generating; the caller now holds the iterator and reads no more
    answer = chat.invoke("Hi", max_tokens=4)  # waits for the engine
    assert answer.usage_metadata["output_tokens"] >= 1
    assert counts[0] < HELD_BUDGET  # the held generation stopped for it, rather than run on to its budget
    merged = first
    for chunk in held:  # reading on: the text made so far, then the end, saying why
        merged = merged + chunk
    assert merged.response_metadata["finish_reason"] == "cancelled"
    assert any("not read" in note for note in merged.response_metadata["notes"])  # and why
    assert merged.usage_metadata["output_tokens"] == counts[0]


def test_a_stream_read_as_it_comes_is_not_cut_by_a_waiting_caller(
    chat: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from phi3_aipc.engine import get_engine

    engine = get_engine("smollm2", "cpu")
    counts = _long_first_answer(engine, monkeypatch)
    started = threading.Event()
    waiting: list[Any] = []

    def other_caller() -> None:
        started.wait(120)
        waiting.append(chat.invoke("Hi", max_tokens=4))

    thread = threading.Thread(target=other_caller)
    thread.start()
    merged = None
    for chunk in chat.stream(LONG_ASK, max_tokens=60):
        started.set()
        merged = chunk if merged is None else merged + chunk
    thread.join(120)
    assert merged is not None and merged.response_metadata["finish_reason"] == "length"
    assert counts[0] == 60 and waiting and waiting[0].usage_metadata["output_tokens"] >= 1
