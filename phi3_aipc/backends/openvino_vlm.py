"""OpenVINO GenAI's ``VLMPipeline`` (``backend="openvino-vlm"``): vision models (Phi-3.5-vision, Phi-4-multimodal,
Qwen2-VL) taking text and images, on the CPU, the Intel GPU and the NPU.

It is the LLM backend's shape with images added: the same device rules, compile cache and NPU options
(``phi3_aipc.backends.openvino_genai``). A prompt marks where each image goes with OpenVINO GenAI's universal tag
``<ov_genai_image_N>``, which the pipeline turns into the model's own image tokens; a prompt without tags gets its
images in front. Images are decoded and checked by ``phi3_aipc.images`` before the model sees them.

The NPU compiles static shapes, so there every image is resized to one fixed size (``NPU_IMAGE_SIZE``, changed
with the ``npu_image_size`` option) and the prompt limit is raised to leave room for image tokens
(``NPU_VLM_DEFAULTS``); both are set for the user and unverified on a real NPU (see docs).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import openvino_genai as ov_genai

from phi3_aipc import images as image_checks
from phi3_aipc.backends.base import TextCallback
from phi3_aipc.backends.openvino_genai import (
    OpenVINOGenAIBackend,
    _output,
    _pick_target,
    _pipeline_config,
    _upper_keys,
    open_pipeline,
)
from phi3_aipc.devices import DEVICE_KINDS, device_kind, refuse_kind
from phi3_aipc.errors import (
    InvalidImageError,
    InvalidParameterError,
    PromptTooLongError,
    UnsupportedFeatureError,
)
from phi3_aipc.models import Artifact
from phi3_aipc.params import BackendOutput, Constraint, GenerationParams

#: The NPU's prompt must hold the image tokens too (Phi-3.5-vision: about 750 per image at its default crops).
NPU_VLM_DEFAULTS = {"MAX_PROMPT_LEN": 2048, "MIN_RESPONSE_LEN": 256}
#: (width, height) every image is resized to on the NPU, so the vision encoder always sees one shape.
NPU_IMAGE_SIZE = (448, 448)
IMAGE_SIZE_OPTION = "NPU_IMAGE_SIZE"
IMAGE_TAG = "<ov_genai_image_{}>"
_TAG_PATTERN = re.compile(r"<ov_genai_image_(\d+)>")
_NPU_TOO_LONG = re.compile(r"up to (\d+) tokens\. (\d+) is passed")


class OpenVINOVLMBackend(OpenVINOGenAIBackend):
    name = "openvino-vlm"
    # Unverified on VLMPipeline: tool calls and JSON fall back to the prompt and validation alone.
    constraint_kinds = frozenset()
    takes_images = True
    max_images = image_checks.MAX_IMAGES

    def __init__(
        self, pipeline: Any, artifact: Artifact, device: str, config: dict[str, Any], image_size: Any
    ):
        super().__init__(pipeline, artifact, device, config)
        self._npu_image_size = image_size

    @classmethod
    def pick_device(cls, requested: str, options: Mapping[str, Any]) -> str:
        if requested != "AUTO" and cls.name not in DEVICE_KINDS[device_kind(requested)].backends:
            raise refuse_kind(requested, cls.name)
        return _pick_target(requested, _upper_keys(options))

    @classmethod
    def load(cls, artifact: Artifact, device: str, options: dict[str, Any]) -> OpenVINOVLMBackend:
        upper = _upper_keys(options)
        image_size = _image_size(device, upper.pop(IMAGE_SIZE_OPTION, None))
        if device_kind(device) == "NPU":
            upper = {**NPU_VLM_DEFAULTS, **upper}
        config = _pipeline_config(device, upper)
        started = time.perf_counter()
        pipeline = _make_vlm_pipeline(artifact, device, config)
        backend = cls(pipeline, artifact, device, config, image_size)
        backend.load_ms = (time.perf_counter() - started) * 1000
        return backend

    def generate(
        self,
        prompt: str,
        params: GenerationParams,
        on_text: TextCallback,
        constraint: Constraint | None = None,
        images: Sequence[Any] = (),
    ) -> BackendOutput:
        """Generate from a formatted prompt and its images (bytes, base64, data: URLs or decoded images)."""
        if constraint is not None:
            raise UnsupportedFeatureError(
                f"The {self.name} backend does not constrain decoding ({constraint.kind}); pass constrained=False."
            )
        # The chat turn's prompt carries its images (phi3_aipc.images.ImagePrompt).
        tensors = self._image_tensors(prompt, images or getattr(prompt, "images", ()))
        config = self._generation_config(params, None)
        failures: list[BaseException] = []

        def streamer(delta: str) -> ov_genai.StreamingStatus:
            # As in the LLM backend: OpenVINO GenAI swallows a callback's exception, so stop and re-raise after.
            if failures:
                return ov_genai.StreamingStatus.STOP
            try:
                keep_going = on_text(delta)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                failures.append(exc)
                return ov_genai.StreamingStatus.STOP
            return ov_genai.StreamingStatus.RUNNING if keep_going else ov_genai.StreamingStatus.STOP

        try:
            result = self._pipe.generate(
                str(prompt), images=tensors, generation_config=config, streamer=streamer
            )
        except RuntimeError as exc:
            raise self._known_failure(exc) from exc
        if failures:
            raise failures[0]
        return _output(result.perf_metrics)

    # -- images ----------------------------------------------------------------------------------------------------
    def _image_tensors(self, prompt: str, images: Sequence[Any]) -> list[Any]:
        image_checks.check_count(images, self.max_images)
        tags = sorted({int(n) for n in _TAG_PATTERN.findall(prompt)})
        if tags and tags != list(range(len(images))):
            raise InvalidImageError(
                f"The prompt places images {tags} ({IMAGE_TAG.format('N')} tags) but {len(images)} image(s) were "
                f"given: number the tags 0..{len(images) - 1}, one per image, or leave them out to put the images "
                f"first."
            )
        return [self._tensor(image) for image in images]

    def _tensor(self, image: Any) -> Any:
        import numpy as np
        import openvino as ov

        decoded = image if isinstance(image, image_checks.DecodedImage) else image_checks.decode_image(image)
        pixels = decoded.image
        if self._npu_image_size is not None:
            pixels = pixels.resize(self._npu_image_size)
        # VLMPipeline takes uint8 NHWC: one image, height x width x RGB.
        return ov.Tensor(np.ascontiguousarray(np.asarray(pixels, dtype=np.uint8)[None]))

    def _known_failure(self, exc: RuntimeError) -> Exception:
        match = _NPU_TOO_LONG.search(str(exc))
        if match:
            limit, tokens = int(match.group(1)), int(match.group(2))
            return PromptTooLongError(
                tokens,
                limit,
                "NPU's MAX_PROMPT_LEN (image tokens included)",
                "Send fewer or smaller images, shorten the text, or load with a larger MAX_PROMPT_LEN.",
            )
        return exc


def _image_size(device: str, value: Any) -> tuple[int, int] | None:
    """The fixed (width, height) images get on the NPU; None elsewhere (the model's own processor sizes them)."""
    if device_kind(device) != "NPU":
        if value is not None:
            raise InvalidParameterError(
                f"npu_image_size applies to the NPU only; remove it for device '{device}' (the model's own "
                "image processor sizes images there)."
            )
        return None
    if value is None:
        return NPU_IMAGE_SIZE
    size = (
        (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (list, tuple)) else ()
    )
    if len(size) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and 28 <= v <= 4096 for v in size
    ):
        raise InvalidParameterError(
            f"npu_image_size must be a side in pixels or (width, height), each 28 to 4096, got {value!r}."
        )
    return size  # type: ignore[return-value]


def _make_vlm_pipeline(artifact: Artifact, device: str, config: dict[str, Any]) -> Any:
    return open_pipeline(
        ov_genai.VLMPipeline,
        artifact,
        device,
        config,
        broken=f"OpenVINO could not read the vision model in '{artifact.path}' ({{first}}). Its IR files look broken "
        f"or incomplete: download or export it again.",
        unknown=f"OpenVINO's VLMPipeline on {device} does not know the option(s) {{names}}. Pass OpenVINO "
        f"properties the device supports (`phi3-aipc doctor` lists the devices).",
    )
