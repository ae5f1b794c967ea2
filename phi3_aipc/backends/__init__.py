"""Backend registry. Nothing here imports a backend's package: a backend loads only when it is chosen."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from typing import Any

from phi3_aipc.backends.base import Backend
from phi3_aipc.errors import BackendNotInstalledError, UnknownBackendError


@dataclass(frozen=True)
class BackendInfo:
    name: str
    module: str
    cls: str
    #: The import that must succeed, the pip package that provides it, and our extra that installs it.
    requires: str
    package: str
    extra: str
    devices: str


BACKENDS: dict[str, BackendInfo] = {
    info.name: info
    for info in (
        BackendInfo(
            "openvino",
            "phi3_aipc.backends.openvino_genai",
            "OpenVINOGenAIBackend",
            "openvino_genai",
            "openvino-genai",
            "openvino",
            "NPU, GPU (Intel Arc / iGPU), CPU",
        ),
        BackendInfo(
            "transformers",
            "phi3_aipc.backends.transformers_backend",
            "TransformersBackend",
            "transformers",
            "transformers",
            "transformers",
            "CPU, CUDA",
        ),
        BackendInfo(
            "onnx",
            "phi3_aipc.backends.onnx_genai",
            "OnnxGenAIBackend",
            "onnxruntime_genai",
            "onnxruntime-genai",
            "onnx",
            "DirectML (Windows GPUs and iGPUs), CPU, CUDA",
        ),
        BackendInfo(
            "optimum-intel",
            "phi3_aipc.backends.optimum_intel",
            "OptimumIntelBackend",
            "optimum.intel",
            "optimum-intel",
            "optimum-intel",
            "GPU (Intel Arc / iGPU, ids like GPU.0), CPU",
        ),
        BackendInfo(
            "npu-lib",
            "phi3_aipc.backends.npu_lib",
            "NPULibraryBackend",
            # The library itself is imported in load(), after the deprecation warning and with a better hint.
            "transformers",
            "intel-npu-acceleration-library",
            "npu-lib",
            "NPU (end of life, unverified here; prefer openvino on the NPU)",
        ),
    )
}

ALIASES = {
    "ov": "openvino",
    "openvino-genai": "openvino",
    "openvino_genai": "openvino",
    "hf": "transformers",
    "torch": "transformers",
    "ort": "onnx",
    "onnxruntime-genai": "onnx",
    "onnxruntime_genai": "onnx",
    "optimum": "optimum-intel",
    "optimum_intel": "optimum-intel",
    "npu_lib": "npu-lib",
    "intel-npu-acceleration-library": "npu-lib",
}

DEFAULT_BACKEND = "openvino"


def register_backend(info: BackendInfo, *aliases: str) -> None:
    """Add a backend to the registry (used by the built-in optional backends, and open to plugins)."""
    BACKENDS[info.name] = info
    for alias in aliases:
        ALIASES[alias] = info.name


def resolve_backend_name(backend: str | None, device: str | None = None) -> str:
    if backend is None:
        return _default_backend(device)
    name = str(backend).strip().lower()
    name = ALIASES.get(name, name)
    if name not in BACKENDS:
        raise UnknownBackendError(
            f"Unknown backend {backend!r}. Choose one of: {', '.join(sorted(BACKENDS))} (or leave it unset for "
            f"'{DEFAULT_BACKEND}')."
        )
    return name


# Devices only ONNX Runtime GenAI drives.
_ONNX_ONLY_DEVICES = ("DML", "DIRECTML", "CUDA")


def _default_backend(device: str | None) -> str:
    """OpenVINO, except for the devices only ONNX Runtime GenAI drives, and for 'auto' on a Windows PC whose
    only GPU route is DirectML (no NPU or GPU that OpenVINO can use)."""
    kind = str(device or "auto").strip().upper().split(":", 1)[0].split(".", 1)[0]
    if kind in _ONNX_ONLY_DEVICES:
        return "onnx"
    if kind == "AUTO" and _is_windows() and not _openvino_accelerator() and _directml_available():
        return "onnx"
    return DEFAULT_BACKEND


def _is_windows() -> bool:
    return sys.platform == "win32"


def _openvino_accelerator() -> bool:
    """Whether OpenVINO is installed and sees an NPU or GPU (imports OpenVINO: only asked on Windows with 'auto')."""
    if importlib.util.find_spec("openvino") is None:
        return False
    import openvino as ov

    return any(d.split(".", 1)[0] in ("NPU", "GPU") for d in ov.Core().available_devices)


def _directml_available() -> bool:
    if importlib.util.find_spec("onnxruntime_genai") is None:
        return False
    import onnxruntime_genai as og

    return bool(og.is_dml_available())


def backend_class(name: str) -> type[Backend]:
    """Import the backend's module, turning a missing dependency into an error that names the pip extra."""
    info = BACKENDS[resolve_backend_name(name)]
    try:
        importlib.import_module(info.requires)
    except ImportError as exc:
        raise BackendNotInstalledError(info.name, info.package, info.extra, exc) from exc
    module = importlib.import_module(info.module)
    return getattr(module, info.cls)


def load_backend(name: str, model: str | None, device: str | None, options: dict[str, Any]) -> Backend:
    return backend_class(name).load(model, device, options)
