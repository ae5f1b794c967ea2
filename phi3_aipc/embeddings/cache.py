"""The shared encoder cache: one engine per resolved model, device, settings and options, per process.

As for LLM engines (``phi3_aipc.engine.cache``): every spelling of one model ('minilm', its repo id, its folder)
on one device shares one loaded pipeline, and concurrent first calls load it once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from phi3_aipc.backends.options import check_options, revision
from phi3_aipc.embeddings.catalogue import EncoderSettings, Task
from phi3_aipc.embeddings.engine import EmbeddingEngine, RerankEngine, pick_encoder_device
from phi3_aipc.embeddings.resolve import resolve_encoder

EngineT = TypeVar("EngineT", EmbeddingEngine, RerankEngine)


@dataclass(frozen=True)
class EncoderKey:
    """What makes two encoder engines the same."""

    task: Task
    path: str
    device: str
    settings: EncoderSettings
    options: tuple[tuple[str, str], ...]


_engines: dict[EncoderKey, EmbeddingEngine | RerankEngine] = {}
_engines_lock = threading.Lock()
_loading_locks: dict[EncoderKey, threading.Lock] = {}


def get_embedding_engine(
    model: str | Path | None = None,
    device: str | None = "auto",
    options: Mapping[str, Any] | None = None,
    **settings: Any,
) -> EmbeddingEngine:
    """The process-wide embedding engine for ``model`` on ``device``, loading it on first use.

    ``model``: a catalogue name ('minilm', the default; 'bge-small', ...), a Hub repo id, an OpenVINO IR folder or a
    Hugging Face checkpoint folder (exported to IR once). ``settings`` override the model's own: pooling, normalize,
    max_length, query_instruction, embed_instruction. ``options`` are OpenVINO properties (e.g. NPUW_DEVICES='CPU'
    to run the NPU pipeline on the CPU) plus 'revision' for a Hub download.
    """
    return _get("embed", EmbeddingEngine, model, device, options, settings)


def get_rerank_engine(
    model: str | Path | None = None,
    device: str | None = "auto",
    options: Mapping[str, Any] | None = None,
    max_length: int | None = None,
) -> RerankEngine:
    """The process-wide rerank (cross-encoder) engine for ``model`` on ``device``, loading it on first use.

    The default model is cross-encoder/ms-marco-MiniLM-L-6-v2 (from the Hugging Face Hub, exported once).
    """
    return _get("rerank", RerankEngine, model, device, options, {"max_length": max_length})


async def aget_embedding_engine(*args: Any, **kwargs: Any) -> EmbeddingEngine:
    """``get_embedding_engine`` without blocking the event loop (a first NPU compile takes a while)."""
    return await asyncio.to_thread(get_embedding_engine, *args, **kwargs)


def _get(
    task: Task,
    engine_cls: type[EngineT],
    model: str | Path | None,
    device: str | None,
    options: Mapping[str, Any] | None,
    overrides: dict[str, Any],
) -> EngineT:
    options = check_options(options)
    artifact = resolve_encoder(model, task, revision=revision(options))
    artifact = replace(artifact, settings=artifact.settings.with_overrides(**overrides))
    plugin_options = {k: v for k, v in options.items() if k != "revision"}
    resolved = pick_encoder_device(device, {str(k).upper(): v for k, v in plugin_options.items()})
    key = EncoderKey(
        task,
        str(artifact.path),
        resolved,
        artifact.settings,
        tuple(sorted((str(k).upper(), repr(v)) for k, v in plugin_options.items())),
    )
    with _engines_lock:
        engine = _engines.get(key)
        if engine is not None:
            return engine  # type: ignore[return-value]
        loading = _loading_locks.setdefault(key, threading.Lock())
    with loading:
        with _engines_lock:
            engine = _engines.get(key)
        if engine is None:
            engine = engine_cls.load(artifact, resolved, plugin_options)
            with _engines_lock:
                _engines[key] = engine
    return engine  # type: ignore[return-value]


def clear_encoders() -> None:
    """Drop every cached embedding and rerank engine (tests, or freeing memory)."""
    with _engines_lock:
        _engines.clear()
        _loading_locks.clear()
