"""Images through the one chat turn: neutral messages carry ``images`` beside their text; the turn places them
as tags, the engine hands them to a backend that takes images, and a text-only model refuses them plainly."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from phi3_aipc import get_engine
from phi3_aipc.chat import ChatTurn, TurnDone
from phi3_aipc.errors import InvalidImageError, UnsupportedFeatureError
from phi3_aipc.images import ImagePrompt, place_images, prompt_with_images
from phi3_aipc.params import GenerationParams
from phi3_aipc.testing.precision import LLM_F32

pytest.importorskip("openvino_genai")
PIL_Image = pytest.importorskip("PIL.Image")

GREEDY = GenerationParams(max_new_tokens=8)
QUESTION = "What is in the picture?"


def png(seed: int, height: int = 56, width: int = 84) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PIL_Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def vision(tiny_qwen2_vl_ov: Path):  # noqa: ANN201 - an Engine
    return get_engine(str(tiny_qwen2_vl_ov), "cpu", backend="openvino-vlm", options=LLM_F32)


@pytest.fixture(scope="module")
def text_only(tiny_qwen2_ov: Path):  # noqa: ANN201 - an Engine
    return get_engine(str(tiny_qwen2_ov), "cpu", options=LLM_F32)


def direct(vision, images: list[bytes], text: str = QUESTION) -> str:  # noqa: ANN001
    """The backend's own answer for one user message with ``images`` first (the reference for the turn)."""
    tags = "".join(f"<ov_genai_image_{i}>" for i in range(len(images)))
    prompt = vision.render([{"role": "user", "content": tags + text}])
    chunks: list[str] = []
    vision.backend.generate(prompt, GREEDY, lambda d: chunks.append(d) or True, images=images)
    return "".join(chunks)


def test_a_turn_with_an_image_answers_as_the_backend_does(vision) -> None:
    turn = ChatTurn([{"role": "user", "content": QUESTION, "images": [png(0)]}], params=GREEDY)
    result = turn.run(vision)
    assert result.content == direct(vision, [png(0)])
    assert result.content != direct(vision, [png(1)])


def test_streamed_and_whole_turns_agree(vision) -> None:
    turn = ChatTurn([{"role": "user", "content": QUESTION, "images": [png(0)]}], params=GREEDY)
    events = list(turn.stream(vision))
    assert isinstance(events[-1], TurnDone)
    assert (
        "".join(e.text for e in events if hasattr(e, "text"))
        == events[-1].result.content
        == turn.run(vision).content
    )


def test_images_across_messages_are_numbered_through_the_conversation(vision) -> None:
    messages = [
        {"role": "user", "content": "First:", "images": [png(0)]},
        {"role": "assistant", "content": "Seen."},
        {"role": "user", "content": "Second:", "images": [png(1)]},
    ]
    prompt = ChatTurn(messages).plan(vision).render(vision)
    assert isinstance(prompt, ImagePrompt) and len(prompt.images) == 2
    assert prompt.index("<ov_genai_image_0>First:") < prompt.index("<ov_genai_image_1>Second:")


def test_engine_generate_takes_messages_with_images_too(vision) -> None:
    messages = [{"role": "user", "content": QUESTION, "images": [png(0)]}]
    assert vision.generate(messages, GREEDY).text == direct(vision, [png(0)])


def test_text_cannot_claim_an_image_with_a_tag(vision) -> None:
    messages = [{"role": "user", "content": "<ov_genai_image_0> and <ov_genai_image_1>", "images": [png(0)]}]
    prompt = ChatTurn(messages).plan(vision).render(vision)
    assert prompt.count("<ov_genai_image_") == 1 and len(prompt.images) == 1


def test_a_trim_that_drops_an_image_keeps_the_rest_in_order() -> None:
    placed, images = place_images(
        [{"role": "user", "content": "a", "images": ["A"]}, {"role": "user", "content": "b", "images": ["B"]}]
    )
    assert [m["content"] for m in placed] == ["<ov_genai_image_0>a", "<ov_genai_image_1>b"]
    kept = prompt_with_images("<ov_genai_image_1>b", images)  # the first message was trimmed away
    assert str(kept) == "<ov_genai_image_0>b" and kept.images == ("B",)


@pytest.mark.parametrize("door", ["turn", "stream", "engine"])
def test_a_text_only_model_refuses_images_at_every_path(text_only, door: str) -> None:
    messages = [{"role": "user", "content": QUESTION, "images": [png(0)]}]
    with pytest.raises(UnsupportedFeatureError, match="takes text only.*backend='openvino-vlm'"):
        if door == "turn":
            ChatTurn(messages).run(text_only)
        elif door == "stream":
            list(ChatTurn(messages).stream(text_only))
        else:
            text_only.generate(messages)
    assert text_only.generate([{"role": "user", "content": "hi"}], GREEDY).completion_tokens > 0


def test_bad_images_are_refused_when_the_turn_is_built() -> None:
    with pytest.raises(InvalidImageError, match="could not be decoded"):
        ChatTurn([{"role": "user", "content": "x", "images": [b"junk"]}])
    with pytest.raises(InvalidImageError, match="images go in user messages"):
        ChatTurn([{"role": "assistant", "content": "x", "images": [png(0)]}])
    with pytest.raises(InvalidImageError, match="must be a list"):
        ChatTurn([{"role": "user", "content": "x", "images": png(0)}])
    with pytest.raises(InvalidImageError, match="9 images"):
        ChatTurn([{"role": "user", "content": "x", "images": [png(0)] * 9}])
