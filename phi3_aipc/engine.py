"""The engine: one loaded backend, serialised generation, exact stop strings, streaming, and the shared cache."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from phi3_aipc.backends.base import Backend, Message
from phi3_aipc.errors import InvalidParameterError, PromptTooLongError, UnsupportedFeatureError
from phi3_aipc.params import BackendOutput, Constraint, FinishReason, GenerationParams, GenerationResult
from phi3_aipc.stops import StopStringCutter

PromptInput = str | Sequence[Message]


class Engine:
    """A loaded model. Thread-safe: generations on one engine run one at a time, in arrival order."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self._lock = threading.Lock()

    # -- what callers may ask about ---------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.backend.model_name

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def context_window(self) -> int | None:
        return self.backend.context_window

    @property
    def max_prompt_tokens(self) -> int | None:
        return self.backend.max_prompt_tokens

    @property
    def model_family(self) -> str:
        return self.backend.model_family

    @property
    def special_tokens(self) -> frozenset[str]:
        return self.backend.special_tokens

    @property
    def constraint_kinds(self) -> frozenset[str]:
        return self.backend.constraint_kinds

    @property
    def load_ms(self) -> float | None:
        return self.backend.load_ms

    def format_chat(self, messages: Sequence[Message], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt the model sees for ``messages``, formatted by its own chat template."""
        _check_messages(messages)
        return self.backend.apply_chat_template(list(messages), tools)

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    # -- generation ---------------------------------------------------------------------------------------------
    def generate(
        self,
        prompt: PromptInput,
        params: GenerationParams | None = None,
        *,
        constraint: Constraint | None = None,
    ) -> GenerationResult:
        """Generate the whole answer. ``prompt`` is chat messages, or a raw, already formatted prompt string."""
        text = self._to_prompt(prompt)
        params = params or GenerationParams()
        self._check_constraint(constraint)
        with self._lock:
            return self._run(text, params, constraint, sink=None, cancel=None)

    def stream(
        self,
        prompt: PromptInput,
        params: GenerationParams | None = None,
        *,
        constraint: Constraint | None = None,
    ) -> GenerationStream:
        """Stream text deltas as tokens arrive; ``.result`` holds the GenerationResult once the stream ends."""
        text = self._to_prompt(prompt)
        params = params or GenerationParams()
        self._check_constraint(constraint)
        return GenerationStream(self, text, params, constraint)

    async def agenerate(
        self,
        prompt: PromptInput,
        params: GenerationParams | None = None,
        *,
        constraint: Constraint | None = None,
    ) -> GenerationResult:
        """``generate`` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.generate, prompt, params, constraint=constraint)

    def astream(
        self,
        prompt: PromptInput,
        params: GenerationParams | None = None,
        *,
        constraint: Constraint | None = None,
    ) -> AsyncGenerationStream:
        """Async twin of ``stream``: deltas arrive on the event loop as the worker thread produces them."""
        return AsyncGenerationStream(self.stream(prompt, params, constraint=constraint))

    # -- internals ----------------------------------------------------------------------------------------------
    def _to_prompt(self, prompt: PromptInput) -> str:
        if isinstance(prompt, str):
            return prompt
        return self.format_chat(prompt)

    def _check_constraint(self, constraint: Constraint | None) -> None:
        if constraint is not None and constraint.kind not in self.constraint_kinds:
            raise UnsupportedFeatureError(
                f"The '{self.backend_name}' backend cannot constrain decoding with a {constraint.kind}; it supports "
                f"{sorted(self.constraint_kinds) or 'no constraints'}. Use backend='openvino' or backend='onnx'."
            )

    def check_prompt_length(self, prompt: str) -> int:
        """Count the prompt's tokens and refuse one that cannot fit, before the backend sees it."""
        tokens = self.backend.count_tokens(prompt)
        limit = self.max_prompt_tokens
        if limit is not None and tokens > limit:
            raise PromptTooLongError(
                tokens,
                limit,
                f"{self.device} prompt limit (MAX_PROMPT_LEN)",
                f"Shorten the prompt or trim the chat history, or load the model with a larger "
                f"options={{'MAX_PROMPT_LEN': {_round_up(tokens)}}} (a larger limit compiles a larger model).",
            )
        window = self.context_window
        if window is not None and tokens >= window:
            raise PromptTooLongError(
                tokens, window, "model's context window", "Shorten the prompt or trim the chat history."
            )
        return tokens

    def _run(
        self,
        prompt: str,
        params: GenerationParams,
        constraint: Constraint | None,
        sink: queue.Queue | None,
        cancel: threading.Event | None,
    ) -> GenerationResult:
        self.check_prompt_length(prompt)
        cutter = StopStringCutter(params.stop)
        parts: list[str] = []

        def emit(text: str) -> None:
            if text:
                parts.append(text)
                if sink is not None:
                    sink.put(("delta", text))

        def on_text(delta: str) -> bool:
            emit(cutter.feed(delta))
            return not (cutter.done or (cancel is not None and cancel.is_set()))

        started = time.perf_counter()
        output = self.backend.generate(prompt, params, on_text, constraint)
        emit(cutter.flush())
        if output.timings.generate_ms is None:
            output.timings.generate_ms = (time.perf_counter() - started) * 1000
        output.timings.load_ms = self.backend.load_ms
        return self._result("".join(parts), output, params, cutter.matched, cancel)

    def _result(
        self,
        text: str,
        output: BackendOutput,
        params: GenerationParams,
        matched: str | None,
        cancel: threading.Event | None,
    ) -> GenerationResult:
        reason: FinishReason
        if matched is not None:
            reason = "stop_string"
        elif cancel is not None and cancel.is_set():
            reason = "cancelled"
        elif output.completion_tokens >= params.max_new_tokens:
            reason = "length"
        else:
            reason = "stop"
        return GenerationResult(
            text=text,
            finish_reason=reason,
            prompt_tokens=output.prompt_tokens,
            completion_tokens=output.completion_tokens,
            timings=output.timings,
            stop_string=matched,
            model=self.model_name,
            device=self.device,
            backend=self.backend_name,
        )


