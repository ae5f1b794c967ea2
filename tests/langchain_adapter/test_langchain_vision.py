"""Images from LangChain: standard image blocks and OpenAI image_url parts reach a vision model through the one chat
turn; web URLs are refused offline; a text-only model refuses images. The langchain-tests standard image tests
(``test_image_inputs``, ``test_image_tool_message``) run here on the tiny Qwen2-VL instead of being skipped."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("openvino_genai")
pytest.importorskip("langchain_tests")
PIL_Image = pytest.importorskip("PIL.Image")

from langchain_core.messages import HumanMessage  # noqa: E402
from langchain_tests.integration_tests import ChatModelIntegrationTests  # noqa: E402

from langchain_phi3_aipc import ChatPhi3AIPC  # noqa: E402
from phi3_aipc.errors import InvalidImageError, UnsupportedFeatureError  # noqa: E402
from phi3_aipc.testing.precision import LLM_F32  # noqa: E402

#: The picture the standard image tests download from GitHub; no network here, so a local PNG answers that URL.
STANDARD_IMAGE_URL = "https://raw.githubusercontent.com/langchain-ai/docs/"


def png_b64(seed: int = 0, height: int = 56, width: int = 84) -> str:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PIL_Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def vision_model(path: Path, **extra: Any) -> ChatPhi3AIPC:
    return ChatPhi3AIPC(
        model=str(path), device="cpu", backend="openvino-vlm", options=dict(LLM_F32), max_tokens=8, **extra
    )


def ask(text: str, *blocks: dict[str, Any]) -> list[HumanMessage]:
    return [HumanMessage(content=[{"type": "text", "text": text}, *blocks])]


def test_standard_and_openai_blocks_give_the_same_answer(tiny_qwen2_vl_ov: Path) -> None:
    model = vision_model(tiny_qwen2_vl_ov)
    data = png_b64(0)
    standard = model.invoke(ask("Describe it.", {"type": "image", "base64": data, "mime_type": "image/png"}))
    openai = model.invoke(
        ask("Describe it.", {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}})
    )
    other = model.invoke(
        ask("Describe it.", {"type": "image", "base64": png_b64(1), "mime_type": "image/png"})
    )
    assert standard.content == openai.content != other.content
    assert (
        standard.usage_metadata["input_tokens"] > model.invoke("Describe it.").usage_metadata["input_tokens"]
    )


def test_a_web_url_is_refused_offline(tiny_qwen2_vl_ov: Path) -> None:
    model = vision_model(tiny_qwen2_vl_ov)
    with pytest.raises(InvalidImageError, match="not fetched.*offline"):
        model.invoke(ask("Describe it.", {"type": "image", "url": "https://example.com/cat.png"}))


def test_a_text_only_model_refuses_an_image(tiny_qwen2_ov: Path) -> None:
    model = ChatPhi3AIPC(model=str(tiny_qwen2_ov), device="cpu", max_tokens=8)
    with pytest.raises(UnsupportedFeatureError, match="takes text only"):
        model.invoke(ask("Describe it.", {"type": "image", "base64": png_b64(), "mime_type": "image/png"}))


@pytest.fixture
def offline_image_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test double for the network: the standard tests' httpx.get of their GitHub image returns a local PNG."""
    import httpx

    def local_png(url: str, **kwargs: Any) -> httpx.Response:
        assert url.startswith(STANDARD_IMAGE_URL), f"unexpected download: {url}"
        return httpx.Response(200, content=base64.b64decode(png_b64(2, 112, 112)))

    monkeypatch.setattr(httpx, "get", local_png)


class TestVisionStandardImageTests:
    """The standard suite's own image tests, on the tiny Qwen2-VL. Only they run: the other standard tests judge
    answers, which a random-weight model cannot give (they run on SmolLM2 in test_langchain_standard)."""

    supports_image_inputs = True
    supports_image_tool_message = True
    # A URL block is refused offline (never fetched): the suite's URL case does not apply.
    supports_image_urls = False

    @pytest.fixture
    def model(self, tiny_qwen2_vl_ov: Path) -> ChatPhi3AIPC:
        return vision_model(tiny_qwen2_vl_ov)

    def test_image_inputs(self, model: ChatPhi3AIPC, offline_image_download: None) -> None:
        ChatModelIntegrationTests.test_image_inputs(self, model)  # type: ignore[arg-type]

    def test_image_tool_message(self, model: ChatPhi3AIPC, offline_image_download: None) -> None:
        ChatModelIntegrationTests.test_image_tool_message(self, model)  # type: ignore[arg-type]
