"""Images from LlamaIndex: ImageBlocks in ChatMessage.blocks reach a vision model through the one chat turn, the
metadata says whether the model takes images, web URLs are refused offline, and a text-only model refuses images."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino_genai")
pytest.importorskip("llama_index.core")
PIL_Image = pytest.importorskip("PIL.Image")

from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock  # noqa: E402

from llama_index_phi3_aipc import Phi3AIPC  # noqa: E402
from phi3_aipc.errors import InvalidImageError, UnsupportedFeatureError  # noqa: E402
from phi3_aipc.testing.precision import LLM_F32  # noqa: E402


def png(seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (56, 84, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PIL_Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def vision_llm(path: Path) -> Phi3AIPC:
    return Phi3AIPC(
        model=str(path), device="cpu", backend="openvino-vlm", options=dict(LLM_F32), max_new_tokens=8
    )


def ask(image: ImageBlock) -> list[ChatMessage]:
    return [ChatMessage(role="user", blocks=[TextBlock(text="Describe it."), image])]


def test_metadata_says_whether_the_model_takes_images(tiny_qwen2_vl_ov: Path, tiny_qwen2_ov: Path) -> None:
    assert vision_llm(tiny_qwen2_vl_ov).metadata.takes_images is True
    assert Phi3AIPC(model=str(tiny_qwen2_ov), device="cpu").metadata.takes_images is False


def test_image_bytes_a_file_and_a_data_url_give_the_same_answer(
    tiny_qwen2_vl_ov: Path, tmp_path: Path
) -> None:
    llm = vision_llm(tiny_qwen2_vl_ov)
    (tmp_path / "picture.png").write_bytes(png(0))
    data_url = "data:image/png;base64," + base64.b64encode(png(0)).decode()
    answers = {
        str(llm.chat(ask(block)).message.content)
        for block in (
            ImageBlock(image=png(0)),
            ImageBlock(path=tmp_path / "picture.png"),
            ImageBlock(url=data_url),
        )
    }
    assert len(answers) == 1
    assert llm.chat(ask(ImageBlock(image=png(1)))).message.content not in answers


def test_streamed_chat_equals_the_whole_answer(tiny_qwen2_vl_ov: Path) -> None:
    llm = vision_llm(tiny_qwen2_vl_ov)
    streamed = "".join(r.delta or "" for r in llm.stream_chat(ask(ImageBlock(image=png(0)))))
    assert streamed == llm.chat(ask(ImageBlock(image=png(0)))).message.content


def test_a_web_url_is_refused_offline(tiny_qwen2_vl_ov: Path) -> None:
    with pytest.raises(InvalidImageError, match="not fetched"):
        vision_llm(tiny_qwen2_vl_ov).chat(ask(ImageBlock(url="https://example.com/cat.png")))


def test_a_text_only_model_refuses_an_image(tiny_qwen2_ov: Path) -> None:
    llm = Phi3AIPC(model=str(tiny_qwen2_ov), device="cpu", max_new_tokens=8)
    with pytest.raises(UnsupportedFeatureError, match="takes text only"):
        llm.chat(ask(ImageBlock(image=png(0))))
