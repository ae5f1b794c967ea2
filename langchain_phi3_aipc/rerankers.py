"""Phi3AIPCReranker: a LangChain document compressor that reorders documents with a local cross-encoder."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field, PrivateAttr

from phi3_aipc.embeddings import DEFAULT_RERANK_MODEL, RerankEngine, get_rerank_engine


class Phi3AIPCReranker(BaseDocumentCompressor):
    """Reranks retrieved documents with a cross-encoder run by OpenVINO GenAI on the NPU, Intel GPU or CPU.

    Keeps the ``top_n`` most relevant documents, most relevant first, each with its score in
    ``metadata["relevance_score"]`` (the cross-encoder's sigmoid score, in (0, 1)).

    Setup:
        ```bash
        pip install "phi3-aipc[openvino,langchain,export]"
        ```
        The default model, cross-encoder/ms-marco-MiniLM-L-6-v2, comes from the Hugging Face Hub and is
        exported to OpenVINO IR once (``export`` extra); a local IR folder needs neither.

    Instantiate:
        ```python
        from langchain_phi3_aipc import Phi3AIPCReranker

        reranker = Phi3AIPCReranker(top_n=3, device="npu")
        ```

    Use with a retriever:
        ```python
        from langchain_classic.retrievers import ContextualCompressionRetriever

        retriever = ContextualCompressionRetriever(base_compressor=reranker, base_retriever=store.as_retriever())
        docs = retriever.invoke("When is the market closed?")
        ```
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    model: str = DEFAULT_RERANK_MODEL
    """Cross-encoder: a name ('ms-marco-minilm', 'bge-reranker-base'), a Hub repo id, or a local folder."""

    device: str = "auto"
    """Device: 'auto' (NPU, else GPU, else CPU), 'npu', 'gpu', 'cpu', or an OpenVINO id such as 'GPU.1'."""

    top_n: int | None = Field(default=3, ge=1)
    """Documents to keep, most relevant first; None keeps them all (reordered)."""

    max_length: int | None = None
    """Tokens a query-document pair is cut to (and padded to, on the NPU); None: the model's own."""

    options: dict[str, Any] = Field(default_factory=dict)
    """OpenVINO properties, e.g. {'CACHE_DIR': ...}, or {'revision': ...} for the Hub download."""

    _engine: RerankEngine | None = PrivateAttr(default=None)

    @property
    def engine(self) -> RerankEngine:
        """The shared engine, loaded on first use."""
        if self._engine is None:
            self._engine = get_rerank_engine(
                self.model, self.device, self.options, max_length=self.max_length
            )
        return self._engine

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The ``top_n`` documents most relevant to ``query``, with ``relevance_score`` in their metadata."""
        ranked = self.engine.rerank(query, [doc.page_content for doc in documents], top_n=self.top_n)
        return [
            Document(
                page_content=documents[r.index].page_content,
                metadata={**documents[r.index].metadata, "relevance_score": r.score},
                id=documents[r.index].id,
            )
            for r in ranked
        ]

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """``compress_documents`` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)
