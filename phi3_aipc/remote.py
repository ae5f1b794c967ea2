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
- Retries: connection failures and 429/500/502/503/504 (503 is also "model still loading") are retried up to
  ``max_retries`` times with exponential backoff, only before any text arrived; a stream cut off midway is an error.
- Timeouts: 10 s to connect; ``timeout`` (seconds) bounds each wait for data, else a read may wait as long as the
  server keeps the connection (queued behind other requests, a long prefill).

Needs httpx (``pip install 'phi3-aipc[serve]'``); nothing here loads a backend.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from phi3_aipc.errors import (
    BackendNotInstalledError,
    InvalidParameterError,
    Phi3AIPCError,
    UnsupportedFeatureError,
)
from phi3_aipc.families import detect_family
from phi3_aipc.messages import check_messages
from phi3_aipc.params import Constraint, FinishReason, GenerationParams, GenerationResult, Timings
from phi3_aipc.stops import StopStringCutter

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
CONNECT_TIMEOUT_S = 10.0
BACKOFF_S = 0.5


class RemoteError(Phi3AIPCError, ConnectionError):
    """The server could not be reached, refused the key, or failed (after retries)."""


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
        self.base_url = base_url.rstrip("/")
        self.model_name = model
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self._httpx = _import_httpx()
        self._client: Any = None
        self._client_lock = threading.Lock()

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
        limits = [t for t in (self.timeout, params.timeout_s) if t is not None]
        return self._httpx.Timeout(min(limits) if limits else None, connect=CONNECT_TIMEOUT_S)

    def _sync_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self._httpx.Client()
            return self._client

    def async_client(self) -> Any:
        # One per call: an AsyncClient belongs to the event loop it was made on, and callers bring their own loops.
        return self._httpx.AsyncClient()


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
        self.url, self.body = _request(engine.base_url, engine.model_name, prompt, params, constraint)
        self.chat = isinstance(self.body.get("messages"), list)
        self._cutter = StopStringCutter(params.stop)
        self._parts: list[str] = []
        self._started = time.perf_counter()
        self._deadline = None if params.timeout_s is None else time.monotonic() + params.timeout_s
        self._first_token_s: float | None = None
        self._finish: str | None = None
        self._server_stop: Any = None
        self._usage: dict[str, Any] | None = None
        self.stopped_by: FinishReason | None = None

    def out_of_time(self) -> bool:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self.stopped_by = "timeout"
            return True
        return False

    def read(self, data: str) -> tuple[str, bool]:
        """(text for the caller, whether to stop reading) for one SSE data line."""
        if data == "[DONE]":
            return self._release(), True
        event = json.loads(data)
        if "error" in event:
            raise _error_from(event, None)
        if event.get("usage"):
            self._usage = event["usage"]
        text = ""
        for choice in event.get("choices") or ():
            piece = (choice.get("delta") or {}).get("content") if self.chat else choice.get("text")
            if piece:
                if self._first_token_s is None:
                    self._first_token_s = time.perf_counter()
                text += self._cutter.feed(piece)
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
                self._server_stop = choice.get("stop_reason")
        if text:
            self._parts.append(text)
        # After a stop string, read on (dropping text) to [DONE]: the usage comes last, and the server, which was
        # sent the same stops, ends soon.
        return text, False

    def _release(self) -> str:
        rest = self._cutter.flush()
        if rest:
            self._parts.append(rest)
        return rest

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
        notes = () if self._usage else ("The server reported no usage: token counts are unknown (0).",)
        return GenerationResult(
            text=text,
            finish_reason=reason,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            timings=Timings(ttft_ms=ttft, generate_ms=(ended - self._started) * 1000),
            stop_string=stop_string,
            model=self.engine.model_name,
            device=self.engine.device,
            backend=self.engine.backend_name,
            notes=notes,
        )


