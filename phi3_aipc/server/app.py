"""The FastAPI app: OpenAI's chat and completion endpoints over one engine, loaded once at start-up.

- The model is chosen when the app is made, never by a request: a request's ``model`` is only echoed back by name.
- ``/health`` answers 503 ``{"status": "loading"}`` until the engine is ready, then 200 ``{"status": "ok"}``.
- Every error is OpenAI-shaped, ``{"error": {"message", "type", "param", "code"}}``: malformed JSON, unknown fields
  and bad values are 400, a body over the limit 413, a wrong or missing API key 401, a model still loading 503.
- A streaming client that goes away cancels its generation at the next token (its engine job is cancelled), so the
  engine serves the next request at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

from phi3_aipc.chat import TextDelta, TurnDone
from phi3_aipc.engine import Engine
from phi3_aipc.errors import Phi3AIPCError, PromptTooLongError, UnsupportedFeatureError
from phi3_aipc.server import mapping
from phi3_aipc.server.mapping import Limits, RequestError
from phi3_aipc.server.schemas import ChatCompletionRequest, CompletionRequest
from phi3_aipc.tools.spec import ToolCall

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
# How often the stderr progress line repeats while a model loads (a first NPU compile takes minutes).
PROGRESS_EVERY_S = 15.0


@dataclass
class ServerConfig:
    model_id: str
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    limits: Limits = field(default_factory=Limits)


class EngineSlot:
    """The engine, loaded on a background thread so /health can answer while it loads."""

    def __init__(self, load: Callable[[], Engine] | Engine, label: str):
        self._load = load
        self._label = label
        self.engine: Engine | None = load if isinstance(load, Engine) else None
        self.error: BaseException | None = None
        self._done = threading.Event()
        if self.engine is not None:
            self._done.set()

    def start(self) -> None:
        if not self._done.is_set():
            threading.Thread(target=self._run, name="phi3-aipc-serve-load", daemon=True).start()

    def _run(self) -> None:
        started = time.monotonic()
        print(f"phi3-aipc serve: loading {self._label}...", file=sys.stderr, flush=True)
        ticker = threading.Thread(target=self._tick, args=(started,), daemon=True)
        ticker.start()
        try:
            self.engine = self._load()  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - reported by /health and every request
            self.error = exc
            print(f"phi3-aipc serve: loading failed: {exc}", file=sys.stderr, flush=True)
        else:
            seconds = time.monotonic() - started
            engine = self.engine
            print(
                f"phi3-aipc serve: ready in {seconds:.1f} s: {engine.model_name} on {engine.device} "
                f"({engine.backend_name}).",
                file=sys.stderr,
                flush=True,
            )
        finally:
            self._done.set()

    def _tick(self, started: float) -> None:
        while not self._done.wait(PROGRESS_EVERY_S):
            print(
                f"phi3-aipc serve: still loading {self._label} ({time.monotonic() - started:.0f} s)...",
                file=sys.stderr,
                flush=True,
            )

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def require(self) -> Engine:
        if self.error is not None:
            raise RequestError(
                f"The model failed to load: {self.error}", code="model_load_failed", status=500
            )
        if self.engine is None:
            raise RequestError(
                "The model is still loading; retry shortly (GET /health says when it is ready).",
                code="model_loading",
                status=503,
            )
        return self.engine


def create_app(load: Callable[[], Engine] | Engine, config: ServerConfig) -> FastAPI:
    """An app over ``load`` (an Engine, or a function that loads one: it runs on a thread at start-up)."""
    slot = EngineSlot(load, config.model_id)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        slot.start()
        yield

    app = FastAPI(title="phi3-aipc", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.slot = slot
    app.state.config = config

    app.add_middleware(Guard, config=config)

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return error_response(RequestError(f"No route {request.method} {request.url.path}.", status=404))

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc: Exception) -> JSONResponse:
        return error_response(
            RequestError(f"Method {request.method} is not allowed on {request.url.path}.", status=405)
        )

    @app.get("/health")
    async def health() -> JSONResponse:
        if slot.error is not None:
            return JSONResponse({"status": "error", "error": str(slot.error)}, status_code=500)
        if slot.engine is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok", "model": config.model_id})

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        card = {"id": config.model_id, "object": "model", "created": 0, "owned_by": "phi3-aipc"}
        return JSONResponse({"object": "list", "data": [card]})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        try:
            body = await _parse(request, ChatCompletionRequest, config.max_body_bytes)
            turn = mapping.chat_turn(body, config.limits)
            engine = slot.require()
            if body.stream:
                include_usage = body.stream_options is not None and body.stream_options.include_usage
                return _sse(request, _chat_events(turn, engine, config.model_id, include_usage))
            result = await turn.arun(engine)
        except Phi3AIPCError as exc:
            return error_response(exc)
        return JSONResponse(mapping.chat_completion(result, mapping.new_id("chatcmpl"), config.model_id))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        try:
            body = await _parse(request, CompletionRequest, config.max_body_bytes)
            prompt = mapping.completion_prompt(body)
            params = mapping.generation_params(body, body.max_tokens, config.limits)
            engine = slot.require()
            if body.stream:
                include_usage = body.stream_options is not None and body.stream_options.include_usage
                return _sse(
                    request, _completion_events(engine, prompt, params, config.model_id, include_usage)
                )
            result = await engine.agenerate(prompt, params)
        except Phi3AIPCError as exc:
            return error_response(exc)
        return JSONResponse(mapping.completion(result, mapping.new_id("cmpl"), config.model_id))

    return app


class Guard:
    """Checks every HTTP request's API key and declared body size before any route reads it.

    Plain ASGI rather than FastAPI's ``@app.middleware``, which relays the receive channel and would hide a
    streaming client's disconnect from the route.
    """

    def __init__(self, app: Any, config: ServerConfig):
        self.app = app
        self.config = config

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            try:
                if scope["path"] != "/health":  # probes (a load balancer's, Kubernetes') carry no key
                    _check_api_key(request, self.config.api_key)
                _check_declared_size(request, self.config.max_body_bytes)
            except RequestError as exc:
                await error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


# -- errors ----------------------------------------------------------------------------------------------------------
def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    if isinstance(exc, RequestError):
        status, param, code = exc.status, exc.param, exc.code
    elif isinstance(exc, PromptTooLongError):
        status, param, code = 400, "messages", "context_length_exceeded"
    elif isinstance(exc, UnsupportedFeatureError):
        status, param, code = 400, None, "unsupported"
    elif isinstance(exc, ValueError) and isinstance(exc, Phi3AIPCError):  # InvalidParameterError and kin
        status, param, code = 400, None, None
    else:
        status, param, code = 500, None, None
    kind = {401: "authentication_error", 413: "invalid_request_error", 503: "server_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error"
    )
    return status, {"error": {"message": str(exc), "type": kind, "param": param, "code": code}}


def error_response(exc: BaseException) -> JSONResponse:
    status, body = error_body(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _check_api_key(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise RequestError(
            "Incorrect or missing API key: send it as 'Authorization: Bearer <key>' "
            "(the key given to `phi3-aipc serve --api-key` or PHI3_AIPC_API_KEY).",
            code="invalid_api_key",
            status=401,
        )


def _check_declared_size(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)


def _too_large(limit: int) -> RequestError:
    return RequestError(
        f"The request body is over this server's limit of {limit} bytes (`phi3-aipc serve --max-body-bytes`).",
        code="request_too_large",
        status=413,
    )


async def _parse(request: Request, model: type[BaseModel], limit: int) -> Any:
    """The body, read up to ``limit`` bytes (a chunked body declares no length), as ``model``; 400 otherwise."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    try:
        data = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise RequestError(f"The request body is not valid JSON: {exc}.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise RequestError("The request body must be a JSON object.", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            message = f"Unknown field '{where}': this server does not accept it."
        else:
            message = f"Invalid value for '{where}': {first['msg']}."
        raise RequestError(message, param=where or None) from None


# -- streaming -------------------------------------------------------------------------------------------------------
_END = object()


def _sse(request: Request, events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    return StreamingResponse(_watched(request, events), media_type="text/event-stream")


async def _watched(request: Request, events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """SSE lines of ``events``; the generation runs in its own task, cancelled the moment the client goes away.

    Waiting for the next write to fail would let a client that vanished hold the engine until its next token
    (minutes while a long prompt prefills); the disconnect watcher cancels at once.
    """
    queue: asyncio.Queue = asyncio.Queue()

    async def produce() -> None:
        try:
            async for event in events:
                await queue.put(event)
        except Phi3AIPCError as exc:
            await queue.put(error_body(exc)[1])
        except Exception as exc:  # noqa: BLE001 - a broken stream still ends with an error event, not silence
            await queue.put(error_body(exc)[1])
        finally:
            queue.put_nowait(_END)

    producer = asyncio.create_task(produce())
    watcher = asyncio.create_task(_wait_for_disconnect(request))
    watcher.add_done_callback(lambda _: producer.cancel())
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            yield f"data: {json.dumps(item, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        watcher.cancel()
        producer.cancel()
        with contextlib.suppress(BaseException):
            await producer


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _chat_events(
    turn: Any, engine: Engine, model: str, include_usage: bool
) -> AsyncIterator[dict[str, Any]]:
    completion_id, created = mapping.new_id("chatcmpl"), int(time.time())
    calls = 0
    yield mapping.chat_chunk(completion_id, model, created, {"role": "assistant", "content": ""})
    async for event in turn.astream(engine):
        if isinstance(event, TextDelta):
            delta: dict[str, Any] = {"content": event.text}
        elif isinstance(event, ToolCall):
            delta = {"tool_calls": [mapping.tool_call_out(event, calls)]}
            calls += 1
        elif isinstance(event, TurnDone):
            result = event.result
            yield mapping.chat_chunk(
                completion_id,
                model,
                created,
                {},
                finish_reason=mapping.finish_reason(result),
                stop_reason=result.generation.stop_string,
            )
            if include_usage:
                yield mapping.usage_chunk(completion_id, model, created, result.generation)
            return
        else:
            delta = {"invalid_tool_calls": [mapping.invalid_call_out(event)]}
        yield mapping.chat_chunk(completion_id, model, created, delta)


async def _completion_events(
    engine: Engine, prompt: str, params: Any, model: str, include_usage: bool
) -> AsyncIterator[dict[str, Any]]:
    completion_id, created = mapping.new_id("cmpl"), int(time.time())
    stream = engine.astream(prompt, params)
    try:
        async for delta in stream:
            yield mapping.completion_chunk(completion_id, model, created, delta)
    finally:
        await stream.aclose()
    result = stream.result
    if result is None:
        return
    final = mapping.completion(result, completion_id, model, text="", created=created)
    if not include_usage:
        del final["usage"]
    yield final
