"""The server takes OpenAI ``image_url`` content parts with data URLs and sends them through the one chat turn to a
vision model; a web URL is a 400 (never fetched), and a text-only model refuses an image plainly."""

from __future__ import annotations

import base64
import importlib.util
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from phi3_aipc.testing.precision import LLM_F32

NEEDS = ("fastapi", "uvicorn", "httpx", "openai", "openvino_genai", "PIL")
pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in NEEDS), reason=f"needs {', '.join(NEEDS)}"
)
API_KEY = "test-key-images"
QUESTION = "What is in the picture?"


def data_url(seed: int) -> str:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (56, 84, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def serve(engine: Any, model_id: str) -> Iterator[Any]:
    import openai

    from phi3_aipc.server import BackgroundServer, Limits, ServerConfig, create_app

    config = ServerConfig(
        model_id=model_id, api_key=API_KEY, limits=Limits(max_tokens=64, default_max_tokens=8)
    )
    with BackgroundServer(create_app(engine, config)) as server:
        yield openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def vision(tiny_qwen2_vl_ov: Path) -> Iterator[tuple[Any, Any]]:
    from phi3_aipc import get_engine

    engine = get_engine(str(tiny_qwen2_vl_ov), "cpu", backend="openvino-vlm", options=LLM_F32)
    for client in serve(engine, "tiny-vl"):
        yield client, engine


@pytest.fixture(scope="module")
def text_only(tiny_qwen2_ov: Path) -> Iterator[Any]:
    from phi3_aipc import get_engine

    yield from serve(get_engine(str(tiny_qwen2_ov), "cpu", options=LLM_F32), "tiny-text")


def with_image(url: str) -> list[dict[str, Any]]:
    parts = [{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": url}}]
    return [{"role": "user", "content": parts}]


def test_an_image_part_answers_as_the_engine_does(vision: tuple[Any, Any]) -> None:
    from phi3_aipc.chat import ChatTurn
    from phi3_aipc.params import GenerationParams

    client, engine = vision
    answer = client.chat.completions.create(model="tiny-vl", messages=with_image(data_url(0)), max_tokens=8)
    expected = ChatTurn(
        [{"role": "user", "content": QUESTION, "images": [data_url(0)]}],
        params=GenerationParams(max_new_tokens=8),
    ).run(engine)
    assert answer.choices[0].message.content == expected.content
    assert answer.usage.prompt_tokens == expected.generation.prompt_tokens
    other = client.chat.completions.create(model="tiny-vl", messages=with_image(data_url(1)), max_tokens=8)
    assert other.choices[0].message.content != expected.content


def test_a_streamed_image_answer_equals_the_whole_one(vision: tuple[Any, Any]) -> None:
    client, _ = vision
    whole = client.chat.completions.create(model="tiny-vl", messages=with_image(data_url(0)), max_tokens=8)
    stream = client.chat.completions.create(
        model="tiny-vl", messages=with_image(data_url(0)), max_tokens=8, stream=True
    )
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert streamed == whole.choices[0].message.content


def test_a_web_url_is_a_400_never_fetched(vision: tuple[Any, Any]) -> None:
    import openai

    client, _ = vision
    with pytest.raises(openai.BadRequestError, match="not fetched"):
        client.chat.completions.create(
            model="tiny-vl", messages=with_image("https://example.com/cat.png"), max_tokens=8
        )
    with pytest.raises(openai.BadRequestError, match="could not be decoded|neither a data: URL"):
        client.chat.completions.create(model="tiny-vl", messages=with_image("data:image/png;base64,AAAA"))


def test_a_text_only_model_refuses_an_image(text_only: Any) -> None:
    import openai

    with pytest.raises(openai.BadRequestError, match="takes text only") as caught:
        text_only.chat.completions.create(model="tiny-text", messages=with_image(data_url(0)), max_tokens=8)
    assert caught.value.code == "unsupported"
    assert text_only.chat.completions.create(
        model="tiny-text", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    ).choices
