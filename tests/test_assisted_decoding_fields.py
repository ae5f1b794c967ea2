"""``prompt_lookup`` and ``draft_model`` reach the engine from every front door: ChatPhi3AIPC and Phi3AIPC
(LangChain), Phi3AIPC (LlamaIndex), and `phi3-aipc serve` / `ask` / `chat` (--prompt-lookup, --draft-model); the
acceptance figures come back in each adapter's metadata. Run on the tiny Phi-3 (its own draft: every draft
accepted) and on SmolLM2 for the text."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from phi3_aipc.backends.openvino_assist import ASSISTED_MIN_GENAI, genai_version
from phi3_aipc.cli import serve
from phi3_aipc.cli.common import engine_options
from phi3_aipc.engine.load_options import with_speed_options
from phi3_aipc.errors import InvalidParameterError
from phi3_aipc.testing.precision import LLM_F32_STEPS

QUESTION = "Repeat exactly: the cat sat on the mat and the dog sat on the log."


needs_assisted = pytest.mark.skipif(
    genai_version() < ASSISTED_MIN_GENAI, reason="assisted decoding needs a newer openvino-genai"
)


@needs_assisted
def test_langchain_chat_model_passes_both_fields_and_reports_acceptance(tiny_phi3_ov: Path) -> None:
    pytest.importorskip("langchain_core")
    from langchain_phi3_aipc import ChatPhi3AIPC

    llm = ChatPhi3AIPC(
        model=str(tiny_phi3_ov),
        device="cpu",
        max_tokens=12,
        draft_model=str(tiny_phi3_ov),
        options=LLM_F32_STEPS,
    )
    message = llm.invoke("Hello, how are you?")
    assisted = message.response_metadata["assisted_decoding"]
    assert assisted["method"] == "draft_model" and assisted["acceptance_rate"] == 1.0
    off = ChatPhi3AIPC(model=str(tiny_phi3_ov), device="cpu", prompt_lookup=False)
    assert off._get_engine().backend.assist.method is None


@needs_assisted
def test_langchain_llm_and_chat_model_give_the_same_text_with_prompt_lookup(smollm2_gguf: Path) -> None:
    pytest.importorskip("langchain_core")
    from langchain_phi3_aipc import ChatPhi3AIPC, Phi3AIPC

    def answer(prompt_lookup: bool) -> str:
        chat = ChatPhi3AIPC(
            model="smollm2", device="cpu", max_tokens=32, prompt_lookup=prompt_lookup, options=LLM_F32_STEPS
        )
        return str(chat.invoke(QUESTION).content)

    assert answer(True) == answer(False)
    llm = Phi3AIPC(model="smollm2", device="cpu", max_tokens=8, prompt_lookup=True, options=LLM_F32_STEPS)
    assert llm._get_engine().backend.assist.num_assistant_tokens == 5
    assert llm._identifying_params["prompt_lookup"] is True


@needs_assisted
def test_llamaindex_llm_passes_both_fields_and_reports_acceptance(tiny_phi3_ov: Path) -> None:
    pytest.importorskip("llama_index.core")
    from llama_index_phi3_aipc import Phi3AIPC

    llm = Phi3AIPC(
        model=str(tiny_phi3_ov),
        device="cpu",
        max_new_tokens=12,
        draft_model=str(tiny_phi3_ov),
        options=LLM_F32_STEPS,
    )
    response = llm.complete("Hello, how are you?")
    assert response.raw["assisted_decoding"]["acceptance_rate"] == 1.0
    assert (
        Phi3AIPC(model=str(tiny_phi3_ov), device="cpu", prompt_lookup=False).engine.backend.assist.method
        is None
    )


def test_a_field_and_an_option_that_disagree_are_an_error() -> None:
    assert with_speed_options({"x": 1}, None, None) == {"x": 1}
    assert with_speed_options({}, True, "d") == {"prompt_lookup": True, "draft_model": "d"}
    with pytest.raises(InvalidParameterError, match="disagree"):
        with_speed_options({"prompt_lookup": False}, True, None)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], {}),
        (["--prompt-lookup"], {"prompt_lookup": True}),
        (["--no-prompt-lookup"], {"prompt_lookup": False}),
        (
            ["--draft-model", "auto", "-o", "NUM_ASSISTANT_TOKENS=3"],
            {"draft_model": "auto", "NUM_ASSISTANT_TOKENS": 3},
        ),
    ],
)
def test_serve_flags_become_engine_options(flags: list[str], expected: dict[str, object]) -> None:
    parser = argparse.ArgumentParser()
    serve.add_arguments(parser)
    assert engine_options(parser.parse_args(["--model", "smollm2", *flags])) == expected