def _round_up(tokens: int) -> int:
    return ((tokens + 255) // 256) * 256


def _check_messages(messages: Sequence[Message]) -> None:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise InvalidParameterError(
            "messages must be a non-empty list of {'role': ..., 'content': ...} dicts."
        )
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message:
            raise InvalidParameterError(
                f"Message {index} must be a dict with 'role' and 'content' keys, got {message!r}."
            )


_DONE = object()


class GenerationStream:
    """Iterate for text deltas. Generation runs in a worker thread that holds the engine's lock.

    Closing the stream early (``close()``, ``break`` out of a for loop, or garbage collection) cancels the
    generation at the next token and waits for the worker, so the engine is free again when it returns.
    """

    def __init__(self, engine: Engine, prompt: str, params: GenerationParams, constraint: Constraint | None):
        self._queue: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self.result: GenerationResult | None = None
        self._finished = False
        self._thread = threading.Thread(
            target=self._work, args=(engine, prompt, params, constraint), name="phi3-aipc-stream", daemon=True
        )
        self._thread.start()

    def _work(
        self, engine: Engine, prompt: str, params: GenerationParams, constraint: Constraint | None
    ) -> None:
        try:
            with engine._lock:
                if self._cancel.is_set():
                    self._queue.put(("cancelled", None))
                    return
                result = engine._run(prompt, params, constraint, self._queue, self._cancel)
            self._queue.put(("done", result))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer's thread
            self._queue.put(("error", exc))

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._finished:
            raise StopIteration
        kind, value = self._queue.get()
        if kind == "delta":
            return value
        self._finished = True
        self._thread.join()
        if kind == "error":
            raise value
        self.result = value
        raise StopIteration

    def next_event(self, timeout: float | None = None) -> tuple[str, Any]:
        """Low-level: ('delta', text), ('done', result), ('error', exc) or ('cancelled', None)."""
        kind, value = self._queue.get(timeout=timeout)
        if kind != "delta":
            self._finished = True
            if kind == "done":
                self.result = value
        return kind, value

    def close(self) -> None:
        """Cancel the generation and wait until the engine is released."""
        if self._finished:
            return
        self._cancel.set()
        self._thread.join()
        self._finished = True
        while True:
            try:
                kind, value = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == "done":
                self.result = value

    def __enter__(self) -> GenerationStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._finished:
            self._cancel.set()


class AsyncGenerationStream:
    """``async for`` over a GenerationStream without blocking the loop: each wait runs in a thread."""

    def __init__(self, stream: GenerationStream):
        self._stream = stream

    @property
    def result(self) -> GenerationResult | None:
        return self._stream.result

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        try:
            return await asyncio.to_thread(self._next_or_none)
        except _StreamEnded:
            raise StopAsyncIteration from None

    def _next_or_none(self) -> str:
        try:
            return next(self._stream)
        except StopIteration:
            raise _StreamEnded from None

    async def aclose(self) -> None:
        await asyncio.to_thread(self._stream.close)


class _StreamEnded(Exception):
    """StopIteration cannot cross a thread boundary into a coroutine, so this carries it."""


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
) -> Engine:
    """The process-wide engine for (model, device, backend, options), loading it on first use.

    The model and device are resolved first (an alias, a repo id and a path to the same files are one model;
    'auto' becomes the device it picks), so every wrapper that means the same thing shares one loaded model.
    Concurrent first calls load once. ``release_engine`` or ``clear_engines`` free it.
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
    return engine


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
