"""Phi3AIPCEmbedding: LlamaIndex embeddings on the AI PC (NPU, Intel GPU or CPU) through OpenVINO GenAI."""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import Field, PrivateAttr

from phi3_aipc.embeddings import DEFAULT_EMBEDDING_MODEL, EmbeddingEngine, get_embedding_engine


class Phi3AIPCEmbedding(BaseEmbedding):
    """Text embeddings computed locally with OpenVINO GenAI, on the NPU, the Intel GPU or the CPU. No PyTorch.

    The model loads on the first call and is shared (with LangChain's Phi3AIPCEmbeddings too) by every instance
    with the same model, device and settings. On the NPU every text is padded to ``max_length`` tokens;
    everywhere, longer texts are truncated with an ``InputTruncatedWarning``.

    Example:
        ```python
        from llama_index.core import Settings
        from llama_index_phi3_aipc import Phi3AIPCEmbedding

        Settings.embed_model = Phi3AIPCEmbedding(model_name="minilm", device="npu")
        ```
    """

    model_name: str = Field(
        default=DEFAULT_EMBEDDING_MODEL,
        description="Embedding model: a name ('minilm', 'bge-small'), a Hub repo id, or a local IR/checkpoint folder.",
    )
    embed_batch_size: int = Field(
        default=32, gt=0, le=2048, description="Texts per call to the model (the NPU takes one at a time)."
    )
    device: str = Field(
        default="auto", description="'auto' (NPU, else GPU, else CPU), 'npu', 'gpu' or 'cpu'."
    )
    max_length: int | None = Field(
        default=None, description="Tokens a text is cut (NPU: padded) to; None: the model's."
    )
    pooling: str | None = Field(default=None, description="Override pooling: 'cls', 'mean' or 'last_token'.")
    normalize: bool | None = Field(default=None, description="Override L2 normalisation of the vectors.")
    query_instruction: str | None = Field(default=None, description="Text put before each query.")
    text_instruction: str | None = Field(default=None, description="Text put before each document.")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="OpenVINO properties, e.g. {'NPUW_DEVICES': 'CPU'}, or {'revision': ...}.",
    )

    _engine: EmbeddingEngine | None = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "Phi3AIPCEmbedding"

    @property
    def engine(self) -> EmbeddingEngine:
        """The shared engine, loaded on first use."""
        if self._engine is None:
            self._engine = get_embedding_engine(
                self.model_name,
                self.device,
                self.options,
                max_length=self.max_length,
                pooling=self.pooling,
                normalize=self.normalize,
                query_instruction=self.query_instruction,
                embed_instruction=self.text_instruction,
            )
        return self._engine

    def _get_query_embedding(self, query: str) -> Embedding:
        return self.engine.embed_query(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self.engine.embed_documents([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self.engine.embed_documents(texts, batch_size=self.embed_batch_size)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
