"""Issue 11 item 4 at every door: a stream the caller drops after its first chunk stops generating and frees the
engine. The tiny Phi-3 runs for real; a wrapper around its backend only forces long answers (ignore_eos) and counts
the tokens each generation really produced."""

from __future__ import annotations

import gc
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from phi3_aipc.chat import ChatTurn
from phi3_aipc.engine import Engine, get_engine
from phi3_aipc.params import GenerationParams

LONG = 2000


@pytest.fixture
def forced(tiny_phi3_ov: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Engine, list[int]]:
    pytest.importorskip("openvino_genai")
    engine = get_engine(str(tiny_phi3_ov), "cpu")
    engine.wait_for_warm_up()  # a warm-up still running would be recorded as a stream
    real = engine.backend.generate
    produced: list[int] = []

    def generate(prompt: str, params: GenerationParams, on_text: Any, constraint: Any = None) -> Any:
        output = real(prompt, replace(params, ignore_eos=True), on_text, constraint)
        produced.append(output.completion_tokens)
        return output

    monkeypatch.setattr(engine.backend, "generate", generate)
    return engine, produced


def _stream(door: str, model: str, engine: Engine) -> Any:
    if door == "chat_turn":
        return ChatTurn(
            [{"role": "user", "content": "hi"}], params=GenerationParams(max_new_tokens=LONG)
        ).stream(engine)
    if door == "langchain":
        from langchain_phi3_aipc import ChatPhi3AIPC

        return ChatPhi3AIPC(model=model, device="cpu", max_tokens=LONG).stream("hi")
    from llama_index.core.base.llms.types import ChatMessage

    from llama_index_phi3_aipc import Phi3AIPC

    return Phi3AIPC(model=model, device="cpu", max_new_tokens=LONG).stream_chat(
        [ChatMessage(role="user", content="hi")]
    )


@pytest.mark.parametrize("door", ["chat_turn", "langchain", "llamaindex"])
def test_a_stream_dropped_after_its_first_chunk_frees_the_engine(
    forced: tuple[Engine, list[int]], door: str, tiny_phi3_ov: Path
) -> None:
    engine, produced = forced
    stream = _stream(door, str(tiny_phi3_ov), engine)
    next(stream)
    del stream
    gc.collect()
    after = engine.generate([{"role": "user", "content": "hi"}], GenerationParams(max_new_tokens=4))
    assert after.completion_tokens == 4 and after.finish_reason == "length"
    dropped, _ = produced
    assert dropped < LONG // 4, f"the dropped stream went on for {dropped} tokens"
