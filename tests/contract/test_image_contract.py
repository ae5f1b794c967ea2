"""The contract with an image: the same scenario with a picture reaches the same outcome through the bare chat turn,
LangChain, LlamaIndex and the server (whole and streamed), on the tiny Qwen2-VL; a text-only model refuses the
picture at every door."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from doors import DOORS, Outcome, Scenario

from phi3_aipc.testing.precision import LLM_F32

pytest.importorskip("openvino_genai")
PIL_Image = pytest.importorskip("PIL.Image")


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (56, 84, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PIL_Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def asking(seed: int) -> list[dict]:
    return [{"role": "user", "content": "What is in the picture?", "images": [png(seed)]}]


@pytest.fixture(scope="module")
def vision(tiny_qwen2_vl_ov: Path) -> dict:
    return {
        "model": str(tiny_qwen2_vl_ov),
        "device": "cpu",
        "backend": "openvino-vlm",
        "options": dict(LLM_F32),
    }


def run_all(scenario: Scenario) -> dict[str, Outcome]:
    return {name: door(scenario) for name, door in DOORS.items()}


def test_an_image_reaches_the_same_outcome_at_every_door(vision: dict) -> None:
    outcomes = run_all(Scenario(vision, asking(0), max_tokens=8))
    reference = outcomes["chat_turn"]
    for name, outcome in outcomes.items():
        assert outcome == reference, f"{name} differs from the bare chat turn"
    # The image is in the prompt (its tokens counted) and in the answer (another image, another answer).
    text_only = DOORS["chat_turn"](Scenario(vision, [{"role": "user", "content": "What is in the picture?"}]))
    assert reference.prompt_tokens == text_only.prompt_tokens + 6 + 2
    assert DOORS["chat_turn"](Scenario(vision, asking(1), max_tokens=8)).content != reference.content


@pytest.mark.parametrize("door", sorted(DOORS))
def test_a_text_only_model_refuses_the_image_at_every_door(tiny_qwen2_ov: Path, door: str) -> None:
    text_only = {"model": str(tiny_qwen2_ov), "device": "cpu", "options": dict(LLM_F32)}
    with pytest.raises(Exception, match="takes text only") as caught:
        DOORS[door](Scenario(text_only, asking(0), max_tokens=8))
    # Servers answer 400; a streamed request refused after its stream began (before the server's request checks
    # ran ahead of streaming) gets openai's APIError from the stream's error event instead.
    allowed = {"server": {"BadRequestError"}, "server_stream": {"BadRequestError", "APIError"}}
    assert type(caught.value).__name__ in allowed.get(door, {"UnsupportedFeatureError"})
