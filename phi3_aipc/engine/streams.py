"""Streams of text deltas over a job: sync and async, started on first iteration, cancelled when closed or dropped."""

from __future__ import annotations

import asyncio
import functools
import queue
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from phi3_aipc.engine.jobs import WAKE_S, Job
from phi3_aipc.params import (
    GenerationResult,
)

# -- streams -------------------------------------------------------------------------------------------------------
END = object()
JobFactory = Callable[..., Job]
#: How long a stream's deltas may lie unread, while another call waits for the engine, before its generation
#: gives way (a LangChain stream held after its first chunk would otherwise hold the engine to max_tokens).
IDLE_S = 2.0
GAVE_WAY = (
    f"The stream was not read for {IDLE_S:.0f} s while another call waited for the engine, so its generation "
    "stopped (finish_reason 'cancelled'): read a stream as it comes, or close it when done."
)


class Reader:
    """When a stream's reader last took a delta, and whether deltas lie unread: what its job may know of it
    (never the stream itself, which must stay collectable)."""

    def __init__(self, pending: Callable[[], bool]):
        self._pending = pending
        self.last = time.monotonic()

    def took(self) -> None:
        self.last = time.monotonic()

    def idle(self) -> bool:
        return self._pending() and time.monotonic() - self.last >= IDLE_S


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
        self._job: Job | None = None
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
        self._reader.took()
        if item is not END:
            return item
        self._finished = True
        self.result = self._job.outcome()
        raise StopIteration

    def _start(self) -> Job:
        deltas = self._deltas  # the job sees the queue only, never the stream, so the stream can be collected
        job = self._make_job(on_text=deltas.put, on_finish=functools.partial(deltas.put, END))
        self._reader = Reader(lambda: not deltas.empty())
        job.unread = self._reader.idle
        _cancel_when_collected(self, job)
        return job

    def _next_item(self) -> Any:
        while True:
            try:
                return self._deltas.get(timeout=WAKE_S)
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
        self._job: Job | None = None
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
        self._reader.took()
        if item is not END:
            return item
        self._finished = True
        self.result = self._job.outcome()
        raise StopAsyncIteration

    def _start(self, loop: asyncio.AbstractEventLoop) -> Job:
        deltas: asyncio.Queue = asyncio.Queue()
        self._deltas = deltas

        def post(item: Any) -> None:
            # Raises RuntimeError once the loop has closed, which stops the generation: nobody is listening.
            loop.call_soon_threadsafe(deltas.put_nowait, item)

        job = self._make_job(on_text=post, on_finish=functools.partial(post, END))
        self._reader = Reader(lambda: not deltas.empty())
        job.unread = self._reader.idle
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
        while await self._deltas.get() is not END:
            pass
        self.result = self._job.result


def _cancel_when_collected(stream: object, job: Job) -> None:
    """Start ``job``; cancel it if ``stream`` is garbage-collected before the job ends."""
    finalizer = weakref.finalize(stream, job.cancel)
    # A finished job needs no cancelling, and the finalizer should not keep it (and its result) alive.
    job.add_done_callback(finalizer.detach)
    job.start()


def settle(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
