"""Embedding and rerank engines over OpenVINO GenAI's TextEmbeddingPipeline and TextRerankPipeline.

Devices follow the LLM's rules (``phi3_aipc.devices``): 'auto' prefers the NPU, then the GPU, then the CPU; an
absent device is a DeviceNotFoundError naming the ones present; ``NPUW_DEVICES=CPU`` runs the NPU's static-shape
pipeline on the CPU. On the NPU every input is padded to the model's ``max_length`` (static shapes, compiled once)
and texts go through one at a time (the NPU encoder takes batch 1). Everywhere, text longer than ``max_length``
tokens is truncated to it, with an ``InputTruncatedWarning`` saying how many were cut: the usual fix is to split
documents into chunks, which a RAG pipeline does anyway.

``openvino_genai`` is imported when an engine loads, never on ``import phi3_aipc``.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from phi3_aipc.devices import (
    DEVICE_KINDS,
    device_kind,
    normalise_device,
    openvino_devices,
    pick_device,
    refuse_kind,
)
from phi3_aipc.embeddings.catalogue import EncoderSettings
from phi3_aipc.embeddings.resolve import EncoderArtifact
from phi3_aipc.errors import InvalidParameterError, UnsupportedFeatureError
from phi3_aipc.paths import compile_cache_dir

#: Texts per pipeline call on the CPU and GPU when the caller names no batch size.
DEFAULT_BATCH_SIZE = 32
# Tokens a tokenizer may add that cover no text ([CLS], [SEP], a BOS, a prefix space), with room to spare.
_MAX_SPECIAL_TOKENS = 8
_POOLING_NAMES = {"cls": "CLS", "mean": "MEAN", "last_token": "LAST_TOKEN"}


class InputTruncatedWarning(UserWarning):
    """A text was longer than the encoder's max_length and was cut to it."""


@dataclass(frozen=True)
class RerankResult:
    """One document's place after reranking."""

    #: Its position in the documents passed in.
    index: int
    #: The cross-encoder's relevance, sigmoid of its logit: in (0, 1), higher is more relevant.
    score: float


# -- devices ------------------------------------------------------------------------------------------------------
def pick_encoder_device(requested: str | None, options: Mapping[str, Any]) -> str:
    """The OpenVINO device to run on: 'auto' -> NPU, GPU or CPU (what is present); absent devices are errors."""
    device = normalise_device(requested)
    if device != "AUTO" and "openvino" not in DEVICE_KINDS[device_kind(device)].backends:
        raise refuse_kind(device, "openvino")
    available = list(openvino_devices())
    if device_kind(device) == "NPU" and "NPUW_DEVICES" in options:
        # NPUW runs the NPU pipeline on the devices it names (how the NPU path is tested without an NPU).
        for sub in str(options["NPUW_DEVICES"]).split(","):
            pick_device(normalise_device(sub), available)
        return device
    return pick_device(device, available)


