"""Remote mode against peers that break the protocol (issue 23, items 16-18), and against `phi3-aipc serve`.

The misbehaving peers are stand-ins (tests/server/misbehaving_peer.py): what is under test is remote mode's side of a
broken exchange, and no real server breaks on demand. The normal path runs against `phi3-aipc serve` (the `served`
fixture) and, in benchmarks/remote_peers.py, against llama-cpp-python's and vLLM's servers.
"""

from __future__ import annotations

import asyncio
import json
import threading
import warnings
from typing import Any

import pytest
from misbehaving_peer import (
    SILENT_FOR_S,
    PeerRequest,
    chunk,
    event,
    head,
    json_reply,
    misbehaving_peer,
    models_card,
    not_found,
    send_endlessly,
    stream_of,
)
from pydantic import BaseModel

from phi3_aipc.errors import InvalidParameterError, ModelNotFoundError, PromptTooLongError
from phi3_aipc.params import Constraint, GenerationParams

pytest.importorskip("httpx")

ASK = [{"role": "user", "content": "Hi"}]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
}
ANSWER = '{"city": "Tokyo", "country": "Japan"}'


class City(BaseModel):
    """A city and its country."""

    city: str
    country: str


def remote(peer: Any, **kwargs: Any) -> Any:
    from phi3_aipc.remote import RemoteEngine

    return RemoteEngine(peer.base_url, "smollm2", **{"max_retries": 0, **kwargs})


def replying(reply: bytes, models: bytes | None = None) -> Any:
    """A peer behaviour: ``reply`` to every generation request, ``models`` (default 404) to GET /v1/models."""

    def behaviour(request: PeerRequest, send: Any) -> None:
        send((models or not_found()) if request.method == "GET" else reply)

    return behaviour


# -- 16: broken replies are errors, never answers ----------------------------------------------------------------------
BROKEN = {
    "cut-after-finish": (stream_of(["Hel", "lo"], done=False), r"\[DONE\]"),
    "cut-midway": (head("200 OK", "text/event-stream") + event(chunk("Hel")), r"\[DONE\]"),
    "html-page": (head("200 OK", "text/html") + b"<html><body>Sign in</body></html>", r"text/html"),
    "whole-json": (
        json_reply(
            "200 OK",
            {
                "object": "chat.completion",
                "choices": [{"message": {"content": "Hello"}, "finish_reason": "stop"}],
            },
        ),
        r"whole JSON body",
    ),
    "redirect": (
        head("302 Found", None, "Location: http://127.0.0.1:1/login\r\nContent-Length: 0\r\n"),
        r"302.*redirect",
    ),
    "event-not-json": (head("200 OK", "text/event-stream") + b"data: {not json\n\n", r"not JSON"),
    "event-not-an-object": (head("200 OK", "text/event-stream") + b"data: 5\n\n", r"not a JSON object"),
}


@pytest.mark.parametrize("name", BROKEN)
def test_a_broken_reply_is_a_protocol_error(name: str) -> None:
    from phi3_aipc.remote import RemoteProtocolError

    reply, says = BROKEN[name]
    with misbehaving_peer(replying(reply)) as peer:
        with pytest.raises(RemoteProtocolError, match=says):
            remote(peer).generate(ASK)
        with pytest.raises(RemoteProtocolError, match=says):
            asyncio.run(remote(peer).agenerate(ASK))


def test_a_cut_stream_is_an_error_through_both_adapters() -> None:
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from langchain_phi3_aipc import ChatPhi3AIPC
    from llama_index_phi3_aipc import Phi3AIPC
    from phi3_aipc.remote import RemoteProtocolError

    with misbehaving_peer(replying(stream_of(["Par", "is"], done=False))) as peer:
        with pytest.raises(RemoteProtocolError):
            ChatPhi3AIPC(base_url=peer.base_url, model="smollm2", max_retries=0).invoke("Capital of France?")
        with pytest.raises(RemoteProtocolError):
            Phi3AIPC(base_url=peer.base_url, model="smollm2", max_retries=0).complete("Capital of France?")


