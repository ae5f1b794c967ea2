"""Prefill of an image prompt against a text prompt of the same token count, on the tiny Qwen2-VL (one run).

TTFT from OpenVINO GenAI's perf metrics, median of 5 generations of one token each (each prompt a new one), on the CPU and on the NPU
pipeline run on the CPU (NPUW_DEVICES=CPU). The tiny model's vision encoder is 2 small blocks, so the ratio shows
the pipeline's per-image cost (preprocessing, encoder calls), not a real model's; rerun it with a real model
folder (``--model DIR``) on an AI PC for that.

    python benchmarks/vision_prefill.py [--model DIR] [--devices cpu,npu]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
from pathlib import Path

import numpy as np
from PIL import Image

from phi3_aipc.backends import load_backend
from phi3_aipc.params import GenerationParams
from phi3_aipc.testing.precision import LLM_F32

NPU_ON_CPU = {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 512, "MIN_RESPONSE_LEN": 16}
ONE_TOKEN = GenerationParams(max_new_tokens=1)
RUNS = 5


def png(side: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def ttft(backend, contents: list[str], images: list[list[bytes]]) -> tuple[float, int]:  # noqa: ANN001
    """Median TTFT over one generation per (content, images): each run differs, so no run reuses another's KV."""
    runs = []
    for content, attached in zip(contents, images, strict=True):
        prompt = backend.apply_chat_template([{"role": "user", "content": content}])
        runs.append(backend.generate(prompt, ONE_TOKEN, lambda _: True, images=attached))
    return statistics.median(r.timings.ttft_ms for r in runs), runs[0].prompt_tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--devices", default="cpu,npu")
    parser.add_argument("--side", type=int, default=112)
    args = parser.parse_args()
    model = args.model or _tiny()
    print(f"{'device':<12} {'image prompt':>22} {'text prompt':>22} {'ratio':>6}")
    for device in args.devices.split(","):
        options = dict(LLM_F32) if device == "cpu" else {**NPU_ON_CPU, "npu_image_size": args.side}
        backend = load_backend("openvino-vlm", model, device, options)
        seeds = range(RUNS)
        image_ms, image_tokens = ttft(
            backend, ["<ov_genai_image_0>Describe it."] * RUNS, [[png(args.side, seed)] for seed in seeds]
        )
        # The same number of prompt tokens, all text: "Describe it." padded with a one-token word, another per run.
        _, base = ttft(backend, ["Describe it."], [[]])
        texts = [f"Describe it.{f' {word}' * (image_tokens - base)}" for word in "abcdefgh"[:RUNS]]
        text_ms, text_tokens = ttft(backend, texts, [[] for _ in seeds])
        label = "NPU-on-CPU" if device == "npu" else device.upper()
        print(
            f"{label:<12} {image_ms:>10.1f} ms {image_tokens:>4} tok {text_ms:>10.1f} ms {text_tokens:>4} tok "
            f"{image_ms / text_ms:>6.2f}"
        )


def _tiny() -> str:
    from phi3_aipc.testing import cached_model_dir
    from phi3_aipc.testing.tiny_qwen2_vl import build_tiny_qwen2_vl, export_tiny_qwen2_vl

    cache = Path(os.environ.get("PHI3_AIPC_TEST_CACHE", "/tmp/phi3-aipc-bench"))
    hf = cached_model_dir(cache, "tiny-qwen2-vl-s0-v1", build_tiny_qwen2_vl)
    return str(
        cached_model_dir(cache, "tiny-qwen2-vl-s0-ov-fp32-v1", lambda out: export_tiny_qwen2_vl(hf, out))
    )


if __name__ == "__main__":
    main()
