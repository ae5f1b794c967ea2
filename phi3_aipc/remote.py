"""Remote mode: an engine whose model runs behind an OpenAI-compatible server (``phi3-aipc serve``, OpenVINO Model
Server, vLLM), so the same chat turn (tool protocol, constraints, exact stops, parsing) runs against it.

:class:`RemoteEngine` offers what the chat turn and the adapters ask of a local Engine. The turn plans as usual for
the model's family; the remote engine then sends the planned messages (our tool protocol already in the prompt) to
``/v1/chat/completions``, a raw prompt string to ``/v1/completions``, and a ``json_schema`` constraint as
``response_format``: the one constraint an OpenAI-compatible server takes, which covers structured output and forced
tool calls. ``tool_choice="auto"`` relies on the prompt (a server has no structural-tag constraint). The text that
comes back is parsed by the turn exactly as local text is.

- Every call streams over SSE (``stream_options.include_usage`` for the counts), so deltas, cancellation, a
  ``timeout_s`` deadline and exact stops work the same whole or streamed. Stop strings go to the server and are cut
  here too, at the exact character, whatever the server does with them.
- A reply that is not the protocol is an error, never an answer: a redirect, an HTML page, a whole JSON body where
  a stream was asked for, an event that is not JSON, a stream that ends without its ``[DONE]`` terminator
  (RemoteProtocolError). So is a reply that grows past its bounds: more events or text than ``max_tokens`` plus
  slack can hold, a line over 1 MiB, more bytes than that many events can take.
- HTTP statuses map to typed errors: 400 ``context_length_exceeded`` -> RemotePromptTooLongError (a
  PromptTooLongError), other 4xx -> InvalidParameterError, 401/403 -> RemoteError (the key), 404 of a model ->
  RemoteModelNotFoundError, 429 -> RemoteRateLimitError, 5xx -> RemoteServerError.
- Retries: connection failures and 429/502/503/504 (503 is also "model still loading") are retried up to
  ``max_retries`` times with exponential backoff (or the server's Retry-After, up to 30 s), only before any text
  arrived. A 500 or a 4xx is answered the same way every time: never retried.
- Timeouts: 10 s to connect; ``timeout`` (seconds, default 120) bounds each wait for data, so a silent server
  fails with RemoteTimeoutError instead of hanging; a ``timeout_s`` deadline ends the answer with "timeout".
- Servers differ (``phi3_aipc.remote_servers``): the server is recognised once by ``GET /v1/models``; a parameter
  it spells differently is renamed (llama.cpp's ``repeat_penalty``), one it does not take is noted in the result.
  A server that refuses ``response_format`` json_schema (llama-cpp-python) is sent json_object with the schema, or
  no constraint, the answer is checked against the schema here, and the result's notes say so.

Needs httpx (``pip install 'phi3-aipc[serve]'``); nothing here loads a backend.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from phi3_aipc.errors import (
    BackendNotInstalledError,
    InvalidParameterError,
    ModelNotFoundError,
    Phi3AIPCError,
    PromptTooLongError,
    UnsupportedFeatureError,
)
from phi3_aipc.families import detect_family
from phi3_aipc.messages import check_messages
from phi3_aipc.params import Constraint, FinishReason, GenerationParams, GenerationResult, Timings
from phi3_aipc.remote_servers import FALLBACK, UNKNOWN, ServerDialect, dialect_of, translate
from phi3_aipc.stops import StopStringCutter
from phi3_aipc.tools.json_text import JsonRefused, loads_bounded

RETRY_STATUSES = frozenset({429, 502, 503, 504})
CONNECT_TIMEOUT_S = 10.0
#: The default wait for the next data: long enough for a queued request's prefill, short of "forever".
READ_TIMEOUT_S = 120.0
BACKOFF_S = 0.5
MAX_RETRY_AFTER_S = 30.0
# Bounds on one reply. A server sends about one event per token (plus a role, a finish and a usage event): the slack
# covers those and servers that split a token's text; nothing honest comes near the byte bounds.
EVENT_SLACK = 32
MAX_CHARS_PER_TOKEN = 64
MAX_BYTES_PER_EVENT = 4096
MAX_BASE_BYTES = 1 << 20
MAX_LINE_BYTES = 1 << 20
MAX_ERROR_BYTES = 64 << 10
#: A refusal of the response_format a server was sent (llama-cpp-python: "Input should be 'text' or 'json_object'").
FORM_REFUSED = re.compile(r"response_format|json_schema|json_object", re.I)
OVERFLOW = re.compile(r"context (length|window)|maximum context", re.I)


class RemoteError(Phi3AIPCError, ConnectionError):
    """The server could not be reached, refused the key, or failed (after retries)."""


class RemoteProtocolError(RemoteError):
    """The server's reply is not the OpenAI streaming protocol (a redirect, a web page, a cut or endless stream)."""


