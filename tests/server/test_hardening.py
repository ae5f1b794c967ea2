"""The server's round-3 findings (issue 23, items 1-3, 5, 6, 8), each against the real SmolLM2 engine over HTTP.

Item 7 (Ctrl-C on `phi3-aipc serve`) needs a process of its own: tests/server/test_cli_serve.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from server_helpers import API_KEY, Served

pytestmark = pytest.mark.smollm2

AUTH = {"Authorization": f"Bearer {API_KEY}"}
HI = [{"role": "user", "content": "Hi"}]
OK_BODY = {"model": "smollm2", "messages": HI, "max_tokens": 4}
LONG = 200


def post(base_url: str, body: Any = None, **kwargs: Any) -> Any:
    import httpx

    headers = {**AUTH, **kwargs.pop("headers", {})}
    if body is not None:
        kwargs["json"] = body
    return httpx.post(f"{base_url}/chat/completions", headers=headers, timeout=120, **kwargs)


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.fixture
def generating(served: Served, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[int]]:
    """(set once the real backend's first delta arrives, the token count of each generation that ended)."""
    served.engine.wait_for_warm_up()  # a warm-up still running would be counted as a request
    backend = served.engine.backend
    real = backend.generate
    started = threading.Event()
    counts: list[int] = []

    def generate(prompt: str, params: Any, on_text: Any, constraint: Any = None) -> Any:
        def relay(delta: str) -> bool:
            started.set()
            return on_text(delta)

        output = real(prompt, params, relay, constraint)
        counts.append(output.completion_tokens)
        return output

    monkeypatch.setattr(backend, "generate", generate)
    return started, counts


@pytest.fixture(scope="module")
def keyless(served: Served) -> Iterator[str]:
    """The default a user gets: no API key, loopback only (the same engine)."""
    from phi3_aipc.server import BackgroundServer, ServerConfig, create_app

    with BackgroundServer(create_app(served.engine, ServerConfig(model_id="smollm2"))) as server:
        yield server.base_url


# -- item 1: a whole (non-streamed) request stops generating when its client goes away -------------------------------
def test_a_whole_request_whose_client_leaves_stops_generating(
    served: Served, generating: tuple[threading.Event, list[int]]
) -> None:
    started, counts = generating
    body = json.dumps({**OK_BODY, "max_tokens": LONG, "ignore_eos": True}).encode()
    port = int(served.base_url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {API_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert started.wait(120)  # generating; now the client leaves without reading
    deadline = time.monotonic() + 120  # a bound on a hang, not a timed assertion
    while not counts and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counts and counts[0] < LONG  # stopped at the next token, not run to max_tokens
    after = post(served.base_url, {**OK_BODY, "ignore_eos": True})
    assert after.status_code == 200 and after.json()["usage"]["completion_tokens"] == 4


# -- item 2: a web page cannot use the keyless loopback server -------------------------------------------------------
def test_a_cross_site_simple_post_is_refused(keyless: str) -> None:
    response = post(
        keyless,
        content=json.dumps(OK_BODY).encode(),
        headers={"Content-Type": "text/plain", "Origin": "https://evil.example"},
    )
    assert error_of(response, 403)["code"] == "origin_not_allowed"
    assert "--allow-origin https://evil.example" in response.json()["error"]["message"]


def test_a_dns_rebinding_host_is_refused(keyless: str) -> None:
    port = keyless.rsplit(":", 1)[1].split("/")[0]
    response = post(keyless, OK_BODY, headers={"Host": f"rebind.evil.example:{port}"})
    error = error_of(response, 403)
    assert error["code"] == "host_not_allowed" and "--allow-host rebind.evil.example" in error["message"]


def test_a_body_that_is_not_json_typed_is_refused(keyless: str) -> None:
    response = post(keyless, content=json.dumps(OK_BODY).encode(), headers={"Content-Type": "text/plain"})
    assert error_of(response, 415)["code"] == "unsupported_media_type"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "app.localhost", "[::1]"])
def test_loopback_names_are_answered(keyless: str, host: str) -> None:
    port = keyless.rsplit(":", 1)[1].split("/")[0]
    assert post(keyless, OK_BODY, headers={"Host": f"{host}:{port}"}).status_code == 200


def test_allowed_hosts_and_origins_are_answered(served: Served) -> None:
    import httpx

    from phi3_aipc.server import Access, BackgroundServer, ServerConfig, create_app

    access = Access(allow_hosts=("llm.lan",), allow_origins=("http://localhost:3000",))
    app = create_app(served.engine, ServerConfig(model_id="smollm2", access=access))
    with BackgroundServer(app) as server:
        origin = {"Origin": "http://localhost:3000"}
        answer = post(server.base_url, OK_BODY, headers=origin)
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == origin["Origin"]
        preflight = httpx.options(
            f"{server.base_url}/chat/completions",
            headers={**origin, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200 and "POST" in preflight.headers["access-control-allow-methods"]
        other = post(server.base_url, OK_BODY, headers={"Origin": "http://localhost:4000"})
        assert error_of(other, 403)["code"] == "origin_not_allowed"
        assert post(server.base_url, OK_BODY, headers={"Host": "llm.lan"}).status_code == 200


# -- item 3: a streamed request's request errors have their status ---------------------------------------------------
OVER_WINDOW = [{"role": "user", "content": "word " * 9000}]


def test_a_streamed_prompt_over_the_window_is_a_400(served: Served) -> None:
    import httpx
    import openai

    body = {**OK_BODY, "messages": OVER_WINDOW, "stream": True}
    with httpx.stream("POST", f"{served.base_url}/chat/completions", json=body, headers=AUTH) as response:
        response.read()
    assert error_of(response, 400)["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="context window"):
        served.openai().chat.completions.create(model="smollm2", messages=OVER_WINDOW, stream=True)
    completion = {"model": "smollm2", "prompt": "word " * 9000, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{served.base_url}/completions", json=completion, headers=AUTH) as response:
        response.read()
    assert error_of(response, 400)["code"] == "context_length_exceeded"


def test_a_streamed_schema_the_grammar_refuses_is_a_json_error_and_streams_go_on(served: Served) -> None:
    """A schema xgrammar refuses only while compiling it, as the generation starts: the status line waits for the
    stream's first event, so the client gets the error's status and JSON body instead of a 200 and an error event."""
    import httpx

    refused = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "required": ["a", "b"],
        "maxProperties": 1,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "r", "schema": refused}}
    body = {**OK_BODY, "stream": True, "response_format": response_format}
    with httpx.stream("POST", f"{served.base_url}/chat/completions", json=body, headers=AUTH) as response:
        response.read()
    assert error_of(response, 400)["message"]
    ok = {**OK_BODY, "stream": True}
    with httpx.stream("POST", f"{served.base_url}/chat/completions", json=ok, headers=AUTH) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert response.status_code == 200 and lines[-1] == "data: [DONE]" and len(lines) > 2


def test_remote_mode_reports_the_window_as_the_in_process_error(served: Served) -> None:
    """Remote mode raises what the in-process engine raises for an over-long prompt, not a connection error."""
    pytest.importorskip("langchain_core")
    from langchain_phi3_aipc import ChatPhi3AIPC
    from phi3_aipc.errors import PromptTooLongError

    remote = ChatPhi3AIPC(base_url=served.base_url, api_key=API_KEY, model="smollm2", max_tokens=4)
    with pytest.raises(PromptTooLongError, match="context window"):
        remote.invoke(OVER_WINDOW[0]["content"])


# -- item 5: a request's model must be the served one ----------------------------------------------------------------
def test_an_unknown_model_is_a_404_and_aliases_are_listed(served: Served) -> None:
    import httpx
    import openai

    from phi3_aipc.cli.serve import model_aliases
    from phi3_aipc.server import BackgroundServer, ServerConfig, create_app

    error = error_of(post(served.base_url, {**OK_BODY, "model": "gpt-4o"}), 404)
    assert error["code"] == "model_not_found" and error["param"] == "model" and "smollm2" in error["message"]
    with pytest.raises(openai.NotFoundError):
        served.openai().chat.completions.create(model="gpt-4o", messages=HI, stream=True)

    aliases = model_aliases("smollm2")
    assert aliases[0] == "smollm2" and "smollm2-135m-instruct" in aliases
    config = ServerConfig(model_id="my-model", aliases=aliases)
    with BackgroundServer(create_app(served.engine, config)) as server:
        listed = [m["id"] for m in httpx.get(f"{server.base_url}/models").json()["data"]]
        assert listed == ["my-model", *aliases]
        for name in listed:
            assert post(server.base_url, {**OK_BODY, "model": name}).status_code == 200


# -- item 6: OpenAI's nullable fields are accepted; errors name the client's fields ----------------------------------
def test_an_assistant_message_from_model_dump_is_accepted(served: Served) -> None:
    client = served.openai()
    first = client.chat.completions.create(model="smollm2", messages=HI, max_tokens=4)
    message = first.choices[0].message.model_dump()
    assert {"annotations", "audio", "function_call"} <= set(message)  # nulls, as the SDK sends them back
    again = [*HI, message, {"role": "user", "content": "And?"}]
    answer = client.chat.completions.create(model="smollm2", messages=again, max_tokens=4)
    assert answer.choices[0].message.content is not None


@pytest.mark.parametrize(
    ("change", "param", "words"),
    [
        ({"max_tokens": 0}, "max_tokens", "max_tokens is 0"),
        ({"max_completion_tokens": 0}, "max_completion_tokens", "max_completion_tokens is 0"),
        ({"temperature": -1}, "temperature", "temperature"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}
                ]
            },
            "messages.0.content",
            "'input_audio'",
        ),
        (
            {"messages": [{"role": "assistant", "content": "a", "audio": {"id": "x"}}]},
            "messages.0",
            "'audio'",
        ),
        ({"logit_bias": {"1": 5}}, None, "'logit_bias' is not supported"),
    ],
)
def test_errors_name_the_field_the_client_sent(
    served: Served, change: dict[str, Any], param: str | None, words: str
) -> None:
    error = error_of(post(served.base_url, {**OK_BODY, **change}), 400)
    assert words in error["message"] and "max_new_tokens" not in error["message"]
    assert error["param"] == param and ".str" not in str(error["param"])


