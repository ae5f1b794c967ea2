"""The device table: spellings, kinds, which backend serves which kind, export presets, and the refusals."""

from __future__ import annotations

import pytest

from phi3_aipc import devices
from phi3_aipc.backends import BACKENDS, resolve_backend_name, serving_backend
from phi3_aipc.devices import (
    DEVICE_KINDS,
    default_backend,
    device_kind,
    export_preset,
    normalise_device,
    pick_device,
)
from phi3_aipc.errors import DeviceNotFoundError, InvalidParameterError


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        (None, "AUTO"),
        ("auto", "AUTO"),
        (" Auto ", "AUTO"),
        ("npu", "NPU"),
        (" CPU ", "CPU"),
        ("gpu", "GPU"),
        ("gpu.1", "GPU.1"),
        ("GPU.0", "GPU.0"),
        ("dml", "DML"),
        ("DirectML", "DML"),
        ("cuda", "CUDA"),
        ("cuda:1", "CUDA:1"),
    ],
)
def test_every_spelling_has_one_canonical_name(written: str | None, canonical: str) -> None:
    assert normalise_device(written) == canonical


@pytest.mark.parametrize("written", ["tpu", "gpu-1", "npu.", "hetero:gpu,cpu"])
def test_unknown_devices_are_refused_with_the_spellings(written: str) -> None:
    with pytest.raises(
        DeviceNotFoundError, match="Use one of 'auto', 'npu', 'gpu', 'cpu', 'dml', 'directml'"
    ):
        normalise_device(written)


@pytest.mark.parametrize("written", ["", "   ", 3, ["cpu"]])
def test_blank_or_non_text_devices_are_invalid(written: object) -> None:
    with pytest.raises(InvalidParameterError, match="device must be a string"):
        normalise_device(written)  # type: ignore[arg-type]


def test_kinds_backends_and_presets() -> None:
    assert device_kind("GPU.1") == device_kind(" gpu ") == "GPU"
    assert device_kind("directml") == "DML" and device_kind("cuda:0") == "CUDA"
    assert {kind: default_backend(kind) for kind in DEVICE_KINDS} == {
        "NPU": "openvino",
        "GPU": "openvino",
        "CPU": "openvino",
        "DML": "onnx",
        "CUDA": "onnx",
    }
    assert [export_preset(d) for d in ("npu", "GPU.1", "cpu", "dml", "cuda")] == [
        "npu",
        "gpu",
        "cpu",
        "gpu",
        "gpu",
    ]
    # Every backend a kind names is registered, and every registered backend serves some kind.
    named = {b for kind in DEVICE_KINDS.values() for b in kind.backends}
    assert named == set(BACKENDS)
    # A kind's batching backend is one of its own backends.
    assert all(k.batching_backend in (None, *k.backends) for k in DEVICE_KINDS.values())


def test_serve_batches_on_the_cpu_and_gpu_unless_assisted_decoding_needs_the_serial_pipeline() -> None:
    assert [serving_backend(d) for d in ("cpu", "GPU.1", "npu", "dml", "cuda")] == [
        "openvino-batching",
        "openvino-batching",
        None,
        None,
        None,
    ]
    # Prompt lookup and draft models are options of the serialising pipeline only: asked for, it stays.
    assert serving_backend("cpu", {"prompt_lookup": True}) is None
    assert serving_backend("cpu", {"DRAFT_MODEL": "auto"}) is None
    assert serving_backend("cpu", {"prompt_lookup": False, "prefix_reuse": True}) == "openvino-batching"


def test_registry_asks_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_backend_name(None, " DirectML ") == resolve_backend_name(None, "cuda:0") == "onnx"
    assert resolve_backend_name(None, "npu") == resolve_backend_name(None, None) == "openvino"
    # Test doubles for a Windows PC whose only accelerator route is DirectML.
    monkeypatch.setattr(devices, "_is_windows", lambda: True)
    monkeypatch.setattr(devices, "_directml_available", lambda: True)
    monkeypatch.setattr(devices, "_openvino_accelerator", lambda: False)
    assert default_backend("auto") == "onnx" and default_backend("cpu") == "openvino"
    assert serving_backend("auto") is None  # 'auto' is DirectML there: nothing to batch with


def test_pick_device_against_what_a_runtime_reports() -> None:
    assert pick_device("AUTO", ["CPU", "GPU.0", "NPU"]) == "NPU"
    assert pick_device("AUTO", ["CPU", "GPU.0"]) == "GPU.0"
    assert pick_device("GPU", ["CPU", "GPU.0"]) == "GPU"
    # A device name the table does not know, reported by a runtime, is skipped rather than an error.
    assert pick_device("AUTO", ["MYRIAD", "CPU"]) == "CPU"
    with pytest.raises(DeviceNotFoundError, match="Devices present: CPU"):
        pick_device("NPU", ["CPU"])


def test_a_backend_refuses_a_kind_naming_the_ones_that_serve_it() -> None:
    error = devices.refuse_kind("DML", "openvino")
    assert "runs on the NPU, GPU, CPU only" in str(error) and "backend='onnx'" in str(error)
    assert "backend='openvino'" in str(devices.refuse_kind("NPU", "onnx"))
