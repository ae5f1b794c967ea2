"""The shared engine cache: one engine per resolved model, resolved device, backend and options, per process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from phi3_aipc.engine.core import Engine


# -- the shared engine cache ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineKey:
    """What makes two engines the same: the resolved artifact, the resolved device, the backend and its options.

    So every spelling of one model ('phi-3-mini' or its repo id, 'smollm2' or its GGUF path) on one device
    ('auto', 'cpu', ' CPU ') shares one loaded engine.
    """

    artifact: str
    device: str
    backend: str
    options: tuple[tuple[str, str], ...]


_engines: dict[EngineKey, Engine] = {}
_engines_lock = threading.Lock()
_loading_locks: dict[EngineKey, threading.Lock] = {}


def get_engine(
    model: str | None = None,
    device: str | None = "auto",
    backend: str | None = None,
    options: Mapping[str, Any] | None = None,
    warm_up: bool = True,
) -> Engine:
    """The process-wide engine for (model, device, backend, options), loading it on first use.

    The model and device are resolved first (an alias, a repo id and a path to the same files are one model;
    'auto' becomes the device it picks), so every wrapper that means the same thing shares one loaded model.
    Concurrent first calls load once. ``release_engine`` or ``clear_engines`` free it. A newly loaded engine starts
    its warm-up in the background (``Engine.warm_up``) unless ``warm_up`` is False.
    """
    from phi3_aipc.backends import prepare

    request = prepare(backend, model, device, options)
    key = EngineKey(
        artifact=f"{request.artifact.format}:{request.artifact.path}",
        device=request.device,
        backend=request.backend.name,
        options=tuple(sorted((k, repr(v)) for k, v in request.options.items())),
    )
    with _engines_lock:
        engine = _engines.get(key)
        if engine is not None:
            return engine
        loading = _loading_locks.setdefault(key, threading.Lock())
    with loading:
        with _engines_lock:
            engine = _engines.get(key)
        if engine is None:
            engine = Engine(request.load())
            with _engines_lock:
                _engines[key] = engine
    if warm_up:
        engine.warm_up()
    return engine


# Loads run here, not in asyncio's default pool: a first NPU compile takes minutes, and every async caller waiting
# for it would otherwise hold one of that pool's few threads (stalling unrelated to_thread and getaddrinfo calls).
_loader = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="phi3-aipc-load")


async def aget_engine(
    model: str | None = None,
    device: str | None = "auto",
    backend: str | None = None,
    options: Mapping[str, Any] | None = None,
    warm_up: bool = True,
) -> Engine:
    """``get_engine`` without blocking the event loop or taking threads from asyncio's default pool."""
    return await asyncio.wrap_future(_loader.submit(get_engine, model, device, backend, options, warm_up))


def release_engine(engine: Engine) -> bool:
    """Drop ``engine`` from the shared cache and close its backend; False if it was not cached.

    Its memory is returned once no caller holds the engine any more; a later ``get_engine`` loads afresh.
    """
    with _engines_lock:
        keys = [key for key, cached in _engines.items() if cached is engine]
        for key in keys:
            del _engines[key]
            _loading_locks.pop(key, None)
    if keys:
        engine.backend.close()
    return bool(keys)


def clear_engines() -> None:
    """Drop every cached engine (tests, or freeing memory)."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
        _loading_locks.clear()
    for engine in engines:
        engine.backend.close()