def test_null_request_fields_of_openais_schema_are_accepted(served: Served) -> None:
    nulls = {
        "logit_bias": None,
        "functions": None,
        "function_call": None,
        "audio": None,
        "top_logprobs": None,
    }
    assert post(served.base_url, {**OK_BODY, **nulls}).status_code == 200
    assert (
        "Unknown field 'colour'"
        in error_of(post(served.base_url, {**OK_BODY, "colour": None}), 400)["message"]
    )


# -- item 8: every error is an OpenAI-style JSON body ----------------------------------------------------------------
def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


DEEP_TEXT = '{"a":' * 10_000 + '"leaf"' + "}" * 10_000  # too deep for json.dumps to write


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(OK_BODY)[:-1] + ', "metadata": ' + DEEP_TEXT + "}",
        json.dumps(
            {
                **OK_BODY,
                "tools": [{"type": "function", "function": {"name": "deep", "parameters": _nested(300)}}],
                "tool_choice": "required",
            }
        ),
        # json.dumps escapes the lone surrogate as \ud800, which is valid JSON.
        json.dumps({**OK_BODY, "messages": [{"role": "user", "content": "\ud800 lone"}]}),
    ],
    ids=["10000-deep-body", "300-deep-tool-schema", "lone-surrogate-in-content"],
)
def test_bodies_that_break_parsers_get_a_json_400(served: Served, text: str) -> None:
    response = post(served.base_url, content=text.encode(), headers={"Content-Type": "application/json"})
    assert error_of(response, 400)["message"]