class RemoteTimeoutError(RemoteError, TimeoutError):
    """The server sent nothing for longer than the read timeout."""


class RemoteRateLimitError(RemoteError):
    """The server answered 429 (too many requests, or busy) after the retries."""


class RemoteServerError(RemoteError):
    """The server failed (HTTP 5xx, or an error event mid-stream)."""


class RemoteModelNotFoundError(ModelNotFoundError):
    """The server does not serve the model the request named (HTTP 404 model_not_found)."""


class RemotePromptTooLongError(PromptTooLongError):
    """The server refused the prompt as too long for its model's context window (400 context_length_exceeded)."""

    def __init__(self, message: str):
        counts = [int(n) for n in re.findall(r"\d{2,}", message)]
        self.prompt_tokens = max(counts) if counts else 0
        self.limit = min(counts) if len(counts) > 1 else 0
        Phi3AIPCError.__init__(self, message)


class RemoteEngine:
    """A model served over HTTP, used like a local Engine by the chat turn and both adapters."""

    device = "remote"
    backend_name = "remote"
    context_window: int | None = None
    max_prompt_tokens: int | None = None
    load_ms: float | None = None
    #: Control-token text is neutralised by the server, which knows the model's tokens.
    special_tokens: frozenset[str] = frozenset()
    #: What an OpenAI-compatible server constrains: response_format json_schema.
    constraint_kinds: frozenset[str] = frozenset({"json_schema"})

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float | None = None,
        max_retries: int = 2,
    ):
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise InvalidParameterError(
                f"base_url must be an http(s) URL such as 'http://127.0.0.1:8000/v1', got {base_url!r}."
            )
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise InvalidParameterError(f"max_retries must be a whole number >= 0, got {max_retries!r}.")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            raise InvalidParameterError(f"timeout must be a number of seconds > 0, got {timeout!r}.")
        self.base_url = base_url.rstrip("/")
        self.model_name = model
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self._httpx = _import_httpx()
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._dialect: ServerDialect | None = None
        #: The response_format form this server took last (see remote_servers.FALLBACK).
        self.response_form: str | None = None
        self._warned: set[str] = set()

    @property
    def model_family(self) -> str:
        """The family by the model's name (the prompt is planned here, so the name must say it: 'phi-4-mini')."""
        return detect_family(self.model_name).name

    # -- what the chat turn and the adapters call -------------------------------------------------------------------
    def render(self, messages: Sequence[Mapping[str, Any]], tools: Any = None) -> list[dict[str, Any]]:
        """The planned messages, as they are sent: the server applies the model's chat template."""
        return [dict(m) for m in messages]

    def format_chat(self, messages: Sequence[Mapping[str, Any]], tools: Any = None) -> list[dict[str, Any]]:
        return self.render(check_messages(messages))

    def count_tokens(self, text: str) -> int:
        raise UnsupportedFeatureError(
            "A remote model's tokenizer is on the server: token counts come back in each result's usage "
            "(prompt_tokens, completion_tokens)."
        )

    def generate(
        self,
        prompt: str | Sequence[Mapping[str, Any]],
        params: GenerationParams | None = None,
        *,
        constraint: Constraint | None = None,
        on_text: Any = None,
    ) -> GenerationResult:
        stream = self.stream(prompt, params, constraint=constraint)
        with stream:
            for delta in stream:
                if on_text is not None:
                    on_text(delta)
        assert stream.result is not None
        return stream.result

    def stream(
        self,
        prompt: str | Sequence[Mapping[str, Any]],
        params: GenerationParams | None = None,
        *,
        constraint: Constraint | None = None,
    ) -> RemoteStream:
        call = _Call(self, prompt, params or GenerationParams(), constraint)
        return RemoteStream(call, self._sync_client())

    async def agenerate(
        self,
        prompt: str | Sequence[Mapping[str, Any]],
        params: GenerationParams | None = None,
        *,
        constraint: Constraint | None = None,
    ) -> GenerationResult:
        stream = self.astream(prompt, params, constraint=constraint)
        try:
            async for _ in stream:
                pass
        finally:
            await stream.aclose()
        assert stream.result is not None
        return stream.result

    def astream(
        self,
        prompt: str | Sequence[Mapping[str, Any]],
        params: GenerationParams | None = None,
        *,
        constraint: Constraint | None = None,
    ) -> AsyncRemoteStream:
        return AsyncRemoteStream(_Call(self, prompt, params or GenerationParams(), constraint))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    # -- HTTP --------------------------------------------------------------------------------------------------------
    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def http_timeout(self, params: GenerationParams) -> Any:
        """Each wait for data: ``timeout``, else READ_TIMEOUT_S, and never past the call's ``timeout_s``."""
        limits = [t for t in (self.timeout or READ_TIMEOUT_S, params.timeout_s) if t is not None]
        return self._httpx.Timeout(min(limits), connect=CONNECT_TIMEOUT_S)

    def _sync_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self._httpx.Client()
            return self._client

    def async_client(self) -> Any:
        # One per call: an AsyncClient belongs to the event loop it was made on, and callers bring their own loops.
        return self._httpx.AsyncClient()

    # -- which server this is ----------------------------------------------------------------------------------------
    def dialect(self, client: Any) -> ServerDialect:
        """The server's dialect, asked once (``GET /v1/models``, read up to 64 KiB); UNKNOWN while it cannot be
        told. 10 s at most: a server that cannot answer that is told so by the request that follows."""
        if self._dialect is None:
            try:
                with client.stream(
                    "GET", self._models_url, headers=self.headers(), timeout=CONNECT_TIMEOUT_S
                ) as r:
                    self._note_dialect(r.status_code, _bounded_body(r.iter_bytes(), MAX_ERROR_BYTES))
            except self._httpx.HTTPError:
                return UNKNOWN  # the next call asks again
        return self._dialect or UNKNOWN

    async def adialect(self, client: Any) -> ServerDialect:
        if self._dialect is None:
            try:
                async with client.stream(
                    "GET", self._models_url, headers=self.headers(), timeout=CONNECT_TIMEOUT_S
                ) as r:
                    chunks = [chunk async for chunk in _abounded(r.aiter_bytes(), MAX_ERROR_BYTES)]
                    self._note_dialect(r.status_code, b"".join(chunks))
            except self._httpx.HTTPError:
                return UNKNOWN
        return self._dialect or UNKNOWN

    @property
    def _models_url(self) -> str:
        return f"{self.base_url}/models"

    def _note_dialect(self, status: int, body: bytes) -> None:
        if status >= 500 or status == 429:
            return  # loading or busy: ask again next time
        try:
            parsed = loads_bounded(body.decode("utf-8", "replace"))
        except ValueError:
            parsed = None
        self._dialect = dialect_of(parsed) if status < 300 else UNKNOWN

    def form_for(self, dialect: ServerDialect) -> str:
        return self.response_form or dialect.response_format

    def warn_once(self, note: str) -> None:
        if note not in self._warned:
            self._warned.add(note)
            warnings.warn(note, RuntimeWarning, stacklevel=4)