def test_a_whole_answer_still_reads_as_one() -> None:
    """The well-formed reply of the same peer: the checks above refuse breakage, not answers."""
    with misbehaving_peer(replying(stream_of(["Hel", "lo"]))) as peer:
        result = remote(peer).generate(ASK)
    assert (result.text, result.finish_reason, result.completion_tokens) == ("Hello", "stop", 2)


# -- 17: default timeouts, bounded replies -------------------------------------------------------------------------
def silent(request: PeerRequest, send: Any) -> None:
    if request.method == "GET":
        send(not_found())
        return
    threading.Event().wait(SILENT_FOR_S)  # never answers within any timeout the tests set


def test_the_default_read_timeout_is_finite() -> None:
    from phi3_aipc.remote import READ_TIMEOUT_S

    with misbehaving_peer(silent) as peer:
        timeout = remote(peer).http_timeout(GenerationParams())
    assert timeout.read == READ_TIMEOUT_S and timeout.connect is not None


def test_a_silent_server_times_out_with_a_typed_error() -> None:
    from phi3_aipc.remote import RemoteTimeoutError

    with misbehaving_peer(silent) as peer:
        with pytest.raises(RemoteTimeoutError, match="sent nothing for 1 s"):
            remote(peer, timeout=1).generate(ASK)
        with pytest.raises(RemoteTimeoutError):
            asyncio.run(remote(peer, timeout=1).agenerate(ASK))
        # A call's own deadline ends it as a timeout, as locally.
        assert remote(peer).generate(ASK, GenerationParams(timeout_s=1)).finish_reason == "timeout"


def endless(piece: bytes) -> Any:
    def behaviour(request: PeerRequest, send: Any) -> None:
        if request.method == "GET":
            send(not_found())
            return
        send_endlessly(send, piece)

    return behaviour


ENDLESS = {
    "events": (event(chunk("word ")), r"more than \d+ events for max_tokens=8"),
    "long-text-per-event": (event(chunk("x" * 4000)), r"more than \d+ characters"),
    "one-endless-line": (b"x" * 65536, r"line .* over 1048576 bytes"),
    "keep-alive-comments": (b": ping\n", r"over \d+ lines"),
}


@pytest.mark.parametrize("name", ENDLESS)
def test_an_endless_reply_is_cut_off(name: str) -> None:
    from phi3_aipc.remote import RemoteProtocolError

    piece, says = ENDLESS[name]
    with misbehaving_peer(endless(piece)) as peer:
        with pytest.raises(RemoteProtocolError, match=says):
            remote(peer).generate(ASK, GenerationParams(max_new_tokens=8))
        assert peer.disconnected.wait(30)  # the connection was closed, not left streaming
        with pytest.raises(RemoteProtocolError, match=says):
            asyncio.run(remote(peer).agenerate(ASK, GenerationParams(max_new_tokens=8)))


def test_llamaindex_timeout_does_not_let_an_endless_stream_grow() -> None:
    pytest.importorskip("llama_index.core")
    from llama_index_phi3_aipc import Phi3AIPC
    from phi3_aipc.remote import RemoteProtocolError

    with misbehaving_peer(endless(event(chunk("word ")))) as peer:
        llm = Phi3AIPC(base_url=peer.base_url, model="smollm2", timeout=3, max_new_tokens=16, max_retries=0)
        with pytest.raises(RemoteProtocolError, match="max_tokens=16"):
            llm.complete("Hi")


