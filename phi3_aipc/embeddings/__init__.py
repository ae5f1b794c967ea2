"""Embeddings and reranking on the AI PC: OpenVINO GenAI's TextEmbeddingPipeline and TextRerankPipeline.

- ``catalogue``: the encoder models known by name, one row each (pooling, normalisation, max_length, instructions).
- ``resolve``: a name, Hub id or folder -> an OpenVINO IR folder (a checkpoint is exported once, cached).
- ``engine``: ``EmbeddingEngine`` and ``RerankEngine``, the device rules and the NPU's static shapes.
- ``cache``: ``get_embedding_engine`` / ``get_rerank_engine``, one shared engine per model, device and settings.

Importing this package imports no OpenVINO and no torch; an engine loads OpenVINO GenAI when it is first asked for.
"""

from phi3_aipc.embeddings.cache import (
    aget_embedding_engine,
    clear_encoders,
    get_embedding_engine,
    get_rerank_engine,
)
from phi3_aipc.embeddings.catalogue import (
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_RERANK_MODEL,
    ENCODERS,
    EncoderModel,
    EncoderSettings,
    find_encoder,
)
from phi3_aipc.embeddings.engine import EmbeddingEngine, InputTruncatedWarning, RerankEngine, RerankResult
from phi3_aipc.embeddings.resolve import EncoderArtifact, resolve_encoder

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_RERANK_MODEL",
    "ENCODERS",
    "EmbeddingEngine",
    "EncoderArtifact",
    "EncoderModel",
    "EncoderSettings",
    "InputTruncatedWarning",
    "RerankEngine",
    "RerankResult",
    "aget_embedding_engine",
    "clear_encoders",
    "find_encoder",
    "get_embedding_engine",
    "get_rerank_engine",
    "resolve_encoder",
]
