"""Model resolution against a local Hugging Face cache laid out as the Hub lays it (the Hub is unreachable here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from phi3_aipc import GenerationParams, ModelNotFoundError, get_engine
from phi3_aipc.models import canonical_model_id, resolve, smollm2_gguf


def resolve_model(model: str | None, device_kind: str) -> Path:
    return resolve(model, device_kind, "openvino").path


COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _put_in_hub_cache(cache: Path, repo_id: str, source: Path) -> Path:
    """Lay ``source`` out as huggingface_hub stores a downloaded snapshot: refs/main -> snapshots/<commit>/."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(source, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    return cache


def test_well_known_ids_map_to_the_build_that_fits_the_device(hub_cache: Path, tiny_phi3_ov: Path) -> None:
    cpu = _put_in_hub_cache(hub_cache, "OpenVINO/Phi-3-mini-4k-instruct-int4-ov", tiny_phi3_ov)
    npu = _put_in_hub_cache(hub_cache, "OpenVINO/Phi-3-mini-4k-instruct-int4-cw-ov", tiny_phi3_ov)
    assert resolve_model("microsoft/Phi-3-mini-4k-instruct", "CPU") == cpu
    assert resolve_model("phi-3-mini", "GPU") == cpu
    assert resolve_model(None, "NPU") == npu, "the default model on the NPU is the symmetric (cw) build"


def test_a_cached_model_loads_offline_and_generates(hub_cache: Path, tiny_phi3_ov: Path) -> None:
    _put_in_hub_cache(hub_cache, "OpenVINO/Phi-3.5-mini-instruct-int4-ov", tiny_phi3_ov)
    engine = get_engine("phi-3.5-mini", "cpu")
    assert engine.model_name == "microsoft/Phi-3.5-mini-instruct"
    assert engine.model_family == "phi3"
    assert (
        engine.generate("Hello", GenerationParams(max_new_tokens=3, ignore_eos=True)).completion_tokens == 3
    )


def test_an_uncached_model_offline_says_what_to_download(hub_cache: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("microsoft/Phi-3-mini-4k-instruct", "NPU")
    message = str(info.value)
    assert "OpenVINO/Phi-3-mini-4k-instruct-int4-cw-ov" in message
    assert (
        "hf download OpenVINO/Phi-3-mini-4k-instruct-int4-cw-ov" in message and "local model path" in message
    )
    assert str(hub_cache) in message, "it says where the Hugging Face cache is"


def test_phi4_mini_on_the_npu_points_to_export(hub_cache: Path) -> None:
    with pytest.raises(
        ModelNotFoundError, match="phi3-aipc export microsoft/Phi-4-mini-instruct OUT --to openvino --for npu"
    ):
        resolve_model("phi-4-mini", "NPU")


def test_aliases_and_the_packaged_demo_model() -> None:
    assert canonical_model_id(None) == "microsoft/Phi-3-mini-4k-instruct"
    assert canonical_model_id("Phi-4-Mini") == "microsoft/Phi-4-mini-instruct"
    assert smollm2_gguf().name.endswith(".gguf")
    # The packaged GGUF is run from the OpenVINO IR it is converted to (tests/models/test_packaged_ir.py).
    assert resolve("smollm2", "CPU", "openvino").model_id == "smollm2"


def test_a_folder_that_is_no_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelNotFoundError, match="holds no OpenVINO model"):
        resolve_model(str(tmp_path), "CPU")


def test_the_family_comes_from_the_name_else_from_the_config() -> None:
    from phi3_aipc.families import detect_family

    assert detect_family("microsoft/Phi-4-mini-instruct").name == "phi4"
    # Phi-4-mini reuses the phi3 architecture: its vocabulary tells it apart.
    assert detect_family("/models/my-export", "phi3", 200_064).name == "phi4"
    assert detect_family("/models/my-export", "phi3", 32_064).name == "phi3"
    assert detect_family("/models/smollm2.gguf", "llama", 49_152).name == "other"
