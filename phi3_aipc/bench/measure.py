"""What a worker process measures on one target: load times, then timed streams at every input length.

Output lengths are forced with ``GenerationParams(ignore_eos=True)`` on the engine itself; nothing shared is
patched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from phi3_aipc.bench.prompts import effective_input_tokens, exact_prompt
from phi3_aipc.bench.stats import peak_rss_mb, summary
from phi3_aipc.bench.targets import Settings, Target
from phi3_aipc.errors import Phi3AIPCError
from phi3_aipc.params import GenerationParams, GenerationResult


@dataclass
class StreamTiming:
    """perf_counter times of one stream, in ms from the call that opened it."""

    first_chunk_ms: float | None
    wall_ms: float
    chunks: int


def time_stream(start: Callable[[], Iterator[Any]], text_of: Callable[[Any], str] = str) -> StreamTiming:
    """perf_counter from the call that starts the stream to its first non-empty chunk and to its end."""
    started = time.perf_counter()
    first: float | None = None
    chunks = 0
    for chunk in start():
        if first is None and text_of(chunk):
            first = time.perf_counter()
        chunks += 1
    ended = time.perf_counter()
    return StreamTiming(None if first is None else (first - started) * 1000, (ended - started) * 1000, chunks)


def timed_engine_run(
    engine: Any, prompt: Any, params: GenerationParams
) -> tuple[StreamTiming, GenerationResult]:
    """Stream ``prompt`` on the engine, timed from the call that opens the stream; returns the timing and result."""
    opened: list[Any] = []

    def start() -> Any:
        # Opened inside the timed call: the worker thread starts generating at once, and a backend that holds
        # the GIL while it prefills (ONNX Runtime GenAI) would otherwise hide its prefill from the clock.
        opened.append(engine.stream(prompt, params))
        return opened[0]

    timing = time_stream(start)
    result = opened[0].result
    if result is None:
        raise Phi3AIPCError("The engine stream ended without a result.")
    return timing, result


def measure_load(target: Target) -> dict[str, Any]:
    """Worker mode 'load': load once and report (the cold-load process)."""
    _, load = _load(target)
    return {"load": load, "peak_rss_mb": peak_rss_mb()}


def measure(target: Target, settings: Settings) -> dict[str, Any]:
    """Worker mode 'measure': load (warm), then every input length, each output forced past EOS."""
    engine, load = _load(target)
    params = GenerationParams(max_new_tokens=settings.output_tokens, ignore_eos=True)
    inputs = [_measure_length(engine, wanted, settings, params) for wanted in settings.input_tokens]
    return {
        "load": load,
        "engine": {"model": engine.model_name, "device": engine.device, "backend": engine.backend_name},
        "inputs": inputs,
        "peak_rss_mb": peak_rss_mb(),
    }


def _load(target: Target) -> tuple[Any, dict[str, float | None]]:
    from phi3_aipc.engine import get_engine

    import_ms = _import_backend(target.backend)
    started = time.perf_counter()
    engine = get_engine(target.model, target.device, target.backend, target.options)
    load_ms = (time.perf_counter() - started) * 1000
    return engine, {"import_ms": import_ms, "load_ms": load_ms, "backend_load_ms": engine.load_ms}


def _import_backend(backend: str) -> float:
    from phi3_aipc.backends import backend_class

    started = time.perf_counter()
    backend_class(backend)  # imports the backend's library and module, outside the load timing
    return (time.perf_counter() - started) * 1000


def _measure_length(engine: Any, wanted: int, settings: Settings, params: GenerationParams) -> dict[str, Any]:
    """Warm-up runs, then measured runs, each on a prompt of its own so that prefix caching cannot help."""
    tokens = effective_input_tokens(engine, wanted, settings.output_tokens)
    runs = [
        timed_engine_run(engine, exact_prompt(engine, tokens, variant=run), params)
        for run in range(settings.warmup + settings.runs)
    ]
    return _summarise(wanted, tokens, runs[settings.warmup :])


def _summarise(wanted: int, tokens: int, runs: list[tuple[StreamTiming, GenerationResult]]) -> dict[str, Any]:
    results = [result for _, result in runs]
    tpot = [r.timings.tpot_ms for r in results]
    if any(t is None or t <= 0 for t in tpot):
        raise Phi3AIPCError(
            "The backend reported no time per output token; it generated fewer than two tokens."
        )
    completion = [r.completion_tokens for r in results]
    return {
        "input_tokens_requested": wanted,
        "input_tokens": tokens,
        "prompt_tokens": [r.prompt_tokens for r in results],
        "output_tokens": completion,
        "runs": len(results),
        "ttft_ms": summary([r.timings.ttft_ms for r in results]),
        "tpot_ms": summary(tpot),
        "decode_tokens_per_s": summary([1000.0 / t for t in tpot]),
        "e2e_ms": summary([t.wall_ms for t, _ in runs]),
        "e2e_tokens_per_s": summary(
            [n * 1000.0 / t.wall_ms for (t, _), n in zip(runs, completion, strict=True)]
        ),
        "first_chunk_ms": summary([t.first_chunk_ms or t.wall_ms for t, _ in runs]),
    }
