"""The rule behind the bf16 failures: a test that pins precision does it through ``phi3_aipc.testing.precision``.

A hand-written ``{"INFERENCE_PRECISION_HINT": "f32"}`` pinned the arithmetic but not the KV cache, and five tests went
red on the first bf16 CPU CI met. The shared dicts pin every knob; this test keeps anyone from spelling their own.
"""

from __future__ import annotations

import re
from pathlib import Path

from phi3_aipc.testing.precision import ENCODER_F32, LLM_F32, cpu_default_precision

TESTS = Path(__file__).parent
KNOBS = re.compile(r"INFERENCE_PRECISION_HINT|KV_CACHE_PRECISION|DYNAMIC_QUANTIZATION_GROUP_SIZE")


def test_no_test_file_spells_its_own_precision_pins() -> None:
    offenders = [
        f"{path.relative_to(TESTS)}:{number}"
        for path in sorted(TESTS.rglob("*.py"))
        if path.name != Path(__file__).name
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if KNOBS.search(line.split("#", 1)[0])
    ]
    assert not offenders, (
        f"pin precision with phi3_aipc.testing.precision (LLM_F32 / ENCODER_F32): {offenders}"
    )


def test_the_llm_pins_cover_the_kv_cache_too() -> None:
    assert LLM_F32 == {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}
    assert ENCODER_F32 == {"INFERENCE_PRECISION_HINT": "f32"}


def test_the_cpu_default_precision_is_read_from_openvino() -> None:
    # f32 on AVX2-only CPUs, bf16 on AVX-512 BF16 / AMX ones: either way a name the tolerances know.
    assert cpu_default_precision() in {"f32", "bf16", "f16"}
