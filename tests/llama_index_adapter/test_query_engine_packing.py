"""A LlamaIndex query engine on the NPU pipeline, with more retrieved text than the prompt limit holds, answers
without any option: Phi3AIPC's metadata gives LlamaIndex's chunk packing the engine's real prompt budget.

The NPU's static pipeline runs on the CPU (NPUW_DEVICES=CPU) with the tiny random Phi-3 IR and MAX_PROMPT_LEN=2048
(LlamaIndex's refine step keeps 500 tokens free for the answer on top of num_output, so it needs a window that size;
the tiny tokenizer makes about twice as many tokens as LlamaIndex's of the same text). A SummaryIndex sends every
node to the synthesizer and needs no embedding model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document, SummaryIndex  # noqa: E402

from llama_index_phi3_aipc import Phi3AIPC  # noqa: E402

LIMIT = 2048
NPU_ON_CPU = {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": LIMIT, "MIN_RESPONSE_LEN": 64}
# About 3,000 of LlamaIndex's tokens in all: more than the prompt limit holds.
DOCUMENTS = [
    Document(text=f"Chunk {i}. The Seine is {776 + i} km long and flows through Paris to the Channel. " * 20)
    for i in range(8)
]


@pytest.fixture(scope="module")
def npu(tiny_phi3_ov: Path) -> Phi3AIPC:
    return Phi3AIPC(model=str(tiny_phi3_ov), device="npu", options=NPU_ON_CPU, max_new_tokens=4)


def _overflows(caplog: pytest.LogCaptureFixture) -> list[str]:
    # LlamaIndex's refine step catches ValueError (PromptTooLongError is one), logs it and goes on without that
    # chunk: an overflow shows only in its log.
    return [
        r.getMessage() for r in caplog.records if "tokens long, over the NPU prompt limit" in r.getMessage()
    ]


@pytest.mark.npu_on_cpu
def test_query_engine_with_more_text_than_fits_answers(
    npu: Phi3AIPC, caplog: pytest.LogCaptureFixture
) -> None:
    engine = SummaryIndex.from_documents(DOCUMENTS).as_query_engine(llm=npu, response_mode="compact")
    with caplog.at_level(logging.WARNING):
        response = engine.query("How long is the Seine?")
    assert _overflows(caplog) == []
    assert isinstance(response.response, str) and response.response != "Empty Response"
    assert len(response.source_nodes) == len(DOCUMENTS)
    # The packing window: LlamaIndex's room for the prompt, in its own tokens, fits the engine's 256 once converted.
    meta = npu.metadata
    assert (meta.context_window - meta.num_output) * npu._tokens_per_llama_index_token(npu.engine) <= LIMIT


@pytest.mark.npu_on_cpu
def test_the_naive_window_would_overflow(npu: Phi3AIPC, caplog: pytest.LogCaptureFixture) -> None:
    # MAX_PROMPT_LEN + MIN_RESPONSE_LEN as the window lets LlamaIndex pack more than the NPU takes (and LlamaIndex
    # then silently skips what failed): the packing window above is what prevents it.
    naive = npu.model_copy(update={"context_window": LIMIT + 64})
    engine = SummaryIndex.from_documents(DOCUMENTS).as_query_engine(llm=naive, response_mode="compact")
    with caplog.at_level(logging.WARNING):
        engine.query("How long is the Seine?")
    assert _overflows(caplog)
