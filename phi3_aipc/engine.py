"""The engine: one loaded backend, generations served one at a time, exact stop strings, streaming, and the shared
cache."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import queue
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from phi3_aipc.backends.base import Backend, Message
from phi3_aipc.errors import InvalidParameterError, PromptTooLongError, UnsupportedFeatureError
from phi3_aipc.params import (
    BackendOutput,
    Constraint,
    FinishReason,
    GenerationParams,
    GenerationResult,
    Timings,
)
from phi3_aipc.stops import StopStringCutter

PromptInput = str | Sequence[Message]
# Receives each text delta (stop strings already cut) on the generating thread.
TextSink = Callable[[str], None]

# How long a thread waiting on a generation sleeps between checks. A Ctrl-C reaches Python only when the main
# thread runs Python code: a wait that never wakes (any wait on Windows) would hold it back until the end.
_WAKE_S = 0.1


class Engine:
    """A loaded model. Thread-safe: generations run one at a time, in arrival order, on worker threads.

    Stopping: every call stops at the next token when its caller goes away: Ctrl-C in the calling thread (re-raised
    once the engine is free), a cancelled asyncio task, a stream closed or no longer referenced, an exception raised
    by ``on_text``, or the ``timeout_s`` deadline in GenerationParams (finish_reason "timeout"). A call that is
    stopped while it waits for its turn never runs.

    The context window: a prompt that leaves no room for one new token raises PromptTooLongError with both counts.
    When the prompt plus ``max_new_tokens`` exceed the window, the engine generates what fits: ``max_new_tokens`` is
    lowered to the room left, the result ends with finish_reason "length" if it fills that room, and
    ``result.notes`` says what was lowered.
    """

    def __init__(self, backend: Backend):
        self.backend = backend
        self._turns = _Turnstile()

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
        on_text: TextSink | None = None,
    ) -> GenerationResult:
        """Generate the whole answer. ``prompt`` is chat messages, or a raw, already formatted prompt string.

        ``on_text``, if given, receives each delta as it is generated (on the generating thread); an exception it
        raises stops the generation and is raised here.
        """
        job = self._job_factory(prompt, params, constraint)(on_text=on_text)
        job.start()
        return job.wait_for_result()

    def stream(
        self,
        prompt: PromptInput,
        params: GenerationParams | None = None,
        *,
        constraint: Constraint | None = None,
    ) -> GenerationStream:
        """Stream text deltas as tokens arrive; ``.result`` holds the GenerationResult once the stream ends."""
        return GenerationStream(self._job_factory(prompt, params, constraint))

    async def agenerate(
        self,
        prompt: PromptInput,
        params: GenerationParams | None = None,
        *,
        constraint: Constraint | None = None,
    ) -> GenerationResult:
        """``generate`` without blocking the event loop; cancelling the task stops the generation."""
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        make_job = self._job_factory(prompt, params, constraint)
        job = make_job(on_finish=lambda: loop.call_soon_threadsafe(_settle, finished))
        job.start()
        try:
            await finished
        except BaseException:
            job.cancel()
            raise
        return job.outcome()

    def astream(
        self,
        prompt: PromptInput,
        params: GenerationParams | None = None,
        *,
        constraint: Constraint | None = None,
    ) -> AsyncGenerationStream:
        """Async twin of ``stream``: deltas arrive on the event loop as the generating thread produces them."""
        return AsyncGenerationStream(self._job_factory(prompt, params, constraint))

    def check_prompt_length(self, prompt: str) -> int:
        """Count the prompt's tokens and refuse one that is empty or cannot fit, before the backend sees it."""
        tokens = self.backend.count_tokens(prompt)
        if tokens == 0:
            raise InvalidParameterError("The prompt is empty (0 tokens); pass some text or chat messages.")
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
                self._count_uncapped(prompt, tokens, window),
                window,
                "model's context window",
                "Shorten the prompt or trim the chat history (at least one new token must fit).",
            )
        return tokens

    # -- internals ----------------------------------------------------------------------------------------------
    def _job_factory(
        self, prompt: PromptInput, params: GenerationParams | None, constraint: Constraint | None
    ) -> JobFactory:
        """Check a request now, in the caller's thread and before any backend sees it; make its job later."""
        if params is not None and not isinstance(params, GenerationParams):
            raise InvalidParameterError(f"params must be a GenerationParams, got {type(params).__name__}.")
        text = self._to_prompt(prompt)
        self._check_constraint(constraint)
        return functools.partial(_Job, self, text, params or GenerationParams(), constraint)

    def _to_prompt(self, prompt: PromptInput) -> str:
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidParameterError("The prompt is an empty string; pass some text or chat messages.")
            return prompt
        return self.format_chat(prompt)

    def _check_constraint(self, constraint: Constraint | None) -> None:
        if constraint is not None and constraint.kind not in self.constraint_kinds:
            raise UnsupportedFeatureError(
                f"The '{self.backend_name}' backend cannot constrain decoding with a {constraint.kind}; it supports "
                f"{sorted(self.constraint_kinds) or 'no constraints'}. Use backend='openvino' or backend='onnx'."
            )

    def _count_uncapped(self, text: str, counted: int, cap: int) -> int:
        """The real token count of a prompt whose count reached ``cap`` (the window).

        Some tokenizers stop counting at a cap (OpenVINO's, converted from a GGUF, stops at the model's context
        length), so a 20,000-token prompt would be reported as 8,192. Counting the halves, each below the cap, and
        splitting before a space (where byte-level tokenizers split anyway) gives the real length.
        """
        if counted < cap or len(text) < 2:
            return counted
        middle = text.rfind(" ", 1, len(text) // 2 + 1)
        middle = middle if middle > 0 else len(text) // 2
        left, right = text[:middle], text[middle:]
        added = self.backend.count_tokens("")  # e.g. a BOS token, added to each piece but once to the whole
        return (
            self._count_uncapped(left, self.backend.count_tokens(left), cap)
            + self._count_uncapped(right, self.backend.count_tokens(right), cap)
            - added
        )

    def _execute(self, job: _Job) -> None:
        """The job's thread: wait for its turn, generate, and hand the result (or the exception) to its caller."""
        try:
            if not self._turns.enter(job):
                job.result = self._unstarted(job)
                return
            try:
                job.result = self._run(job)
            finally:
                self._turns.leave()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, which raises it
            job.error = exc
        finally:
            job.finish()

    def _run(self, job: _Job) -> GenerationResult:
        tokens = self.check_prompt_length(job.prompt)
        params, notes = self._fit_window(tokens, job.params)
        run = _Run(job, params.stop)
        started = time.perf_counter()
        output = self.backend.generate(job.prompt, params, run.on_text, job.constraint)
        text = run.finish()
        if output.timings.generate_ms is None:
            output.timings.generate_ms = (time.perf_counter() - started) * 1000
        output.timings.load_ms = self.backend.load_ms
        return self._result(text, output, params, run, notes)

    def _fit_window(
        self, prompt_tokens: int, params: GenerationParams
    ) -> tuple[GenerationParams, tuple[str, ...]]:
        """Lower max_new_tokens to the room the context window leaves after the prompt (at least 1, checked)."""
        window = self.context_window
        if window is None or prompt_tokens + params.max_new_tokens <= window:
            return params, ()
        room = window - prompt_tokens
        note = (
            f"max_new_tokens was lowered from {params.max_new_tokens} to {room}: the prompt's {prompt_tokens} tokens "
            f"and the answer must fit the {window}-token context window."
        )
        return replace(params, max_new_tokens=room), (note,)

    def _result(
        self,
        text: str,
        output: BackendOutput,
        params: GenerationParams,
        run: _Run,
        notes: tuple[str, ...],
    ) -> GenerationResult:
        reason: FinishReason
        if run.matched is not None:
            reason = "stop_string"
        elif run.stopped_by is not None:
            reason = run.stopped_by
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
            stop_string=run.matched,
            model=self.model_name,
            device=self.device,
            backend=self.backend_name,
            notes=notes,
        )

    def _unstarted(self, job: _Job) -> GenerationResult:
        """The result of a call stopped (cancelled, out of time) while it waited for its turn."""
        return GenerationResult(
            text="",
            finish_reason=job.stop_reason() or "cancelled",
            prompt_tokens=0,
            completion_tokens=0,
            timings=Timings(load_ms=self.backend.load_ms),
            model=self.model_name,
            device=self.device,
            backend=self.backend_name,
            notes=("The call ended while it waited for the engine: nothing was generated.",),
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


# -- jobs: one generation call, its thread, and how it stops -----------------------------------------------------
class _Job:
    """One generation call. It runs on a worker thread, so no caller ever blocks inside native code (where a
    Ctrl-C cannot reach it), and it holds no reference to the stream (if any) that consumes it: dropping the stream
    can cancel it."""

    def __init__(
        self,
        engine: Engine,
        prompt: str,
        params: GenerationParams,
        constraint: Constraint | None,
        on_text: TextSink | None = None,
        on_finish: Callable[[], None] | None = None,
    ):
        self.engine = engine
        self.prompt = prompt
        self.params = params
        self.constraint = constraint
        self.on_text = on_text
        self._done_callbacks: list[Callable[[], Any]] = [on_finish] if on_finish is not None else []
        self._deadline = None if params.timeout_s is None else time.monotonic() + params.timeout_s
        self._cancelled = threading.Event()
        self.done = threading.Event()
        self.result: GenerationResult | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        _workers.run(functools.partial(self.engine._execute, self))

    def cancel(self) -> None:
        """Stop at the next token, or leave the line if not yet started. Safe from any thread, and from GC."""
        self._cancelled.set()
        self.engine._turns.wake()

    def stop_reason(self) -> FinishReason | None:
        if self._cancelled.is_set():
            return "cancelled"
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return "timeout"
        return None

    def time_left(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def add_done_callback(self, callback: Callable[[], Any]) -> None:
        """Call ``callback`` on the job's thread once it ends (set before ``start()``)."""
        self._done_callbacks.append(callback)

    def finish(self) -> None:
        self.done.set()
        for callback in self._done_callbacks:
            # RuntimeError: the caller's event loop has closed, so nobody is left to tell.
            with contextlib.suppress(RuntimeError):
                callback()

    def wait(self) -> None:
        while not self.done.wait(_WAKE_S):
            pass

    def wait_for_result(self) -> GenerationResult:
        """Wait in the caller's thread. An exception here (Ctrl-C) cancels the job, waits until the engine is
        free, and propagates."""
        try:
            self.wait()
        except BaseException:
            self.cancel()
            self.done.wait()
            raise
        return self.outcome()

    def outcome(self) -> GenerationResult:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class _Workers:
    """The threads jobs run on, never asyncio's default pool. An idle thread is reused (OpenVINO sets up per-thread
    state on a thread's first inference, about 1 ms a call) and exits after ``idle_s`` without work. Unbounded, so
    no job ever waits for a thread: jobs wait only in the engine's line, which they can leave."""

    def __init__(self, idle_s: float = 30.0):
        self._idle_s = idle_s
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue] = []

    def run(self, work: Callable[[], None]) -> None:
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(
                target=self._serve, args=(inbox,), name="phi3-aipc-generate", daemon=True
            ).start()
        inbox.put(work)

    def _serve(self, inbox: queue.SimpleQueue) -> None:
        while True:
            try:
                work = inbox.get(timeout=self._idle_s)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:
                        self._idle.remove(inbox)
                        return
                continue  # taken off the idle list just now: its work is on the way
            work()
            work = None  # an idle thread must not keep the last job (or its engine) alive
            with self._lock:
                self._idle.append(inbox)


_workers = _Workers()


class _Turnstile:
    """Lets one job generate at a time, in arrival order. A waiting job leaves the line once it is cancelled or
    out of time, so nobody waits behind a call that was given up."""

    def __init__(self) -> None:
        # Re-entrant (an RLock): a GC finalizer may cancel a job, and so wake the line, from inside enter().
        self._changed = threading.Condition()
        self._line: collections.deque[_Job] = collections.deque()
        self._busy = False

    def enter(self, job: _Job) -> bool:
        """Wait for ``job``'s turn; False if it was stopped first (it must not run then)."""
        with self._changed:
            self._line.append(job)
            try:
                while True:
                    if job.stop_reason() is not None:
                        return False
                    if not self._busy and self._line[0] is job:
                        self._busy = True
                        return True
                    self._changed.wait(job.time_left())
            finally:
                self._line.remove(job)
                self._changed.notify_all()

    def leave(self) -> None:
        with self._changed:
            self._busy = False
            self._changed.notify_all()

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()


class _Run:
    """The callback a backend calls with each delta: cuts stop strings, feeds the sink, and says whether to go on.

    An exception from the sink (KeyboardInterrupt included) stops generation and is raised once the backend has
    returned: raised inside a backend's callback, OpenVINO GenAI would print it and generate on.
    """

    def __init__(self, job: _Job, stops: tuple[str, ...]):
        self._job = job
        self._cutter = StopStringCutter(stops)
        self._parts: list[str] = []
        self.stopped_by: FinishReason | None = None
        self._failure: BaseException | None = None

    @property
    def matched(self) -> str | None:
        return self._cutter.matched

    def on_text(self, delta: str) -> bool:
        if self._failure is not None or self.stopped_by is not None:
            return False  # a backend may still flush a last delta after being told to stop
        try:
            self._emit(self._cutter.feed(delta))
        except BaseException as exc:  # noqa: BLE001 - re-raised by finish()
            self._failure = exc
            return False
        if self._cutter.done:
            return False
        self.stopped_by = self._job.stop_reason()
        return self.stopped_by is None

    def finish(self) -> str:
        """After the backend returns: raise what the sink raised, else release held-back text; the whole text."""
        if self._failure is not None:
            raise self._failure
        self._emit(self._cutter.flush())
        return "".join(self._parts)

    def _emit(self, text: str) -> None:
        if text:
            self._parts.append(text)
            if self._job.on_text is not None:
                self._job.on_text(text)


# -- streams -------------------------------------------------------------------------------------------------------
_END = object()
JobFactory = Callable[..., _Job]


class GenerationStream:
    """Iterate for text deltas; ``.result`` holds the GenerationResult once the stream ends.

    Generation starts at the first ``next()``: a stream never iterated costs nothing. Closing the stream
    (``close()``, leaving its ``with`` block) cancels the generation at the next token and waits until the engine
    is free; dropping the last reference to it cancels too. A Ctrl-C while waiting for a delta does the same as
    ``close()``, then propagates.
    """

    def __init__(self, make_job: JobFactory):
        self._make_job = make_job
        self._deltas: queue.Queue = queue.Queue()
        self._job: _Job | None = None
        self._finished = False
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._finished:
            raise StopIteration
        if self._job is None:
            self._job = self._start()
        try:
            item = self._next_item()
        except BaseException:
            self.close()
            raise
        if item is not _END:
            return item
        self._finished = True
        self.result = self._job.outcome()
        raise StopIteration

    def _start(self) -> _Job:
        deltas = self._deltas  # the job sees the queue only, never the stream, so the stream can be collected
        job = self._make_job(on_text=deltas.put, on_finish=functools.partial(deltas.put, _END))
        _cancel_when_collected(self, job)
        return job

    def _next_item(self) -> Any:
        while True:
            try:
                return self._deltas.get(timeout=_WAKE_S)
            except queue.Empty:
                continue

    def close(self) -> None:
        """Cancel the generation and wait until the engine is released (a no-op once the stream has ended)."""
        if self._finished:
            return
        self._finished = True
        if self._job is None:
            return
        self._job.cancel()
        self._job.wait()
        self.result = self._job.result

    def __enter__(self) -> GenerationStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncGenerationStream:
    """``async for`` over text deltas. The generating thread posts each delta to the event loop, so waiting for
    one neither blocks the loop nor takes a thread from asyncio's default pool.

    As with GenerationStream, generation starts at the first ``__anext__``; cancelling the task that iterates,
    ``aclose()`` or dropping the stream cancels it at the next token.
    """

    def __init__(self, make_job: JobFactory):
        self._make_job = make_job
        self._deltas: asyncio.Queue | None = None
        self._job: _Job | None = None
        self._finished = False
        self.result: GenerationResult | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        if self._finished:
            raise StopAsyncIteration
        if self._job is None:
            self._job = self._start(asyncio.get_running_loop())
        try:
            item = await self._deltas.get()  # type: ignore[union-attr]
        except BaseException:
            self._job.cancel()  # the iterating task was cancelled: so is the generation
            raise
        if item is not _END:
            return item
        self._finished = True
        self.result = self._job.outcome()
        raise StopAsyncIteration

    def _start(self, loop: asyncio.AbstractEventLoop) -> _Job:
        deltas: asyncio.Queue = asyncio.Queue()
        self._deltas = deltas

        def post(item: Any) -> None:
            # Raises RuntimeError once the loop has closed, which stops the generation: nobody is listening.
            loop.call_soon_threadsafe(deltas.put_nowait, item)

        job = self._make_job(on_text=post, on_finish=functools.partial(post, _END))
        _cancel_when_collected(self, job)
        return job

    async def aclose(self) -> None:
        """Cancel the generation and wait (without blocking the loop) until the engine is released."""
        if self._finished:
            return
        self._finished = True
        if self._job is None or self._deltas is None:
            return
        self._job.cancel()
        while await self._deltas.get() is not _END:
            pass
        self.result = self._job.result


def _cancel_when_collected(stream: object, job: _Job) -> None:
    """Start ``job``; cancel it if ``stream`` is garbage-collected before the job ends."""
    finalizer = weakref.finalize(stream, job.cancel)
    # A finished job needs no cancelling, and the finalizer should not keep it (and its result) alive.
    job.add_done_callback(finalizer.detach)
    job.start()


def _settle(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


# -- the shared engine cache ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineKey:
    model: str
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

    Every wrapper that asks for the same combination shares one loaded model. Concurrent first calls load once.
    """
    from phi3_aipc.backends import load_backend, resolve_backend_name

    backend_name = resolve_backend_name(backend, device)
    key = EngineKey(
        model=str(model or ""),
        device=str(device or "auto").upper(),
        backend=backend_name,
        options=tuple(sorted((str(k), repr(v)) for k, v in (options or {}).items())),
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
            engine = Engine(load_backend(backend_name, model, device, dict(options or {})))
            with _engines_lock:
                _engines[key] = engine
    return engine


def clear_engines() -> None:
    """Drop every cached engine (tests, or freeing memory)."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
        _loading_locks.clear()
    for engine in engines:
        engine.backend.close()


def with_defaults(params: GenerationParams, **overrides: Any) -> GenerationParams:
    """Copy ``params`` with the overrides that are not None."""
    return replace(params, **{k: v for k, v in overrides.items() if v is not None})
