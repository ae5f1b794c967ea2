"""Precision pins for tests and benchmarks that compare two numeric paths (batched vs lone, cached vs fresh, NPU
pipeline vs CPU, ours vs a reference).

OpenVINO's CPU plugin picks its precision from the CPU: f32 on an AVX2-only machine, bf16 where the CPU has
AVX-512 BF16 or AMX. A comparison that holds at f32 can fail at bf16, so a test that compares two paths pins every
precision knob on both sides, through these dicts, and never spells its own: ``tests/test_precision_rule.py``
refuses a test file that does.

- ``INFERENCE_PRECISION_HINT`` sets the precision of the model's arithmetic;
- ``KV_CACHE_PRECISION`` sets the KV cache's element type; without it the paged-attention pipelines (LLMPipeline on
  the CPU, ContinuousBatchingPipeline) keep a low-precision cache even at f32 inference, so a batched answer can
  still differ from its lone run on a bf16 CPU;
- ``DYNAMIC_QUANTIZATION_GROUP_SIZE`` 0 turns off the CPU plugin's dynamic quantization of activations for int4/int8
  weights. With it on, a step of several tokens (prompt lookup's and a draft model's verifying steps) did not compute
  what one-token steps compute, even at f32: SmolLM2's Q4_1 greedy answers with and without prompt lookup parted
  after a few tokens, and were identical with it off (2026-12-04, AVX-512 BF16 CPU).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: OpenVINO GenAI LLM pipelines (openvino, openvino-batching, optimum-intel's ov_config): every knob at f32.
LLM_F32: Mapping[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}
#: ``LLM_F32``, and the same arithmetic for a step of several tokens as for one (prompt lookup, draft models).
LLM_F32_STEPS: Mapping[str, Any] = {**LLM_F32, "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0}
#: Encoders (TextEmbeddingPipeline, TextRerankPipeline): no KV cache, so the inference precision is the knob.
ENCODER_F32: Mapping[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
#: The relative error of one rounding at each precision (half an ulp), for tolerances derived from what ran.
UNIT_ROUNDOFF = {"f32": 2.0**-24, "bf16": 2.0**-8, "f16": 2.0**-11}


def llm_f32(**extra: Any) -> dict[str, Any]:
    """``LLM_F32`` plus ``extra`` options, as a fresh dict (engines are cached per options, so pass it as is)."""
    return {**LLM_F32, **extra}


def encoder_f32(**extra: Any) -> dict[str, Any]:
    """``ENCODER_F32`` plus ``extra`` options, as a fresh dict."""
    return {**ENCODER_F32, **extra}


def cpu_default_precision() -> str:
    """The precision OpenVINO's CPU plugin computes in when nothing is pinned: 'f32' or 'bf16' (or 'f16')."""
    import openvino as ov

    hint = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
    names = {ov.Type.bf16: "bf16", ov.Type.f16: "f16", ov.Type.f32: "f32"}
    return names.get(hint, str(hint))
