"""The FastAPI app: OpenAI's chat and completion endpoints over one engine, loaded once at start-up.

- The model is chosen when the app is made, never by a request: a request's ``model`` must name it (its served
  name or one of its aliases, all listed by ``/v1/models``), or it is a 404 ``model_not_found``.
- ``/health`` answers 503 ``{"status": "loading"}`` until the engine is ready, then 200 ``{"status": "ok"}``.
- Every error is OpenAI-shaped, ``{"error": {"message", "type", "param", "code"}}``: malformed JSON, unknown fields
  and bad values are 400, a body over the limit 413, a wrong or missing API key 401, a model still loading 503,
  a Host or Origin refused by ``guard`` 403, a body that is not JSON 415, anything unexpected a JSON 500.
- A streamed request is planned and checked (window, constraint) before the status line goes out, so its request
  errors get their status (400) as a whole request's do; only what happens later arrives as an error event.
- A client that goes away, streaming or not, cancels its generation at the next token (its engine job is
  cancelled), so the engine serves the next request at once.
- Shutting down (Ctrl-C on ``phi3-aipc serve``) cancels every generation: a stream ends with an error event and
  ``[DONE]``, a whole request gets a 503, and the server exits within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

from phi3_aipc.chat import TextDelta, TurnDone
from phi3_aipc.engine import Engine
from phi3_aipc.errors import Phi3AIPCError, PromptTooLongError, UnsupportedFeatureError
from phi3_aipc.server import guard, mapping
from phi3_aipc.server.guard import Access
from phi3_aipc.server.mapping import Limits, RequestError
from phi3_aipc.server.schemas import ChatCompletionRequest, CompletionRequest
from phi3_aipc.tools.spec import ToolCall

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
# How often the stderr progress line repeats while a model loads (a first NPU compile takes minutes).
PROGRESS_EVERY_S = 15.0
#: The deepest nesting a request body may have (a real tool schema nests a few levels; thousands crash parsers).
MAX_BODY_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class ServerConfig:
    model_id: str
    api_key: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    limits: Limits = field(default_factory=Limits)
    #: Other names a request's ``model`` may give for the served model (its catalogue id, what the user passed).
    aliases: tuple[str, ...] = ()
    access: Access = field(default_factory=Access)

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.model_id, *self.aliases)))

    def check_model(self, requested: str | None) -> None:
        if requested is None or requested in self.model_names:
            return
        raise RequestError(
            f"The model {requested!r} does not exist on this server: it serves {self.model_id!r} "
            f"(also called {', '.join(repr(n) for n in self.model_names[1:]) or 'nothing else'}; GET /v1/models).",
            param="model",
            code="model_not_found",
            status=404,
        )


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
    closing = Closing()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        closing.bind()
        slot.start()
        yield
        closing.begin()

    app = FastAPI(title="phi3-aipc", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.slot = slot
    app.state.config = config
    app.state.closing = closing

    # Added last, so outermost: the Guard refuses a Host or Origin before CORS (for allowed origins) answers.
    if config.access.allow_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.access.allow_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(Guard, config=config)

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        return error_response(RequestError(f"No route {request.method} {request.url.path}.", status=404))

    @app.exception_handler(405)
    async def not_allowed(request: Request, exc: Exception) -> JSONResponse:
        return error_response(
            RequestError(f"Method {request.method} is not allowed on {request.url.path}.", status=405)
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette answers a bare "Internal Server Error" otherwise; a client needs the OpenAI shape.
        return error_response(exc)

    @app.get("/health")
    async def health() -> JSONResponse:
        if slot.error is not None:
            return JSONResponse({"status": "error", "error": str(slot.error)}, status_code=500)
        if slot.engine is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok", "model": config.model_id})

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        cards = [
            {"id": name, "object": "model", "created": 0, "owned_by": "phi3-aipc", "root": config.model_id}
            for name in config.model_names
        ]
        return JSONResponse({"object": "list", "data": cards})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        try:
            body = await _parse(request, ChatCompletionRequest, config.max_body_bytes)
            config.check_model(body.model)
            turn = mapping.chat_turn(body, config.limits)
            engine = slot.require()
            if body.stream:
                await asyncio.to_thread(_check_turn, turn, engine)
                include_usage = body.stream_options is not None and body.stream_options.include_usage
                events = await _started(request, closing, turn.astream(engine))
                return _sse(request, closing, _chat_events(events, config.model_id, include_usage))
            result = await _unless_gone(request, closing, turn.arun(engine))
        except Phi3AIPCError as exc:
            return error_response(exc)
        return Json(mapping.chat_completion(result, mapping.new_id("chatcmpl"), config.model_id))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        try:
            body = await _parse(request, CompletionRequest, config.max_body_bytes)
            config.check_model(body.model)
            prompt = mapping.completion_prompt(body)
            params = mapping.generation_params(body, body.max_tokens, config.limits)
            engine = slot.require()
            if body.stream:
                await asyncio.to_thread(engine.check_prompt_length, prompt)
                include_usage = body.stream_options is not None and body.stream_options.include_usage
                stream = engine.astream(prompt, params)
                return _sse(request, closing, _completion_events(stream, config.model_id, include_usage))
            result = await _unless_gone(request, closing, engine.agenerate(prompt, params))
        except Phi3AIPCError as exc:
            return error_response(exc)
        return Json(mapping.completion(result, mapping.new_id("cmpl"), config.model_id))

    return app


def _check_turn(turn: Any, engine: Engine) -> None:
    """Plan ``turn`` as its stream will, and check what would fail at its start: the prompt's length and the
    constraint (making the engine's stream checks it against the backend; the stream is never started)."""
    plan = turn.plan(engine)
    prompt = plan.render(engine)
    engine.check_prompt_length(prompt)
    engine.astream(prompt, plan.params, constraint=plan.constraint)


class Closing:
    """The server is shutting down: every running request is told at once (uvicorn would wait for them)."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def begin(self) -> None:
        """Safe from any thread (a signal handler's, a test's)."""
        if self._loop is None or self._event is None or self._loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing is left to stop
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self) -> None:
        if self._event is None:
            await asyncio.Event().wait()
        else:
            await self._event.wait()


SHUTTING_DOWN = RequestError(
    "The server is shutting down: the generation was stopped. Retry once it is back.",
    code="server_shutting_down",
    status=503,
)


class Guard:
    """Checks every HTTP request's Host, Origin, API key, declared body size and content type before any route
    reads it.

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
                self._check(request, scope)
            except RequestError as exc:
                await error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _check(self, request: Request, scope: dict[str, Any]) -> None:
        access = self.config.access
        access.check_host(request.headers.get("host"))
        access.check_origin(request.headers.get("origin"))
        if guard.is_preflight(scope):
            return  # an allowed origin's preflight: CORS answers it, and it carries no key
        if scope["path"] != "/health":  # probes (a load balancer's, Kubernetes') carry no key
            guard.check_api_key(request, self.config.api_key)
        if scope["method"] == "POST":
            guard.check_declared_size(request, self.config.max_body_bytes)
            guard.check_json_content_type(request)


# -- errors ----------------------------------------------------------------------------------------------------------
def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    message = str(exc)
    if isinstance(exc, RequestError):
        status, param, code = exc.status, exc.param, exc.code
    elif isinstance(exc, PromptTooLongError):
        status, param, code = 400, "messages", "context_length_exceeded"
        # Clients recognise an overflow by its words (the openai SDK shows only the message, and LangChain's
        # ChatOpenAI looks in it for "context_length_exceeded" or "prompt is too long").
        message = f"The prompt is too long (context_length_exceeded). {message}"
    elif isinstance(exc, UnsupportedFeatureError):
        status, param, code = 400, None, "unsupported"
    elif isinstance(exc, ValueError) and isinstance(exc, Phi3AIPCError):  # InvalidParameterError and kin
        status, param, code = 400, None, None
    else:
        status, param, code = 500, None, None
    kind = {401: "authentication_error", 413: "invalid_request_error", 503: "server_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error"
    )
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(exc: BaseException) -> JSONResponse:
    status, body = error_body(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Json(body, status_code=status, headers=headers)


def unicode_safe(text: str) -> str:
    """``text`` with lone UTF-16 surrogates (which UTF-8 cannot encode) as U+FFFD, so a body always encodes."""
    return _SURROGATE.sub("\ufffd", text)


class Json(JSONResponse):
    """A JSON response that always encodes: a lone surrogate in a model's text would fail Starlette's."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return unicode_safe(text).encode("utf-8")


async def _parse(request: Request, model: type[BaseModel], limit: int) -> Any:
    """The body, read up to ``limit`` bytes (a chunked body declares no length), as ``model``; 400 otherwise."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise guard.too_large(limit)
        chunks.append(chunk)
    try:
        data = json.loads(b"".join(chunks))
    except RecursionError:
        raise _too_deep() from None
    except ValueError as exc:
        raise RequestError(f"The request body is not valid JSON: {exc}.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise RequestError("The request body must be a JSON object.", code="invalid_json")
    _check_tree(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _check_tree(data: Any) -> None:
    """Refuse nesting deeper than MAX_BODY_DEPTH and text that is not Unicode (a lone surrogate escape)."""
    pending: list[tuple[Any, int, str]] = [(data, 1, "")]
    while pending:
        value, depth, where = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise RequestError(
                    f"'{where}' holds a lone UTF-16 surrogate escape (such as \\ud800), which is not text: send "
                    "valid Unicode.",
                    param=where or None,
                )
            continue
        items = (
            value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        )
        if items and depth > MAX_BODY_DEPTH:
            raise _too_deep()
        for key, item in items:
            pending.append((item, depth + 1, f"{where}.{key}" if where else str(key)))


def _too_deep() -> RequestError:
    return RequestError(
        f"The request body nests more than {MAX_BODY_DEPTH} levels deep; flatten it (a tool's parameters or a "
        f"response schema included).",
        code="invalid_json",
    )


def _invalid(exc: ValidationError) -> RequestError:
    """pydantic's first error, said with the client's field names (no union member tags like ``str``)."""
    errors = exc.errors()
    # With a union (content: str | list of parts), the error deepest into the value says what was wrong.
    first = max(errors, key=lambda e: len(_field_path(e["loc"])))
    path = _field_path(first["loc"])
    where = ".".join(str(part) for part in path)
    if first["type"] == "extra_forbidden":
        message = f"Unknown field '{where}': this server does not accept it."
    else:
        message = f"Invalid value for '{where}': {first['msg']}."
    return RequestError(message, param=where or None)


def _field_path(loc: tuple[Any, ...]) -> list[Any]:
    # pydantic puts a union member's tag in the location ('str', 'list[TextPart]', 'NamedToolChoice',
    # "literal['none','auto']"); the client's fields are snake_case names and list indexes.
    return [
        part
        for part in loc
        if isinstance(part, int) or (re.fullmatch(r"[a-z_]\w*", part) and part not in _TYPE_TAGS)
    ]


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "dict", "list"})


async def _unless_gone(request: Request, closing: Closing, work: Awaitable[Any]) -> Any:
    """Await ``work`` (a whole answer); cancel it, and so its generation, if the client leaves or the server
    shuts down first. Only streams watched for a disconnect before: a dropped whole request generated on."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_wait_for_disconnect(request))
    shut = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait((task, gone, shut), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        shut.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if gone.done() and not gone.cancelled():
        raise RequestError(
            "The client closed the connection before the answer.", code="client_closed", status=499
        )
    if task.cancelled():
        raise SHUTTING_DOWN
    return task.result()


# -- streaming -------------------------------------------------------------------------------------------------------
_END = object()


def _sse(request: Request, closing: Closing, events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    return StreamingResponse(_watched(request, closing, events), media_type="text/event-stream")


async def _watched(
    request: Request, closing: Closing, events: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[str]:
    """SSE lines of ``events``; the generation runs in its own task, cancelled the moment the client goes away,
    or, when the server shuts down, ended with an error event and ``[DONE]``.

    Waiting for the next write to fail would let a client that vanished hold the engine until its next token
    (minutes while a long prompt prefills); the disconnect watcher cancels at once.
    """
    queue: asyncio.Queue = asyncio.Queue()
    shutting_down = False

    async def produce() -> None:
        try:
            async for event in events:
                await queue.put(event)
        except Exception as exc:  # noqa: BLE001 - a broken stream still ends with an error event, not silence
            await queue.put(error_body(exc)[1])
        finally:
            if not shutting_down:  # (then end_on_shutdown ends the stream, after its error event)
                queue.put_nowait(_END)

    async def end_on_shutdown() -> None:
        nonlocal shutting_down
        await closing.wait()
        if producer.done():
            return
        shutting_down = True
        producer.cancel()
        with contextlib.suppress(BaseException):
            await producer  # the generation has stopped (the engine is free) before the last event goes out
        await queue.put(error_body(SHUTTING_DOWN)[1])
        queue.put_nowait(_END)

    producer = asyncio.create_task(produce())
    watcher = asyncio.create_task(_wait_for_disconnect(request))
    watcher.add_done_callback(lambda _: producer.cancel())
    shutdown = asyncio.create_task(end_on_shutdown())
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            yield f"data: {unicode_safe(json.dumps(item, ensure_ascii=False))}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        watcher.cancel()
        shutdown.cancel()
        producer.cancel()
        with contextlib.suppress(BaseException):
            await producer


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _started(request: Request, closing: Closing, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``stream`` once its first event has come: what fails at a generation's start (a constraint that the backend's
    grammar compiler refuses, which no check before it can see) is then a JSON error with its status, not a 200
    followed by an error event. The status line waits for the first token instead of going out at once."""
    try:
        first = await _unless_gone(request, closing, anext(stream, _END))
    except BaseException:
        with contextlib.suppress(BaseException):
            await stream.aclose()  # type: ignore[attr-defined]
        raise
    return _prepended(first, stream)


async def _prepended(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        if first is _END:
            return
        yield first
        async for item in rest:
            yield item
    finally:
        with contextlib.suppress(BaseException):
            await rest.aclose()  # type: ignore[attr-defined]


async def _chat_events(
    events: AsyncIterator[Any], model: str, include_usage: bool
) -> AsyncIterator[dict[str, Any]]:
    completion_id, created = mapping.new_id("chatcmpl"), int(time.time())
    calls = 0
    yield mapping.chat_chunk(completion_id, model, created, {"role": "assistant", "content": ""})
    async for event in events:
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


async def _completion_events(stream: Any, model: str, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    completion_id, created = mapping.new_id("cmpl"), int(time.time())
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