# -- 18: statuses mapped, no retry of a deterministic failure, response_format fallback, dialects ------------------
def error_body(message: str, code: str | None = None, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


STATUSES = {
    "context-overflow": (
        "400 Bad Request",
        error_body(
            "This model's maximum context length is 8192 tokens; you asked 9000.", "context_length_exceeded"
        ),
        PromptTooLongError,
    ),
    "invalid": ("400 Bad Request", error_body("temperature must be <= 2", None), InvalidParameterError),
    "model-not-found": (
        "404 Not Found",
        error_body("The model 'gpt-9' does not exist.", "model_not_found"),
        ModelNotFoundError,
    ),
    "rate-limited": ("429 Too Many Requests", error_body("Too many requests", None), "RemoteRateLimitError"),
    "server-error": (
        "500 Internal Server Error",
        error_body("boom", None, "server_error"),
        "RemoteServerError",
    ),
    "unavailable": (
        "503 Service Unavailable",
        error_body("loading", None, "server_error"),
        "RemoteServerError",
    ),
}


@pytest.mark.parametrize("name", STATUSES)
def test_http_statuses_map_to_typed_errors(name: str) -> None:
    import phi3_aipc.remote as remote_module

    status, body, expected = STATUSES[name]
    expected = getattr(remote_module, expected) if isinstance(expected, str) else expected
    with (
        misbehaving_peer(replying(json_reply(status, body))) as peer,
        pytest.raises(expected, match=status[:3]),
    ):
        remote(peer).generate(ASK)


def test_a_streamed_error_event_with_a_code_is_typed_too() -> None:
    """An older server reports a streamed request's error as 200 plus an error event: mapped by its code."""
    reply = head("200 OK", "text/event-stream") + event(error_body("too long", "context_length_exceeded"))
    with misbehaving_peer(replying(reply)) as peer, pytest.raises(PromptTooLongError, match="too long"):
        remote(peer).generate(ASK)


def test_a_validation_500_is_not_retried() -> None:
    from phi3_aipc.remote import RemoteServerError

    reply = json_reply("500 Internal Server Error", error_body("1 validation error for Request", None))
    with misbehaving_peer(replying(reply)) as peer:
        with pytest.raises(RemoteServerError):
            remote(peer, max_retries=2).generate(ASK)
        assert len(peer.completions) == 1


def test_a_429_is_retried_after_retry_after_then_typed() -> None:
    from phi3_aipc.remote import RemoteRateLimitError

    reply = json_reply("429 Too Many Requests", error_body("slow down", None), "Retry-After: 0\r\n")
    with misbehaving_peer(replying(reply)) as peer:
        with pytest.raises(RemoteRateLimitError, match="busy or rate-limits"):
            remote(peer, max_retries=1).generate(ASK)
        assert len(peer.completions) == 2


def llama_cpp_python_like(request: PeerRequest, send: Any) -> None:
    """llama-cpp-python's server on response_format (its types.py: type is 'text' or 'json_object'), unrecognised by
    owned_by so that the fallback itself is what runs."""
    if request.method == "GET":
        send(not_found())
        return
    form = (request.body.get("response_format") or {}).get("type", "text")
    if form not in ("text", "json_object"):
        message = "[{'type': 'literal_error', 'loc': ('response_format', 'type'), " + (
            "'msg': \"Input should be 'text' or 'json_object'\"}]"
        )
        send(json_reply("500 Internal Server Error", error_body(message, None, "internal_server_error")))
        return
    send(stream_of([ANSWER[:10], ANSWER[10:]]))


def test_a_server_that_refuses_json_schema_gets_json_object_and_the_answer_is_checked_here() -> None:
    with misbehaving_peer(llama_cpp_python_like) as peer:
        engine = remote(peer, max_retries=2)
        with pytest.warns(RuntimeWarning, match="refused response_format json_schema"):
            result = engine.generate(ASK, constraint=Constraint("json_schema", json.dumps(SCHEMA)))
        first, second = peer.completions  # one refusal, one answer: the refusal was not retried as it was
        assert first.body["response_format"]["type"] == "json_schema"
        assert second.body["response_format"] == {"type": "json_object", "schema": SCHEMA}
        assert result.text == ANSWER
        assert any("json_object" in note and "it matches" in note for note in result.notes)
        # The engine remembers what this server takes: the next call asks for json_object at once.
        engine.generate(ASK, constraint=Constraint("json_schema", json.dumps(SCHEMA)))
        assert peer.completions[-1].body["response_format"]["type"] == "json_object"
        assert len(peer.completions) == 3


def test_langchain_structured_output_through_the_fallback() -> None:
    pytest.importorskip("langchain_core")
    from langchain_phi3_aipc import ChatPhi3AIPC

    with misbehaving_peer(llama_cpp_python_like) as peer:
        llm = ChatPhi3AIPC(base_url=peer.base_url, model="smollm2", max_retries=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = llm.with_structured_output(City, include_raw=True).invoke("A city in Japan?")
    assert out["parsed"] == City(city="Tokyo", country="Japan")
    assert any(
        "checked here against the schema: it matches" in n for n in out["raw"].response_metadata["notes"]
    )


def test_llama_cpp_python_dialect_renames_and_notes_parameters() -> None:
    def behaviour(request: PeerRequest, send: Any) -> None:
        send(models_card("me") if request.method == "GET" else stream_of([ANSWER]))

    with misbehaving_peer(behaviour) as peer:
        params = GenerationParams(max_new_tokens=16, repetition_penalty=1.3, ignore_eos=True)
        with pytest.warns(RuntimeWarning, match="does not take ignore_eos"):
            result = remote(peer).generate(
                ASK, params, constraint=Constraint("json_schema", json.dumps(SCHEMA))
            )
        (sent,) = peer.completions
    assert sent.body["repeat_penalty"] == 1.3 and "repetition_penalty" not in sent.body
    assert "ignore_eos" not in sent.body
    assert sent.body["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert any("ignore_eos" in note for note in result.notes)


def test_an_unrecognised_server_is_warned_about_extension_parameters() -> None:
    with misbehaving_peer(replying(stream_of(["Hi"]))) as peer:
        with pytest.warns(RuntimeWarning, match="top_k are not OpenAI parameters"):
            result = remote(peer).generate(ASK, GenerationParams(max_new_tokens=4, top_k=5, temperature=0.5))
        (sent,) = peer.completions
    assert sent.body["top_k"] == 5 and any("top_k" in note for note in result.notes)


# -- the normal path and item 3's mapping, against phi3-aipc serve -------------------------------------------------
@pytest.mark.smollm2
def test_a_prompt_over_the_window_is_a_prompt_too_long_error(served: Any) -> None:
    from server_helpers import API_KEY

    from phi3_aipc.remote import RemoteEngine

    engine = RemoteEngine(served.base_url, "smollm2", api_key=API_KEY, max_retries=0)
    with pytest.raises(PromptTooLongError, match="context"):
        engine.generate([{"role": "user", "content": "hi " * 9000}], GenerationParams(max_new_tokens=4))
    # The engine is still usable, and phi3-aipc serve was recognised (no warning about its parameters).
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = engine.generate(ASK, GenerationParams(max_new_tokens=4, top_k=5, temperature=0.5, seed=1))
    assert result.completion_tokens > 0 and not any("top_k" in note for note in result.notes)


def test_a_server_that_does_not_report_its_stop_gets_the_stops_cut_here() -> None:
    """llama-cpp-python ends at a stop string with finish_reason "stop", as at EOS: it is not sent the stops, they
    are cut here at the exact character, and the stream is closed there (which ends its generation)."""

    def behaviour(request: PeerRequest, send: Any) -> None:
        send(models_card("me") if request.method == "GET" else stream_of(["Hello", " wor", "ld", "!"] * 50))

    with misbehaving_peer(behaviour) as peer:
        result = remote(peer).generate(ASK, GenerationParams(max_new_tokens=300, stop=("wor",)))
        (sent,) = peer.completions
    assert (result.text, result.finish_reason, result.stop_string) == ("Hello ", "stop_string", "wor")
    assert "stop" not in sent.body


def test_a_server_known_to_take_json_schema_does_not_fall_back_when_it_refuses_one() -> None:
    """vLLM refusing a schema (xgrammar cannot compile it) is the answer: no unconstrained retry behind it."""
    refusal = json_reply(
        "400 Bad Request", error_body("json_schema: the grammar backend cannot compile it", None)
    )

    def behaviour(request: PeerRequest, send: Any) -> None:
        send(models_card("vllm") if request.method == "GET" else refusal)

    with misbehaving_peer(behaviour) as peer:
        engine = remote(peer, max_retries=2)
        with pytest.raises(InvalidParameterError, match="cannot compile"):
            engine.generate(ASK, constraint=Constraint("json_schema", json.dumps(SCHEMA)))
        assert len(peer.completions) == 1 and engine.response_form is None
