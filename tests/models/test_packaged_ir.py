"""The packaged SmolLM2 GGUF becomes an OpenVINO IR in the cache on first use, for the CPU and the NPU pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phi3_aipc import GenerationParams, get_engine
from phi3_aipc.export import MANIFEST_NAME
from phi3_aipc.models import resolve

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]

NPU_ON_CPU = {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 256, "MIN_RESPONSE_LEN": 64}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty phi3-aipc cache, so the first resolve converts. (The engine tests below use the session's cache,
    so that the IRs are converted once for the whole suite.)"""
    cache = tmp_path / "phi3-aipc-cache"
    monkeypatch.setenv("PHI3_AIPC_CACHE", str(cache))
    return cache


def test_first_use_converts_to_an_ir_once_and_says_so(
    fresh_cache: Path, smollm2_gguf: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    first = resolve("smollm2", "CPU", "openvino")
    assert "Converting SmolLM2-135M-Instruct.Q4_1.gguf to OpenVINO IR" in capfd.readouterr().err
    assert first.format == "openvino-ir"
    assert (first.path / "openvino_model.xml").is_file()
    assert first.path.parent.parent == fresh_cache / "exports"
    manifest = json.loads((first.path / MANIFEST_NAME).read_text())
    assert manifest["source"]["path"] == str(smollm2_gguf.resolve())
    # What the GGUF's metadata says survives the conversion.
    assert first.context_window == 8192 and first.model_id == "smollm2"
    assert {"<|im_start|>", "<|im_end|>"} <= first.special_tokens

    built = (first.path / MANIFEST_NAME).stat().st_mtime_ns
    # The GGUF's own path names the same model, and the GPU shares the CPU's IR.
    second = resolve(str(smollm2_gguf), "GPU", "openvino")
    assert second.path == first.path and (second.path / MANIFEST_NAME).stat().st_mtime_ns == built
    assert "Converting" not in capfd.readouterr().err


def test_the_cpu_answers_from_the_ir() -> None:
    engine = get_engine("smollm2", "cpu")
    assert engine.backend.artifact.format == "openvino-ir"
    assert "Paris" in engine.generate(QUESTION, GenerationParams(max_new_tokens=12)).text


@pytest.mark.npu_on_cpu
def test_the_npu_pipeline_answers_from_its_own_ir() -> None:
    engine = get_engine("smollm2", "npu", options=NPU_ON_CPU)
    artifact = engine.backend.artifact
    assert artifact.format == "openvino-ir"
    assert "-fp16-npu-" in artifact.path.name, "the NPU gets its own fp16 IR"
    assert engine.context_window == 256 + 64
    assert "Paris" in engine.generate(QUESTION, GenerationParams(max_new_tokens=12)).text


@pytest.mark.npu_on_cpu
def test_ask_on_the_npu_pipeline_answers_instead_of_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    from phi3_aipc.cli import main

    # The options of the test above: the engine loaded there answers (get_engine shares it).
    options = [arg for key, value in NPU_ON_CPU.items() for arg in ("-o", f"{key}={value}")]
    assert main(["ask", "--model", "smollm2", "--device", "npu", *options, "--max-new-tokens", "12"]) == 0
    assert "Paris" in capsys.readouterr().out


def test_a_broken_gguf_is_refused_before_openvino_converts_it(
    fresh_cache: Path, smollm2_gguf: Path, tmp_path: Path
) -> None:
    from phi3_aipc.errors import InvalidModelFileError
    from phi3_aipc.export.gguf import convert_gguf

    broken = tmp_path / "broken.gguf"
    broken.write_bytes(smollm2_gguf.read_bytes()[: 1 << 20])  # truncated: OpenVINO would crash on it
    with pytest.raises(InvalidModelFileError, match="not a valid GGUF"):
        convert_gguf(broken, "cpu", model_arg="broken")
    assert not (fresh_cache / "exports").exists() or not any((fresh_cache / "exports").rglob("*.xml"))