def plugin_config(device: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """OpenVINO properties for the pipeline: the caller's, plus the shared compile cache."""
    config = {str(k).upper(): v for k, v in options.items()}
    if "CACHE_DIR" not in config:
        cache = compile_cache_dir("openvino", device)
        if cache is not None:
            config["CACHE_DIR"] = str(cache)
    return config


def _is_npu(device: str) -> bool:
    return device_kind(device) == "NPU"


# -- the engines ---------------------------------------------------------------------------------------------------
class _EncoderEngine:
    """What both engines share: the artifact, the device, a tokenizer to measure inputs, one call at a time."""

    def __init__(self, artifact: EncoderArtifact, device: str, pipeline: Any, tokenizer: Any, load_ms: float):
        self.artifact = artifact
        self.device = device
        self.settings: EncoderSettings = artifact.settings
        self.load_ms = load_ms
        self._pipe = pipeline
        self._tokenizer = tokenizer
        # An OpenVINO GenAI pipeline serves one request at a time.
        self._lock = threading.Lock()

    @property
    def is_npu(self) -> bool:
        return _is_npu(self.device)

    @property
    def max_length(self) -> int:
        return self.settings.max_length

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens each text takes, special tokens included (what max_length counts)."""
        if not texts:
            return []
        encoded = self._tokenizer.encode(list(texts))
        return [int(n) for n in encoded.attention_mask.data.sum(axis=1)]

    def _warn_if_truncated(self, texts: Sequence[str], what: str, extra_tokens: int = 0) -> None:
        """Warn when a text (plus ``extra_tokens``) is over max_length: the pipeline cuts it there."""
        # Every token covers at least one byte of text, so a text this short cannot overflow: tokenizing it only to
        # learn that would cost as much as a tenth of a query's time.
        limit = self.max_length - _MAX_SPECIAL_TOKENS - extra_tokens
        unsure = [t for t in texts if len(t.encode()) > limit]
        over = [n for n in self.count_tokens(unsure) if n + extra_tokens > self.max_length]
        if over:
            warnings.warn(
                f"{len(over)} of {len(texts)} {what} exceed {self.artifact.model_id}'s max_length of "
                f"{self.max_length} tokens (the longest has {max(over) + extra_tokens}); each was truncated to its "
                f"first {self.max_length} tokens, so the rest of it is not searchable. Split long documents into "
                f"chunks (e.g. with a text splitter) of at most {self.max_length} tokens.",
                InputTruncatedWarning,
                stacklevel=3,  # the caller of embed_documents / embed_query / rerank
            )


class EmbeddingEngine(_EncoderEngine):
    """A loaded embedding model: texts -> L2-normalised (by default) vectors. Thread-safe."""

    @classmethod
    def load(cls, artifact: EncoderArtifact, device: str, options: Mapping[str, Any]) -> EmbeddingEngine:
        import openvino_genai as ov_genai

        settings = artifact.settings
        config = ov_genai.TextEmbeddingPipeline.Config(
            pooling_type=getattr(
                ov_genai.TextEmbeddingPipeline.PoolingType, _POOLING_NAMES[settings.pooling]
            ),
            normalize=settings.normalize,
            max_length=settings.max_length,
            # The NPU compiles static shapes: every input is padded to max_length, so one compiled model serves all.
            pad_to_max_length=_is_npu(device),
        )
        if settings.query_instruction:
            config.query_instruction = settings.query_instruction
        if settings.embed_instruction:
            config.embed_instruction = settings.embed_instruction
        started = time.perf_counter()
        pipeline = _build(ov_genai.TextEmbeddingPipeline, artifact, device, config, options)
        tokenizer = ov_genai.Tokenizer(str(artifact.path))
        return cls(artifact, device, pipeline, tokenizer, (time.perf_counter() - started) * 1000)

    def embed_documents(self, texts: Sequence[str], batch_size: int | None = None) -> list[list[float]]:
        """One vector per text, in order, computed at most ``batch_size`` texts per call (one at a time on the NPU)."""
        texts = _check_texts(texts, "texts")
        size = _check_batch_size(batch_size)
        if not texts:
            return []
        prefix = self.settings.embed_instruction
        self._warn_if_truncated([prefix + t for t in texts], "texts")
        # A batch is padded to its longest text: batching texts of similar length wastes the least compute
        # (sentence-transformers does the same). The vectors go back in the caller's order.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        per_call = self._texts_per_call(size)
        vectors: list[list[float]] = [[] for _ in texts]
        for first in range(0, len(order), per_call):
            chunk = order[first : first + per_call]
            with self._lock:
                computed = self._pipe.embed_documents([texts[i] for i in chunk])
            for i, vector in zip(chunk, computed, strict=True):
                vectors[i] = list(map(float, vector))
        return vectors

    def _texts_per_call(self, batch_size: int) -> int:
        return 1 if self.is_npu else batch_size

    def embed_query(self, text: str) -> list[float]:
        """The vector of a search query (with the model's query instruction, if it has one)."""
        text = _check_text(text, "text")
        self._warn_if_truncated([self.settings.query_instruction + text], "queries")
        with self._lock:
            return list(map(float, self._pipe.embed_query(text)))


class RerankEngine(_EncoderEngine):
    """A loaded cross-encoder: (query, documents) -> documents by relevance. Thread-safe."""

    @classmethod
    def load(cls, artifact: EncoderArtifact, device: str, options: Mapping[str, Any]) -> RerankEngine:
        import openvino_genai as ov_genai

        # top_n is applied by rerank() per call; the pipeline returns every document, scored.
        config = ov_genai.TextRerankPipeline.Config(
            top_n=2**31 - 1,
            max_length=artifact.settings.max_length,
            pad_to_max_length=_is_npu(device),
        )
        started = time.perf_counter()
        pipeline = _build(ov_genai.TextRerankPipeline, artifact, device, config, options)
        tokenizer = ov_genai.Tokenizer(str(artifact.path))
        return cls(artifact, device, pipeline, tokenizer, (time.perf_counter() - started) * 1000)

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[RerankResult]:
        """The ``top_n`` most relevant documents (all when None), most relevant first, with their scores."""
        query = _check_text(query, "query")
        documents = _check_texts(documents, "documents")
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
            raise InvalidParameterError(f"top_n must be a positive integer or None (all), got {top_n!r}.")
        if not documents:
            return []
        # A pair is [CLS] query [SEP] document [SEP]: the two counts overlap by one special token.
        self._warn_if_truncated(
            documents, "query-document pairs", extra_tokens=self.count_tokens([query])[0] - 1
        )
        with self._lock:
            if self.is_npu:
                # The NPU runs static shapes, batch 1: score each pair on its own.
                scored = [(i, self._pipe.rerank(query, [doc])[0][1]) for i, doc in enumerate(documents)]
            else:
                scored = list(self._pipe.rerank(query, documents))
        ranked = sorted(((int(i), float(s)) for i, s in scored), key=lambda pair: -pair[1])
        return [RerankResult(i, s) for i, s in ranked[:top_n]]


def _build(
    pipeline_cls: Any, artifact: EncoderArtifact, device: str, config: Any, options: Mapping[str, Any]
) -> Any:
    try:
        return pipeline_cls(str(artifact.path), device, config, **plugin_config(device, options))
    except RuntimeError as exc:
        if not _is_npu(device):
            raise
        # Say plainly what was tried; OpenVINO's message (kept as the cause) is a compiler trace.
        first = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
        raise UnsupportedFeatureError(
            f"The NPU could not compile {artifact.model_id} for {pipeline_cls.__name__} with static shapes "
            f"(max_length {artifact.settings.max_length}): {first}. Use device='gpu' or 'cpu' for it, or a "
            f"smaller max_length."
        ) from exc


def _check_text(text: str, name: str) -> str:
    if not isinstance(text, str):
        raise InvalidParameterError(f"{name} must be a string, got {type(text).__name__}.")
    return text


def _check_texts(texts: Sequence[str], name: str) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InvalidParameterError(f"{name} must be a list of strings, got {type(texts).__name__}.")
    bad = [(i, type(t).__name__) for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        i, kind = bad[0]
        raise InvalidParameterError(f"{name}[{i}] is a {kind}; every item must be a string.")
    return list(texts)


def _check_batch_size(batch_size: int | None) -> int:
    if batch_size is None:
        return DEFAULT_BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return batch_size