# -- one call ----------------------------------------------------------------------------------------------------------
class _Call:
    """The request for one generation, and what its SSE events add up to."""

    def __init__(
        self,
        engine: RemoteEngine,
        prompt: str | Sequence[Mapping[str, Any]],
        params: GenerationParams,
        constraint: Constraint | None,
    ):
        if params is not None and not isinstance(params, GenerationParams):
            raise InvalidParameterError(f"params must be a GenerationParams, got {type(params).__name__}.")
        self.engine = engine
        self.params = params
        self.url, self.base_body, self.extensions, self.schema = _request(
            engine.base_url, engine.model_name, prompt, params, constraint
        )
        self.chat = isinstance(self.base_body.get("messages"), list)
        self.form = "json_schema"
        self.notes: list[str] = []
        self._cutter = StopStringCutter(params.stop)
        self._parts: list[str] = []
        self._started = time.perf_counter()
        self._deadline = None if params.timeout_s is None else time.monotonic() + params.timeout_s
        self._first_token_s: float | None = None
        self._finish: str | None = None
        self._server_stop: Any = None
        self._usage: dict[str, Any] | None = None
        self._events = 0
        self._chars = 0
        self._max_events = params.max_new_tokens + max(EVENT_SLACK, params.max_new_tokens // 4)
        self.done = False
        #: The stream is to be read no further: [DONE], a closing stop string or the deadline (see ``texts``).
        self.over = False
        self.close_at_stop = False
        self.stopped_by: FinishReason | None = None

    # -- the request -------------------------------------------------------------------------------------------------
    def body(self, dialect: ServerDialect, form: str) -> dict[str, Any]:
        """The JSON body for this server and constraint form; notes what differs from what was asked."""
        self.form = form
        extra, notes = translate(dialect, self.extensions)
        body = {**self.base_body, **extra}
        self.close_at_stop = not dialect.reports_stop
        if self.close_at_stop:
            body.pop("stop", None)
        if self.schema is not None and form == "json_schema":
            schema = {"name": "output", "schema": self.schema, "strict": True}
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        elif self.schema is not None and form == "json_object":
            body["response_format"] = {"type": "json_object", "schema": self.schema}
        self.notes = notes
        for note in notes:
            self.engine.warn_once(note)
        return body

    def lines(self) -> _Lines:
        return _Lines(
            MAX_BASE_BYTES + self._max_events * MAX_BYTES_PER_EVENT, 4 * self._max_events + 1000, self.url
        )

    def out_of_time(self) -> bool:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self.stopped_by = "timeout"
            return True
        return False

    # -- the reply ---------------------------------------------------------------------------------------------------
    def texts(self, lines: _Lines, chunk: bytes) -> Iterator[str]:
        """The texts one chunk of the body adds, line by line, for the sync and the async stream alike; it stops
        early, with ``over`` set, at [DONE], at a stop string that closes the stream, or at the deadline."""
        for line in lines.feed(chunk):
            if self.out_of_time():
                self.over = True
                return
            text = self.line(line)
            if text:
                yield text
            if self.done:
                self.over = True
                return

    def tail(self, lines: _Lines) -> Iterator[str]:
        """The texts left once the body has ended: its last unterminated line, then what the stop cutter held."""
        for line in lines.end():
            text = self.line(line)
            if text:
                yield text
        last = self.ended()
        if last:
            yield last

    def line(self, line: str) -> str:
        """The text one SSE line adds (SSE comments, other fields and blank lines add none)."""
        if not line.startswith("data:"):
            return ""
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return self._release()
        self._events += 1
        if self._events > self._max_events:
            raise RemoteProtocolError(
                f"The server at {self.url} sent more than {self._max_events} events for max_tokens="
                f"{self.params.max_new_tokens} without ending the stream: it does not honour max_tokens. "
                "The answer was cut off there."
            )
        return self._read_event(_event_json(data, self.url))

    def _read_event(self, event: dict[str, Any]) -> str:
        if "error" in event:
            raise _error_from(event, None)
        if event.get("usage"):
            self._usage = event["usage"] if isinstance(event["usage"], dict) else None
        choices = event.get("choices")
        choices = [] if choices is None else choices
        if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
            raise RemoteProtocolError(f"An event from {self.url} has no list of choices: {str(event)[:200]}")
        text = "".join(self._read_choice(choice) for choice in choices)
        if text:
            self._parts.append(text)
        if self.close_at_stop and self._cutter.matched is not None:
            self.done = True  # the server was not sent the stops: closing the stream ends its generation
        # After a stop string, read on (dropping text) to [DONE]: the usage comes last, and the server, which was
        # sent the same stops, ends soon.
        return text

    def _read_choice(self, choice: dict[str, Any]) -> str:
        delta = choice.get("delta") if self.chat else choice
        piece = delta.get("content") if self.chat and isinstance(delta, dict) else choice.get("text")
        if choice.get("finish_reason"):
            self._finish = choice["finish_reason"]
            self._server_stop = choice.get("stop_reason")
        if not isinstance(piece, str) or not piece:
            return ""
        self._chars += len(piece)
        if self._chars > self._max_events * MAX_CHARS_PER_TOKEN:
            raise RemoteProtocolError(
                f"The server at {self.url} sent more than {self._max_events * MAX_CHARS_PER_TOKEN} characters for "
                f"max_tokens={self.params.max_new_tokens}: it does not honour max_tokens. The answer was cut off."
            )
        if self._first_token_s is None:
            self._first_token_s = time.perf_counter()
        return self._cutter.feed(piece)

    def _release(self) -> str:
        rest = self._cutter.flush()
        if rest:
            self._parts.append(rest)
        return rest

    def ended(self) -> str:
        """The last text once the body ended: the stream must have said [DONE] (or the deadline passed)."""
        if self.done or self.out_of_time():
            return self._release() if not self.done else ""
        raise RemoteProtocolError(
            f"The stream from {self.url} ended without its [DONE] terminator, after "
            f"{sum(map(len, self._parts))} characters{' and a finish_reason' if self._finish else ''}: the server "
            "or a proxy between cut it off, so the answer may be incomplete. Ask again; if it repeats, check the "
            "server's log."
        )

    def result(self) -> GenerationResult:
        text = "".join(self._parts)
        stop_string = self._cutter.matched
        if (
            stop_string is None
            and isinstance(self._server_stop, str)
            and self._server_stop in self.params.stop
        ):
            stop_string = self._server_stop
        reason: FinishReason
        if self.stopped_by is not None:
            reason = self.stopped_by
        elif stop_string is not None:
            reason = "stop_string"
        elif self._finish == "length":
            reason = "length"
        else:
            reason = "stop"
        usage = self._usage or {}
        ended = time.perf_counter()
        ttft = None if self._first_token_s is None else (self._first_token_s - self._started) * 1000
        return GenerationResult(
            text=text,
            finish_reason=reason,
            prompt_tokens=_count(usage.get("prompt_tokens")),
            completion_tokens=_count(usage.get("completion_tokens")),
            timings=Timings(ttft_ms=ttft, generate_ms=(ended - self._started) * 1000),
            stop_string=stop_string,
            model=self.engine.model_name,
            device=self.engine.device,
            backend=self.engine.backend_name,
            notes=tuple(self._result_notes(text, reason)),
        )

    def _result_notes(self, text: str, reason: str) -> list[str]:
        notes = list(self.notes)
        if self.schema is not None and self.form != "json_schema":
            notes.append(self._checked_here(text, reason))
        if not self._usage:
            notes.append("The server reported no usage: token counts are unknown (0).")
        return notes

    def _checked_here(self, text: str, reason: str) -> str:
        from phi3_aipc.tools.structured import parse_json_output

        sent = "json_object with the schema" if self.form == "json_object" else "no constraint"
        said = (
            f"The server does not take response_format json_schema; it was sent {sent} "
            f"(response_format={self.form}), and the answer was checked here against the schema: "
        )
        if reason != "stop":
            return said + f"not checked, the answer ended with {reason!r}."
        try:
            parse_json_output(text, self.schema)
        except Phi3AIPCError as exc:
            return said + f"it does not match ({exc})."
        return said + "it matches."


class _Lines:
    """Bytes of an SSE body into lines, within bounds (a line, all lines, all bytes)."""

    def __init__(self, max_bytes: int, max_lines: int, url: str):
        self._buffer = bytearray()
        self._bytes = 0
        self._lines = 0
        self._max_bytes = max_bytes
        self._max_lines = max_lines
        self._url = url

    def feed(self, chunk: bytes) -> list[str]:
        self._bytes += len(chunk)
        if self._bytes > self._max_bytes:
            raise RemoteProtocolError(
                f"The reply from {self._url} is over {self._max_bytes} bytes without ending: cut off there."
            )
        self._buffer += chunk
        lines = []
        while (end := self._buffer.find(b"\n")) >= 0:
            lines.append(self._decode(bytes(self._buffer[:end])))
            del self._buffer[: end + 1]
        if len(self._buffer) > MAX_LINE_BYTES:
            raise RemoteProtocolError(
                f"A line from {self._url} is over {MAX_LINE_BYTES} bytes: not an SSE event."
            )
        self._lines += len(lines)
        if self._lines > self._max_lines:
            raise RemoteProtocolError(
                f"The reply from {self._url} is over {self._max_lines} lines without ending: cut off there."
            )
        return lines

    def end(self) -> list[str]:
        rest, self._buffer = bytes(self._buffer), bytearray()
        return [self._decode(rest)] if rest.strip() else []

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.rstrip(b"\r").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RemoteProtocolError(
                f"A line from {self._url} is not UTF-8 ({exc}): not an SSE event."
            ) from None


class RemoteStream:
    """Text deltas of one remote generation; ``.result`` once it ends. Closing it closes the connection, which
    cancels the generation on a server that notices (``phi3-aipc serve`` does)."""

    def __init__(self, call: _Call, client: Any):
        self._call = call
        self._client = client
        self._deltas: Iterator[str] | None = None
        self._response: Any = None
        self._finished = False
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._finished:
            raise StopIteration
        if self._deltas is None:
            self._deltas = self._read()
        httpx = self._call.engine._httpx
        try:
            return next(self._deltas)
        except StopIteration:
            self._end()
            raise
        except httpx.TimeoutException as exc:
            if self._call.out_of_time():
                self._end()
                raise StopIteration from None
            self.close()
            raise _timed_out(self._call, exc) from exc
        except httpx.HTTPError as exc:
            self.close()
            raise RemoteError(f"The connection to {self._call.url} failed mid-answer: {exc}") from exc
        except BaseException:
            self.close()
            raise

    def _read(self) -> Iterator[str]:
        call = self._call
        self._response = _open_sync(call, self._client)
        lines = call.lines()
        for chunk in self._response.iter_bytes():
            yield from call.texts(lines, chunk)
            if call.over:
                return
        yield from call.tail(lines)

    def _end(self) -> None:
        self._finished = True
        self.result = self._call.result()
        if self._response is not None:
            self._response.close()

    def close(self) -> None:
        if not self._finished:
            self._finished = True
            if self._call.stopped_by is None:
                self._call.stopped_by = "cancelled"
            self.result = self._call.result()
        if self._response is not None:
            self._response.close()

    def __enter__(self) -> RemoteStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncRemoteStream:
    """``async for`` twin of RemoteStream; ``aclose()`` (or cancelling the task) closes the connection."""

    def __init__(self, call: _Call):
        self._call = call
        self._events: AsyncIterator[str] | None = None
        self._finished = False
        self.result: GenerationResult | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        if self._finished:
            raise StopAsyncIteration
        if self._events is None:
            self._events = self._deltas()
        httpx = self._call.engine._httpx
        try:
            return await self._events.__anext__()
        except StopAsyncIteration:
            self._end()
            raise
        except httpx.TimeoutException as exc:
            if self._call.out_of_time():
                self._end()
                raise StopAsyncIteration from None
            await self.aclose()
            raise _timed_out(self._call, exc) from exc
        except httpx.HTTPError as exc:
            await self.aclose()
            raise RemoteError(f"The connection to {self._call.url} failed mid-answer: {exc}") from exc
        except BaseException:
            await self.aclose()
            raise

    def _end(self) -> None:
        self._finished = True
        self.result = self._call.result()

    async def _deltas(self) -> AsyncIterator[str]:
        call = self._call
        async with call.engine.async_client() as client:
            response = await _open_async(call, client)
            try:
                lines = call.lines()
                async for chunk in response.aiter_bytes():
                    for text in call.texts(lines, chunk):
                        yield text
                    if call.over:
                        return
                for text in call.tail(lines):
                    yield text
            finally:
                await response.aclose()

    async def aclose(self) -> None:
        if not self._finished:
            self._finished = True
            if self._call.stopped_by is None:
                self._call.stopped_by = "cancelled"
            self.result = self._call.result()
        if self._events is not None:
            await self._events.aclose()  # type: ignore[attr-defined]


# -- requests, retries, errors ---------------------------------------------------------------------------------------
def _request(
    base_url: str,
    model: str,
    prompt: str | Sequence[Mapping[str, Any]],
    params: GenerationParams,
    constraint: Constraint | None,
) -> tuple[str, dict[str, Any], dict[str, Any], Any]:
    """(url, the OpenAI body, the non-OpenAI parameters that were set, the JSON schema or None)."""
    body: dict[str, Any] = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": params.max_new_tokens,
        # Greedy unless sampling is asked for, as locally (an OpenAI server's own default temperature is 1).
        "temperature": (params.temperature or 1.0) if params.sampling else 0.0,
    }
    body.update({k: v for k, v in {"top_p": params.top_p, "seed": params.seed}.items() if v is not None})
    extensions = {
        "top_k": params.top_k,  # vLLM's extension, also taken by phi3-aipc serve
        "repetition_penalty": params.repetition_penalty,
        "ignore_eos": True if params.ignore_eos else None,
    }
    extensions = {k: v for k, v in extensions.items() if v is not None}
    if params.stop:
        body["stop"] = list(params.stop)
    schema = None
    if constraint is not None:
        if constraint.kind != "json_schema":
            raise UnsupportedFeatureError(
                f"A remote server takes only a json_schema constraint (as response_format), not a {constraint.kind}."
            )
        schema = json.loads(constraint.value)
    if isinstance(prompt, str):
        if constraint is not None:
            raise UnsupportedFeatureError(
                "A raw prompt string cannot be constrained remotely; send messages."
            )
        if not prompt:
            raise InvalidParameterError("The prompt is an empty string; pass some text or chat messages.")
        return f"{base_url}/completions", {**body, "prompt": prompt}, extensions, schema
    messages = [{"role": m["role"], "content": m.get("content") or ""} for m in check_messages(list(prompt))]
    return f"{base_url}/chat/completions", {**body, "messages": messages}, extensions, schema


