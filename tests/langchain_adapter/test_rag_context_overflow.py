"""A LangChain RAG chain whose 8 retrieved chunks overflow the NPU's prompt limit: with context_overflow="trim"
it answers and says what it dropped; by default it refuses with an error naming the policy.

The NPU's static pipeline runs on the CPU (NPUW_DEVICES=CPU) with the tiny random Phi-3 IR and MAX_PROMPT_LEN=256;
the retriever is a plain function returning fixed documents (retrieval itself is not under test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from langchain_phi3_aipc import ChatPhi3AIPC
from phi3_aipc.errors import PromptTooLongError

NPU_ON_CPU = {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 256, "MIN_RESPONSE_LEN": 64}
CHUNKS = [
    Document(
        page_content=f"Chunk {i}. The Seine is {776 + i} km long and flows through Paris to the Channel. " * 3
    )
    for i in range(8)
]
PROMPT = ChatPromptTemplate.from_messages(
    [("system", "Answer from this context only.\n\n{context}"), ("human", "{question}")]
)


def _chain(llm: ChatPhi3AIPC):  # noqa: ANN202 - a LangChain runnable
    retriever = RunnableLambda(lambda _question: CHUNKS)
    context = retriever | (lambda docs: "\n\n".join(d.page_content for d in docs))
    return {"context": context, "question": RunnablePassthrough()} | PROMPT | llm


@pytest.mark.npu_on_cpu
def test_rag_chain_with_eight_chunks_answers_with_trim_and_reports_what_it_dropped(
    tiny_phi3_ov: Path,
) -> None:
    llm = ChatPhi3AIPC(
        model=str(tiny_phi3_ov), device="npu", options=NPU_ON_CPU, max_tokens=8, context_overflow="trim"
    )
    with pytest.raises(PromptTooLongError, match="context_overflow='trim'"):
        _chain(llm.model_copy(update={"context_overflow": "error"})).invoke("How long is the Seine?")
    answer = _chain(llm).invoke("How long is the Seine?")
    assert isinstance(answer, AIMessage)
    trimmed = answer.response_metadata["context_trimmed"]
    assert (
        trimmed["budget"] == 256 and trimmed["prompt_tokens_after"] <= 256 < trimmed["prompt_tokens_before"]
    )
    assert trimmed["shortened_messages"] == 1 and trimmed["cut_tokens"] > 0
    assert answer.usage_metadata["input_tokens"] == trimmed["prompt_tokens_after"]
    assert answer.usage_metadata["output_tokens"] >= 1


@pytest.mark.npu_on_cpu
def test_streamed_answer_reports_the_trim_in_its_last_chunk(tiny_phi3_ov: Path) -> None:
    llm = ChatPhi3AIPC(
        model=str(tiny_phi3_ov), device="npu", options=NPU_ON_CPU, max_tokens=4, context_overflow="trim"
    )
    chunks = list(_chain(llm).stream("How long is the Seine?"))
    assert chunks[-1].response_metadata["context_trimmed"]["shortened_messages"] == 1