class RemoteStream:
    """Text deltas of one remote generation; ``.result`` once it ends. Closing it closes the connection, which
    cancels the generation on a server that notices (``phi3-aipc serve`` does)."""

    def __init__(self, call: _Call, client: Any):
        self._call = call
        self._client = client
        self._lines: Iterator[str] | None = None
        self._response: Any = None
        self._finished = False
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._finished:
            raise StopIteration
        if self._lines is None:
            self._response = _open_sync(self._call, self._client)
            self._lines = self._response.iter_lines()
        try:
            for line in self._lines:
                if self._call.out_of_time():
                    break
                if not line.startswith("data:"):
                    continue
                text, stop = self._call.read(line[5:].strip())
                if stop:
                    self._end()
                    if text:
                        return text
                    raise StopIteration
                if text:
                    return text
        except Phi3AIPCError:
            self.close()
            raise
        except self._call.engine._httpx.HTTPError as exc:
            self.close()
            raise RemoteError(f"The connection to {self._call.url} failed mid-answer: {exc}") from exc
        last = self._call.read("[DONE]")[0]
        self._end()
        if last:
            return last
        raise StopIteration

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
        try:
            return await self._events.__anext__()
        except StopAsyncIteration:
            self._finished = True
            self.result = self._call.result()
            raise
        except BaseException:
            await self.aclose()
            raise

    async def _deltas(self) -> AsyncIterator[str]:
        call = self._call
        httpx = call.engine._httpx
        async with call.engine.async_client() as client:
            response = await _open_async(call, client)
            try:
                async for line in response.aiter_lines():
                    if call.out_of_time():
                        break
                    if not line.startswith("data:"):
                        continue
                    text, stop = call.read(line[5:].strip())
                    if text:
                        yield text
                    if stop:
                        return
                last = call.read("[DONE]")[0]
                if last:
                    yield last
            except httpx.HTTPError as exc:
                raise RemoteError(f"The connection to {call.url} failed mid-answer: {exc}") from exc
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
) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {
        "model": model,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": params.max_new_tokens,
        # Greedy unless sampling is asked for, as locally (an OpenAI server's own default temperature is 1).
        "temperature": (params.temperature or 1.0) if params.sampling else 0.0,
    }
    optional = {
        "top_p": params.top_p,
        "seed": params.seed,
        "top_k": params.top_k,  # vLLM's extension, also taken by phi3-aipc serve
        "repetition_penalty": params.repetition_penalty,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if params.stop:
        body["stop"] = list(params.stop)
    if params.ignore_eos:
        body["ignore_eos"] = True
    if constraint is not None:
        if constraint.kind != "json_schema":
            raise UnsupportedFeatureError(
                f"A remote server takes only a json_schema constraint (as response_format), not a {constraint.kind}."
            )
        schema = {"name": "output", "schema": json.loads(constraint.value), "strict": True}
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    if isinstance(prompt, str):
        if constraint is not None:
            raise UnsupportedFeatureError(
                "A raw prompt string cannot be constrained remotely; send messages."
            )
        if not prompt:
            raise InvalidParameterError("The prompt is an empty string; pass some text or chat messages.")
        return f"{base_url}/completions", {**body, "prompt": prompt}
    messages = [{"role": m["role"], "content": m.get("content") or ""} for m in check_messages(list(prompt))]
    return f"{base_url}/chat/completions", {**body, "messages": messages}


def _open_sync(call: _Call, client: Any) -> Any:
    httpx = call.engine._httpx
    for attempt in range(call.engine.max_retries + 1):
        last = attempt == call.engine.max_retries
        try:
            request = client.build_request(
                "POST",
                call.url,
                json=call.body,
                headers=call.engine.headers(),
                timeout=call.engine.http_timeout(call.params),
            )
            response = client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
            if last:
                raise _unreachable(call, exc) from exc
        else:
            if response.status_code < 400:
                return response
            response.read()
            if last or response.status_code not in RETRY_STATUSES:
                raise _error_from(_json_or_text(response), response.status_code)
            response.close()
        time.sleep(BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable")


async def _open_async(call: _Call, client: Any) -> Any:
    import asyncio

    httpx = call.engine._httpx
    for attempt in range(call.engine.max_retries + 1):
        last = attempt == call.engine.max_retries
        try:
            request = client.build_request(
                "POST",
                call.url,
                json=call.body,
                headers=call.engine.headers(),
                timeout=call.engine.http_timeout(call.params),
            )
            response = await client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
            if last:
                raise _unreachable(call, exc) from exc
        else:
            if response.status_code < 400:
                return response
            await response.aread()
            if last or response.status_code not in RETRY_STATUSES:
                raise _error_from(_json_or_text(response), response.status_code)
            await response.aclose()
        await asyncio.sleep(BACKOFF_S * 2**attempt)
    raise AssertionError("unreachable")


def _unreachable(call: _Call, exc: BaseException) -> RemoteError:
    return RemoteError(
        f"Cannot reach the server at {call.engine.base_url} after {call.engine.max_retries + 1} attempt(s) ({exc}). "
        "Is it running (`phi3-aipc serve`), and does base_url end with /v1?"
    )


def _json_or_text(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"error": {"message": response.text[:500]}}


def _error_from(body: Any, status: int | None) -> Phi3AIPCError:
    error = body.get("error") if isinstance(body, dict) else None
    message = (error.get("message") if isinstance(error, dict) else None) or str(body)[:500]
    where = f" (HTTP {status})" if status is not None else ""
    if status in (401, 403):
        return RemoteError(f"The server refused the API key{where}: {message} Pass api_key=...")
    if status == 404:
        return RemoteError(f"Not found{where}: {message} base_url must end with /v1.")
    if status is not None and 400 <= status < 500:
        return InvalidParameterError(f"The server refused the request{where}: {message}")
    return RemoteError(f"The server failed{where}: {message}")


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