class _Refused(Exception):
    """An HTTP error reply (status, parsed body), before any text: mapped to a typed error, or a fallback."""

    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body


def _open_sync(call: _Call, client: Any) -> Any:
    """The streaming response, after retries and response_format fallbacks; a typed error otherwise."""
    engine = call.engine
    dialect = engine.dialect(client)
    form = engine.form_for(dialect)
    while True:
        try:
            return _send_sync(call, client, call.body(dialect, form))
        except _Refused as refused:
            form = _fall_back_or_raise(call, dialect, refused)


async def _open_async(call: _Call, client: Any) -> Any:
    engine = call.engine
    dialect = await engine.adialect(client)
    form = engine.form_for(dialect)
    while True:
        try:
            return await _send_async(call, client, call.body(dialect, form))
        except _Refused as refused:
            form = _fall_back_or_raise(call, dialect, refused)


def _send_sync(call: _Call, client: Any, body: dict[str, Any]) -> Any:
    httpx = call.engine._httpx
    for attempt in range(call.engine.max_retries + 1):
        last = attempt == call.engine.max_retries
        try:
            response = client.send(_build(call, client, body), stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
            if last:
                raise _unreachable(call, exc) from exc
            wait = BACKOFF_S * 2**attempt
        except httpx.TimeoutException:
            raise  # waiting for the headers took too long: the stream reports it (timeout or RemoteTimeoutError)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise RemoteError(f"The request to {call.url} failed: {exc}") from exc
        else:
            if response.status_code < 300 and _is_stream(response):
                return response
            payload = _read_sync(response)
            if response.status_code < 300:
                raise _not_a_stream(call, response, payload)
            wait = _retry_wait(call, response, attempt, last, payload)
        time.sleep(wait)
    raise AssertionError("unreachable")


async def _send_async(call: _Call, client: Any, body: dict[str, Any]) -> Any:
    httpx = call.engine._httpx
    for attempt in range(call.engine.max_retries + 1):
        last = attempt == call.engine.max_retries
        try:
            response = await client.send(_build(call, client, body), stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
            if last:
                raise _unreachable(call, exc) from exc
            wait = BACKOFF_S * 2**attempt
        except httpx.TimeoutException:
            raise
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise RemoteError(f"The request to {call.url} failed: {exc}") from exc
        else:
            if response.status_code < 300 and _is_stream(response):
                return response
            payload = await _read_async(response)
            if response.status_code < 300:
                raise _not_a_stream(call, response, payload)
            wait = _retry_wait(call, response, attempt, last, payload)
        await asyncio.sleep(wait)
    raise AssertionError("unreachable")


def _build(call: _Call, client: Any, body: dict[str, Any]) -> Any:
    return client.build_request(
        "POST",
        call.url,
        json=body,
        headers=call.engine.headers(),
        timeout=call.engine.http_timeout(call.params),
    )


def _is_stream(response: Any) -> bool:
    return "text/event-stream" in response.headers.get("content-type", "")


def _not_a_stream(call: _Call, response: Any, payload: Any) -> Phi3AIPCError:
    """The error a 2xx reply that is not an event stream says, or a RemoteProtocolError."""
    if isinstance(payload, dict) and "error" in payload:
        return _error_from(payload, None)
    kind = response.headers.get("content-type", "")
    shown = payload if isinstance(payload, str) else json.dumps(payload)
    what = "a whole JSON body" if "json" in kind else kind or "no content type"
    return RemoteProtocolError(
        f"The server at {call.url} answered HTTP {response.status_code} with {what}, not the event stream that was "
        f"asked for (stream: true): {shown[:200]!r}. Is base_url the API itself (ending in /v1), not a web page, "
        "a proxy or a server that does not stream?"
    )


def _retry_wait(call: _Call, response: Any, attempt: int, last: bool, payload: Any) -> float:
    """Seconds to wait before retrying an error reply; raises when it is not to be retried."""
    status = response.status_code
    if status < 400:
        where = response.headers.get("location")
        raise RemoteProtocolError(
            f"The server at {call.url} answered HTTP {status}"
            + (f", a redirect to {where}" if where else "")
            + ", not an answer: redirects are not followed. Point base_url at the API itself (ending in /v1)."
        )
    if last or status not in RETRY_STATUSES:
        raise _Refused(status, payload)
    after = response.headers.get("retry-after", "")
    if after.strip().isdigit():
        return min(float(after), MAX_RETRY_AFTER_S)
    return BACKOFF_S * 2**attempt


def _fall_back_or_raise(call: _Call, dialect: ServerDialect, refused: _Refused) -> str:
    """The next response_format to ask with, when that is what the server refused; else raise its error.

    Only a server not known to take json_schema falls back (phi3-aipc serve and vLLM refuse a schema for what it
    is: that error is the answer). The engine remembers that a server takes json_object instead of json_schema,
    a capability; dropping the constraint altogether is for this call only (its schema was refused).
    """
    message = _message_of(refused.body)
    may_fall_back = not dialect.known or dialect.response_format != "json_schema"
    if (
        not may_fall_back
        or call.schema is None
        or call.form == "none"
        or refused.status == 429
        or not FORM_REFUSED.search(message)
    ):
        raise _error_from(refused.body, refused.status)
    following = FALLBACK[FALLBACK.index(call.form) + 1]
    if following == "json_object":
        call.engine.response_form = following
    call.engine.warn_once(
        f"The server at {call.engine.base_url} refused response_format {call.form} (HTTP {refused.status}: "
        f"{message[:160]}); remote mode asks it with {following} and checks the answer against the schema itself."
    )
    return following


def _read_sync(response: Any) -> Any:
    try:
        return _parsed(_bounded_body(response.iter_bytes(), MAX_ERROR_BYTES))
    finally:
        response.close()


async def _read_async(response: Any) -> Any:
    try:
        return _parsed(
            b"".join([chunk async for chunk in _abounded(response.aiter_bytes(), MAX_ERROR_BYTES)])
        )
    finally:
        await response.aclose()


def _bounded_body(chunks: Iterator[bytes], limit: int) -> bytes:
    out = bytearray()
    for chunk in chunks:
        out += chunk
        if len(out) >= limit:
            break
    return bytes(out[:limit])


async def _abounded(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    size = 0
    async for chunk in chunks:
        yield chunk[: max(0, limit - size)]
        size += len(chunk)
        if size >= limit:
            break


def _parsed(body: bytes) -> Any:
    text = body.decode("utf-8", "replace")
    try:
        return loads_bounded(text)
    except ValueError:
        return text


def _event_json(data: str, url: str) -> dict[str, Any]:
    try:
        event = loads_bounded(data)
    except (JsonRefused, ValueError) as exc:
        raise RemoteProtocolError(f"An event from {url} is not JSON ({exc}): {data[:200]!r}") from None
    if not isinstance(event, dict):
        raise RemoteProtocolError(f"An event from {url} is not a JSON object: {data[:200]!r}")
    return event


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _unreachable(call: _Call, exc: BaseException) -> RemoteError:
    return RemoteError(
        f"Cannot reach the server at {call.engine.base_url} after {call.engine.max_retries + 1} attempt(s) ({exc}). "
        "Is it running (`phi3-aipc serve`), and does base_url end with /v1?"
    )


def _timed_out(call: _Call, exc: BaseException) -> RemoteTimeoutError:
    waited = call.engine.http_timeout(call.params).read
    return RemoteTimeoutError(
        f"The server at {call.url} sent nothing for {waited:g} s ({type(exc).__name__}). It may be overloaded or "
        "stuck; pass a larger timeout= to wait longer for a slow server."
    )


def _message_of(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    if isinstance(error, str):
        return error
    if isinstance(body, dict) and isinstance(body.get("detail"), str | list):
        return str(body["detail"])  # FastAPI's own 4xx body
    return str(body)[:500]


def _error_from(body: Any, status: int | None) -> Phi3AIPCError:
    """The typed error for an error reply (``status`` None: an error event inside a stream)."""
    error = body.get("error") if isinstance(body, dict) else None
    code = str(error.get("code") or error.get("type") or "") if isinstance(error, dict) else ""
    message = _message_of(body)
    where = (
        f" (HTTP {status}{', ' + code if code else ''})"
        if status is not None
        else f" ({code or 'error event'})"
    )
    if code == "context_length_exceeded" or (status == 400 and OVERFLOW.search(message)):
        return RemotePromptTooLongError(
            f"The server refused the prompt as too long for its model's context window{where}: {message} "
            "Shorten the prompt or drop earlier turns."
        )
    if status in (401, 403) or code == "invalid_api_key":
        return RemoteError(f"The server refused the API key{where}: {message} Pass api_key=...")
    if status == 404 or code == "model_not_found":
        if code == "model_not_found" or re.search(r"\bmodel\b", message, re.I):
            return RemoteModelNotFoundError(
                f"The server does not serve that model{where}: {message} Pass model= one of those GET /v1/models lists."
            )
        return RemoteError(f"Not found{where}: {message} base_url must end with /v1.")
    if status == 429 or code in ("rate_limit_exceeded", "server_busy"):
        return RemoteRateLimitError(
            f"The server is busy or rate-limits this client{where}, after the retries: {message} Try again later, "
            "or raise max_retries."
        )
    if status is not None and 400 <= status < 500:
        return InvalidParameterError(f"The server refused the request{where}: {message}")
    if status is None and code.startswith("invalid"):
        return InvalidParameterError(f"The server refused the request{where}: {message}")
    return RemoteServerError(f"The server failed{where}: {message}")


def _import_httpx() -> Any:
    try:
        import httpx
    except ImportError as exc:
        raise BackendNotInstalledError("remote", "httpx", "serve", exc) from None
    return httpx


# -- a shared engine per server and settings, as get_engine shares local ones --------------------------------------
_remote: dict[tuple[Any, ...], RemoteEngine] = {}
_remote_lock = threading.Lock()


def get_remote_engine(
    base_url: str,
    model: str,
    *,
    api_key: str | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
) -> RemoteEngine:
    """The process-wide RemoteEngine for these settings (its connection pool is shared)."""
    retries = 2 if max_retries is None else max_retries
    key = (base_url, model, api_key, timeout, retries)
    with _remote_lock:
        engine = _remote.get(key)
        if engine is None:
            engine = _remote[key] = RemoteEngine(
                base_url, model, api_key=api_key, timeout=timeout, max_retries=retries
            )
    return engine
