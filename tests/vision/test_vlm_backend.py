"""The vision backend (``backend="openvino-vlm"``, OpenVINO GenAI's VLMPipeline) on the tiny Qwen2-VL: loaded
through the one resolver and registry, it answers text and images as the pipeline itself does, checks images
before the model sees them, and keeps the LLM's device rules and NPU limits."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from phi3_aipc import get_engine
from phi3_aipc.backends import load_backend
from phi3_aipc.errors import (
    InvalidImageError,
    InvalidParameterError,
    ModelNotFoundError,
    PromptTooLongError,
    UnsupportedFeatureError,
)
from phi3_aipc.params import Constraint, GenerationParams
from phi3_aipc.testing.precision import LLM_F32

pytest.importorskip("openvino_genai")
PIL_Image = pytest.importorskip("PIL.Image")

GREEDY = GenerationParams(max_new_tokens=8)
NPU_ON_CPU = {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 128, "MIN_RESPONSE_LEN": 32}


def png(seed: int, height: int = 56, width: int = 84) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PIL_Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def ask(backend, text: str, images: list) -> tuple[str, int]:  # noqa: ANN001 - a Backend
    tags = "".join(f"<ov_genai_image_{i}>" for i in range(len(images)))
    prompt = backend.apply_chat_template([{"role": "user", "content": tags + text}])
    chunks: list[str] = []
    out = backend.generate(prompt, GREEDY, lambda delta: chunks.append(delta) or True, images=images)
    return "".join(chunks), out.prompt_tokens


@pytest.fixture(scope="module")
def vlm(tiny_qwen2_vl_ov: Path):  # noqa: ANN201
    return load_backend("openvino-vlm", str(tiny_qwen2_vl_ov), "cpu", LLM_F32)


def test_it_loads_through_the_registry_and_says_it_takes_images(vlm) -> None:
    assert vlm.name == "openvino-vlm" and vlm.takes_images
    assert vlm.artifact.format == "openvino-vlm"
    assert vlm.artifact.family.takes_images and vlm.model_family == "qwen2-vl"


def test_an_image_answer_equals_the_pipelines_own(vlm, tiny_qwen2_vl_ov: Path) -> None:
    import openvino as ov
    import openvino_genai as ov_genai

    text, prompt_tokens = ask(vlm, "What is in the picture?", [png(0)])
    pipe = ov_genai.VLMPipeline(str(tiny_qwen2_vl_ov), "CPU", **LLM_F32)
    prompt = vlm.apply_chat_template(
        [{"role": "user", "content": "<ov_genai_image_0>What is in the picture?"}]
    )
    pixels = np.asarray(PIL_Image.open(io.BytesIO(png(0))).convert("RGB"))[None]
    direct = pipe.generate(prompt, images=[ov.Tensor(pixels)], max_new_tokens=8, apply_chat_template=False)
    assert text == direct.texts[0]
    assert prompt_tokens == direct.perf_metrics.get_num_input_tokens()


def test_the_image_changes_the_answer_and_adds_its_tokens(vlm) -> None:
    first, with_image = ask(vlm, "What is in the picture?", [png(0)])
    second, _ = ask(vlm, "What is in the picture?", [png(1)])
    _, text_only = ask(vlm, "What is in the picture?", [])
    assert first != second
    # 56x84 pixels: 4x6 patches of 14, merged 2x2 -> 6 image tokens, plus <|vision_start|> and <|vision_end|>.
    assert with_image - text_only == 6 + 2


def test_base64_and_data_urls_give_the_same_answer_as_bytes(vlm) -> None:
    import base64

    raw = png(0)
    text = base64.b64encode(raw).decode()
    answers = {ask(vlm, "Describe it.", [given])[0] for given in (raw, text, f"data:image/png;base64,{text}")}
    assert len(answers) == 1


def test_bad_images_are_refused_before_the_model_runs_and_it_stays_usable(vlm) -> None:
    with pytest.raises(InvalidImageError, match="not fetched"):
        ask(vlm, "What is this?", ["https://example.com/cat.png"])
    with pytest.raises(InvalidImageError, match="could not be decoded"):
        ask(vlm, "What is this?", [b"GIF89a broken"])
    with pytest.raises(InvalidImageError, match="at most 8"):
        ask(vlm, "What is this?", [png(0)] * 9)
    assert ask(vlm, "What is in the picture?", [png(0)])[0]


def test_tags_that_do_not_match_the_images_are_refused(vlm) -> None:
    prompt = vlm.apply_chat_template([{"role": "user", "content": "<ov_genai_image_1>What is it?"}])
    with pytest.raises(InvalidImageError, match=r"places images \[1\] .* 1 image"):
        vlm.generate(prompt, GREEDY, lambda _: True, images=[png(0)])


def test_a_constraint_is_refused_plainly(vlm) -> None:
    with pytest.raises(UnsupportedFeatureError, match="does not constrain decoding"):
        vlm.generate("hi", GREEDY, lambda _: True, Constraint("regex", "a+"))


def test_a_text_prompt_runs_through_the_engine(tiny_qwen2_vl_ov: Path) -> None:
    engine = get_engine(str(tiny_qwen2_vl_ov), "cpu", backend="openvino-vlm", options=LLM_F32)
    result = engine.generate([{"role": "user", "content": "Hello"}], GREEDY)
    assert result.completion_tokens == 8 and result.text


def test_the_llm_backend_points_a_vision_folder_to_the_vision_backend(tiny_qwen2_vl_ov: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="backend='openvino-vlm'"):
        load_backend("openvino", str(tiny_qwen2_vl_ov), "cpu")


def test_npu_image_size_is_refused_off_the_npu(tiny_qwen2_vl_ov: Path) -> None:
    with pytest.raises(InvalidParameterError, match="npu_image_size applies to the NPU only"):
        load_backend("openvino-vlm", str(tiny_qwen2_vl_ov), "cpu", {"npu_image_size": 224})


@pytest.mark.npu_on_cpu
def test_the_npu_pipeline_on_the_cpu_resizes_images_to_one_fixed_size(tiny_qwen2_vl_ov: Path) -> None:
    npu = load_backend("openvino-vlm", str(tiny_qwen2_vl_ov), "npu", {**NPU_ON_CPU, "npu_image_size": 56})
    assert npu.max_prompt_tokens == 128 and npu.context_window == 128 + 32
    # 56x56 whatever the input: 2x2 merged tokens (+2 markers), for a wide and a tall image alike.
    _, wide = ask(npu, "What is it?", [png(0, 56, 84)])
    _, tall = ask(npu, "What is it?", [png(1, 112, 56)])
    _, text_only = ask(npu, "What is it?", [])
    assert wide == tall == text_only + 4 + 2


@pytest.mark.npu_on_cpu
def test_the_npu_defaults_leave_room_for_image_tokens(tiny_qwen2_vl_ov: Path) -> None:
    npu = load_backend("openvino-vlm", str(tiny_qwen2_vl_ov), "npu", {"NPUW_DEVICES": "CPU"})
    assert npu.max_prompt_tokens == 2048 and npu.context_window == 2048 + 256


@pytest.mark.npu_on_cpu
def test_an_over_long_image_prompt_on_the_npu_is_a_prompt_too_long_error(tiny_qwen2_vl_ov: Path) -> None:
    npu = load_backend(
        "openvino-vlm", str(tiny_qwen2_vl_ov), "npu", {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 32}
    )
    with pytest.raises(PromptTooLongError, match="MAX_PROMPT_LEN"):
        ask(npu, "What is in the picture? " * 3, [png(0, 112, 112)])
