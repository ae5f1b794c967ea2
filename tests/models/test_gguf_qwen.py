"""The real Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF, as users have it, loads through the conversion and answers.

OpenVINO GenAI cannot read this file itself (its Q5_0 layers); ``get_engine(path)`` converts it once through
transformers into the export cache. This is the GGUF itself, never $PHI3_AIPC_TEST_QWEN (a dev shortcut to a
hand-exported IR), so the test takes the path CI and users take.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phi3_aipc import GenerationParams, get_engine
from phi3_aipc.models import files, resolve

pytestmark = [pytest.mark.slow]

IM_END = 151645


@pytest.fixture(scope="module")
def qwen_gguf(model_cache: Path) -> Path:
    pytest.importorskip("optimum.intel")  # the conversion's exporter (the export extra)
    from phi3_aipc.testing.qwen import qwen_coder_gguf

    return qwen_coder_gguf(model_cache)


def test_qwen_coder_gguf_is_converted_and_answers(qwen_gguf: Path) -> None:
    engine = get_engine(str(qwen_gguf), "cpu")
    question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    reply = engine.generate(question, GenerationParams(max_new_tokens=32))
    assert "Paris" in reply.text
    # It stopped on its own end of turn (<|im_end|>), well before the token limit, and the marker is not text.
    assert reply.finish_reason == "stop" and reply.completion_tokens < 32
    assert "<|im_end|>" not in reply.text


def test_converted_qwen_keeps_its_tool_template_and_stop_token(qwen_gguf: Path) -> None:
    import openvino_genai as ov_genai
    from gguf import GGUFReader

    artifact = resolve(str(qwen_gguf), "CPU", "openvino")
    assert artifact.format == "openvino-ir"
    template = ov_genai.Tokenizer(str(artifact.path)).chat_template
    own = GGUFReader(str(qwen_gguf)).fields["tokenizer.chat_template"].contents()
    assert template == own
    assert "tools" in template and "<tool_call>" in template and "tool_response" in template
    assert json.loads((artifact.path / "generation_config.json").read_text())["eos_token_id"] == IM_END
    facts = files.read_facts(artifact.path, "openvino-ir")
    assert facts.model_type == "qwen2" and facts.vocab_size == 151936
    assert {"<|im_start|>", "<|im_end|>", "<|endoftext|>"} <= artifact.special_tokens
    assert artifact.context_window == 32768