def test_a_lone_surrogate_in_the_output_and_an_unexpected_failure_stay_json(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in backend call (named so): a real model's text cannot be made to hold a lone surrogate on demand."""
    import httpx

    served.engine.wait_for_warm_up()  # a warm-up still running would be counted as a request
    backend = served.engine.backend
    real = backend.generate

    def generate_writing_a_lone_surrogate(
        prompt: str, params: Any, on_text: Any, constraint: Any = None
    ) -> Any:
        output = real(prompt, params, lambda delta: on_text(delta + "\udc80"), constraint)
        return output

    monkeypatch.setattr(backend, "generate", generate_writing_a_lone_surrogate)
    whole = post(served.base_url, OK_BODY)
    assert whole.status_code == 200 and "\ufffd" in whole.json()["choices"][0]["message"]["content"]
    with httpx.stream(
        "POST", f"{served.base_url}/chat/completions", json={**OK_BODY, "stream": True}, headers=AUTH
    ) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]" and any("\\ufffd" in line or "\ufffd" in line for line in lines)

    def generate_failing(prompt: str, params: Any, on_text: Any, constraint: Any = None) -> Any:
        raise RuntimeError("a backend failure nobody expected")

    monkeypatch.setattr(backend, "generate", generate_failing)
    error = error_of(post(served.base_url, OK_BODY), 500)
    assert "nobody expected" in error["message"] and error["type"] == "server_error"


@pytest.mark.parametrize(
    ("bound", "host", "allowed"),
    [
        ("127.0.0.1", "127.0.0.1:8000", True),
        ("127.0.0.1", "localhost:8000", True),
        ("127.0.0.1", "[::1]:8000", True),
        ("127.0.0.1", "rebind.evil.example:8000", False),
        ("127.0.0.1", "192.168.1.5:8000", False),
        ("0.0.0.0", "192.168.1.5:8000", True),  # bound to every interface: any address is its own origin
        ("0.0.0.0", "rebind.evil.example", False),
        ("192.168.1.5", "192.168.1.5", True),
        ("llm.lan", "LLM.lan:8000", True),
    ],
)
def test_which_hosts_the_guard_answers(stack: None, bound: str, host: str, allowed: bool) -> None:
    from phi3_aipc.errors import InvalidParameterError
    from phi3_aipc.server import Access

    access = Access(bound=bound)
    if allowed:
        access.check_host(host)
    else:
        with pytest.raises(InvalidParameterError, match="--allow-host"):
            access.check_host(host)
        Access(bound=bound, allow_hosts=(host.rsplit(":", 1)[0],)).check_host(host)  # unless allowed
