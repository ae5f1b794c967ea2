"""Bad requests get OpenAI-style errors, {"error": {"message", "type", "param", "code"}}, with the right status."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from server_helpers import API_KEY, MAX_BODY_BYTES, MAX_TOKENS_LIMIT, Served

pytestmark = pytest.mark.smollm2

AUTH = {"Authorization": f"Bearer {API_KEY}"}
OK_BODY = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}


def post(served: Served, body: Any = None, *, path: str = "/chat/completions", **kwargs: Any) -> Any:
    import httpx

    headers = {**AUTH, **kwargs.pop("headers", {})}
    if body is not None:
        kwargs["json"] = body
    return httpx.post(f"{served.base_url}{path}", headers=headers, timeout=60, **kwargs)


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_the_well_formed_request_passes(served: Served) -> None:
    assert post(served, OK_BODY).status_code == 200  # so the failures below are about what each one changes


def test_malformed_json(served: Served) -> None:
    error = error_of(
        post(served, content=b'{"messages": [', headers={"Content-Type": "application/json"}), 400
    )
    assert error["code"] == "invalid_json" and error["type"] == "invalid_request_error"


def test_a_body_that_is_not_an_object(served: Served) -> None:
    assert "JSON object" in error_of(post(served, [1, 2]), 400)["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**OK_BODY, "bogus": 1}, "bogus"),
        ({**OK_BODY, "messages": [{"role": "user", "content": "Hi", "colour": "red"}]}, "messages.0.colour"),
        (
            {**OK_BODY, "response_format": {"type": "json_schema", "json_schema": {"schema": {}, "x": 1}}},
            None,
        ),
    ],
)
def test_unknown_fields_are_refused_not_ignored(
    served: Served, body: dict[str, Any], param: str | None
) -> None:
    error = error_of(post(served, body), 400)
    assert "Unknown field" in error["message"]
    if param is not None:
        assert error["param"] == param


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"temperature": -1}, "temperature"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "Hi"}]}, "messages.0.role"),
        ({"n": 2}, "n=1"),
        ({"tool_choice": "required"}, "tool"),
        ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ],
)
def test_bad_values(served: Served, change: dict[str, Any], words: str) -> None:
    error = error_of(post(served, {**OK_BODY, **change}), 400)
    assert words in f"{error['message']} {error['param']}"


def test_max_tokens_over_the_limit(served: Served) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        error = error_of(post(served, {**OK_BODY, field: MAX_TOKENS_LIMIT + 1}), 400)
        assert error["code"] == "max_tokens_over_limit" and str(MAX_TOKENS_LIMIT) in error["message"]


def test_a_prompt_over_the_context_window(served: Served) -> None:
    long = {**OK_BODY, "messages": [{"role": "user", "content": "word " * 9000}]}
    error = error_of(post(served, long), 400)
    assert error["code"] == "context_length_exceeded"


def test_oversized_body_declared_and_chunked(served: Served) -> None:
    big = {**OK_BODY, "messages": [{"role": "user", "content": "x" * MAX_BODY_BYTES}]}
    assert error_of(post(served, big), 413)["code"] == "request_too_large"

    def chunks() -> Any:  # no Content-Length: the server must count as it reads
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            yield b" " * 1024

    chunked = post(served, content=chunks(), headers={"Content-Type": "application/json"})
    assert error_of(chunked, 413)["code"] == "request_too_large"


@pytest.mark.parametrize(
    "headers", [{"Authorization": "Bearer wrong"}, {"Authorization": ""}, {"Authorization": API_KEY}]
)
def test_bad_or_missing_api_key(served: Served, headers: dict[str, str]) -> None:
    response = post(served, OK_BODY, headers=headers)
    error = error_of(response, 401)
    assert error["code"] == "invalid_api_key" and response.headers["www-authenticate"] == "Bearer"
    import httpx

    assert httpx.get(f"{served.base_url}/models", headers=headers).status_code == 401
    assert httpx.get(f"{served.root}/health").status_code == 200  # probes need no key


def test_openai_client_raises_its_own_errors(served: Served) -> None:
    import openai

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served.base_url, api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        served.openai().chat.completions.create(
            model="smollm2", messages=OK_BODY["messages"], max_tokens=10**6
        )


def test_unknown_route_and_method(served: Served) -> None:
    import httpx

    assert error_of(httpx.get(f"{served.base_url}/nothing", headers=AUTH), 404)
    assert error_of(httpx.get(f"{served.base_url}/chat/completions", headers=AUTH), 405)


def test_loading_answers_503_until_the_engine_is_ready(served: Served) -> None:
    import httpx

    from phi3_aipc.server import BackgroundServer, ServerConfig, create_app

    release = threading.Event()

    def load() -> Any:
        release.wait(30)
        return served.engine

    with BackgroundServer(create_app(load, ServerConfig(model_id="smollm2"))) as server:
        root = server.base_url.removesuffix("/v1")
        assert httpx.get(f"{root}/health").json() == {"status": "loading"}
        busy = httpx.post(f"{server.base_url}/chat/completions", json=OK_BODY, timeout=30)
        assert error_of(busy, 503)["code"] == "model_loading"
        release.set()
        for _ in range(200):
            if httpx.get(f"{root}/health").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert httpx.post(f"{server.base_url}/chat/completions", json=OK_BODY, timeout=60).status_code == 200


def test_a_failed_load_is_reported(served: Served) -> None:
    import httpx

    from phi3_aipc.errors import ModelNotFoundError
    from phi3_aipc.server import BackgroundServer, ServerConfig, create_app

    def load() -> Any:
        raise ModelNotFoundError("no such model: nowhere/none")

    with BackgroundServer(create_app(load, ServerConfig(model_id="smollm2"))) as server:
        root = server.base_url.removesuffix("/v1")
        for _ in range(200):
            health = httpx.get(f"{root}/health")
            if health.status_code != 503:
                break
            threading.Event().wait(0.05)
        assert health.status_code == 500 and "nowhere/none" in health.json()["error"]
        failed = httpx.post(f"{server.base_url}/chat/completions", json=OK_BODY, timeout=30)
        assert "nowhere/none" in error_of(failed, 500)["message"]
