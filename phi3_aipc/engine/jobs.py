"""Jobs: one generation call, the worker thread it runs on, the first-come line to the backend, and how it stops
(cancel, Ctrl-C, a deadline, a stop string)."""

from __future__ import annotations

import collections
import contextlib
import functools
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from phi3_aipc.params import (
    Constraint,
    FinishReason,
    GenerationParams,
    GenerationResult,
)
from phi3_aipc.stops import StopStringCutter

# Receives each text delta (stop strings already cut) on the generating thread.
TextSink = Callable[[str], None]

if TYPE_CHECKING:
    from phi3_aipc.engine.core import Engine

# How long a thread waiting on a generation sleeps between checks. A Ctrl-C reaches Python only when the main
# thread runs Python code: a wait that never wakes (any wait on Windows) would hold it back until the end.
WAKE_S = 0.1


# -- jobs: one generation call, its thread, and how it stops -----------------------------------------------------
class Job:
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
        #: Set by a stream: True while its reader leaves deltas unread (see ``streams.Reader``). Such a job gives
        #: way to a job waiting in line: it stops, rather than hold the engine for text nobody is reading.
        self.unread: Callable[[], bool] | None = None
        self.gave_way = False
        #: How long it waited for its turn (set when it starts).
        self.queued_ms: float | None = None

    def start(self) -> None:
        workers.run(functools.partial(self.engine._execute, self))

    def cancel(self) -> None:
        """Stop at the next token, or leave the line if not yet started. Safe from any thread, and from GC."""
        self._cancelled.set()
        self.engine._turns.wake()

    def stop_reason(self) -> FinishReason | None:
        if self._cancelled.is_set():
            return "cancelled"
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return "timeout"
        if self.unread is not None and self.engine._turns.waiting() and self.unread():
            self.gave_way = True
            return "cancelled"
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
        while not self.done.wait(WAKE_S):
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


class Workers:
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


workers = Workers()


class Turnstile:
    """Lets one job generate at a time, in arrival order. A waiting job leaves the line once it is cancelled or
    out of time, so nobody waits behind a call that was given up.

    A backend that declares ``concurrent = True`` (continuous batching: it schedules its own requests and batches
    them) has no line: every job enters at once. Every other backend (the NPU's stateful pipeline among them) keeps
    it, since one pipeline there serves one generate() at a time.
    """

    def __init__(self) -> None:
        # Re-entrant (an RLock): a GC finalizer may cancel a job, and so wake the line, from inside enter().
        self._changed = threading.Condition()
        self._line: collections.deque[Job] = collections.deque()
        self._busy = False

    def enter(self, job: Job) -> bool:
        """Wait for ``job``'s turn; False if it was stopped first (it must not run then)."""
        if getattr(job.engine.backend, "concurrent", False):
            return job.stop_reason() is None
        with self._changed:
            if job not in self._line:  # not placed ahead by ``join``
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

    def join(self, job: Job) -> None:
        """Put ``job`` in line now, from the caller's thread, so that a job started later cannot overtake it on its
        way to ``enter``; its own thread then waits there as usual."""
        if getattr(job.engine.backend, "concurrent", False):
            return
        with self._changed:
            self._line.append(job)

    def leave(self) -> None:
        # (After a concurrent backend's job too: _busy is never set then, and clearing it again is harmless.)
        with self._changed:
            self._busy = False
            self._changed.notify_all()

    def wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def waiting(self) -> bool:
        """Whether a job waits in line (never, on a concurrent backend: it has no line)."""
        return bool(self._line)


class Run:
    """The callback a backend calls with each delta: cuts stop strings, feeds the sink, and says whether to go on.

    An exception from the sink (KeyboardInterrupt included) stops generation and is raised once the backend has
    returned: raised inside a backend's callback, OpenVINO GenAI would print it and generate on.
    """

    def __init__(self, job: Job, stops: tuple[str, ...]):
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
