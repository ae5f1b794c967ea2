"""THE device table: what a user may write, what kind of device it names, which backends serve it, and its presets.

Adding a device is one row in ``DEVICE_KINDS``. Everything else (the backend registry, the backends, the model
resolver, export) asks this module instead of parsing device strings itself.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import sys
from dataclasses import dataclass

from phi3_aipc.errors import DeviceNotFoundError, InvalidParameterError

AUTO = "AUTO"


@dataclass(frozen=True)
class DeviceKind:
    """One kind of device and what the rest of phi3-aipc must know about it."""

    #: Canonical upper-case name, as OpenVINO spells it where OpenVINO drives it ('NPU', 'GPU', 'CPU').
    name: str
    #: Lower-case spellings users may write (the name itself is always accepted).
    aliases: tuple[str, ...]
    #: Backends that can run on it; the first is the default when the caller names no backend.
    backends: tuple[str, ...]
    #: The export preset (``phi3-aipc export --for``) whose weights fit it.
    export_preset: str
    #: The ONNX Runtime GenAI execution provider a model for it is built and run with (None: ONNX cannot run it).
    onnx_provider: str | None
    #: What it is, for messages.
    label: str
    #: The backend that decodes concurrent requests together on it (``phi3-aipc serve``'s default there); None: the
    #: default backend serves one request at a time.
    batching_backend: str | None = None


DEVICE_KINDS: dict[str, DeviceKind] = {
    kind.name: kind
    for kind in (
        DeviceKind("NPU", ("npu",), ("openvino", "npu-lib", "openvino-vlm"), "npu", None, "Intel NPU"),
        DeviceKind(
            "GPU",
            ("gpu",),
            ("openvino", "openvino-batching", "optimum-intel", "onnx", "openvino-vlm"),
            "gpu",
            "dml",
            "GPU (Intel Arc / iGPU)",
            "openvino-batching",
        ),
        DeviceKind(
            "CPU",
            ("cpu",),
            ("openvino", "openvino-batching", "optimum-intel", "onnx", "transformers", "openvino-vlm"),
            "cpu",
            "cpu",
            "CPU",
            "openvino-batching",
        ),
        DeviceKind("DML", ("dml", "directml"), ("onnx",), "gpu", "dml", "DirectML (Windows DirectX 12 GPU)"),
        DeviceKind("CUDA", ("cuda",), ("onnx", "transformers"), "gpu", "cuda", "NVIDIA GPU (CUDA)"),
    )
}
#: The order device='auto' tries kinds in, where a runtime reports several.
AUTO_PREFERENCE = ("NPU", "GPU", "CPU")
DEFAULT_BACKEND = "openvino"

_ALIASES = {
    alias: kind.name for kind in DEVICE_KINDS.values() for alias in (kind.name.lower(), *kind.aliases)
}
# A kind, then optionally an id after '.' (OpenVINO: 'GPU.1') or ':' (CUDA/torch: 'cuda:0').
_DEVICE = re.compile(r"^(?P<kind>[a-z]+)(?:(?P<sep>[.:])(?P<index>[0-9a-z_]+))?$")


def _spellings() -> str:
    return ", ".join(["'auto'", *(f"'{alias}'" for alias in _ALIASES), "'GPU.1'"])


def normalise_device(device: str | None) -> str:
    """The canonical spelling: None/'auto' -> 'AUTO', ' npu ' -> 'NPU', 'gpu.1' -> 'GPU.1', 'directml' -> 'DML'.

    Unknown names are refused here, with the accepted spellings, rather than by whichever runtime sees them.
    """
    if device is None:
        return AUTO
    if not isinstance(device, str) or not device.strip():
        raise InvalidParameterError(f"device must be a string such as {_spellings()}, got {device!r}.")
    text = device.strip().lower()
    if text == "auto":
        return AUTO
    match = _DEVICE.match(text)
    kind = _ALIASES.get(match["kind"]) if match else None
    if match is None or kind is None:
        raise DeviceNotFoundError(f"Unknown device {device!r}. Use one of {_spellings()}.")
    index = match["index"]
    return f"{kind}{match['sep']}{index.upper()}" if index else kind


def device_kind(device: str) -> str:
    """'GPU.1' -> 'GPU', 'cuda:0' -> 'CUDA', 'auto' -> 'AUTO' (normalising on the way)."""
    return re.split(r"[.:]", normalise_device(device), maxsplit=1)[0]


def kind_info(device: str) -> DeviceKind:
    """The table row of a concrete device ('AUTO' has none: resolve it first)."""
    kind = device_kind(device)
    if kind == AUTO:
        raise InvalidParameterError("device 'auto' has no kind until a backend resolves it to a device.")
    return DEVICE_KINDS[kind]


def export_preset(device: str) -> str:
    """The export preset ('npu', 'gpu', 'cpu') whose weights run on ``device``."""
    return kind_info(device).export_preset


def backends_for(device: str) -> tuple[str, ...]:
    """The backends that can run on ``device`` (every backend for 'auto')."""
    if device_kind(device) == AUTO:
        return tuple(dict.fromkeys(b for kind in DEVICE_KINDS.values() for b in kind.backends))
    return kind_info(device).backends


def default_backend(device: str | None) -> str:
    """The backend used when none is named: the device kind's first backend.

    'auto' means OpenVINO, except on a Windows PC whose only accelerator route is DirectML (no NPU or GPU that
    OpenVINO can use), where ONNX Runtime GenAI on DirectML serves it.
    """
    kind = device_kind(device or AUTO)
    if kind != AUTO:
        return DEVICE_KINDS[kind].backends[0]
    if _is_windows() and not _openvino_accelerator() and _directml_available():
        return "onnx"
    return DEFAULT_BACKEND


def pick_device(requested: str, available: list[str], preference: tuple[str, ...] = AUTO_PREFERENCE) -> str:
    """Resolve ``requested`` (normalised) against the devices a runtime reports, or raise naming the ones present."""
    if requested == AUTO:
        for kind in preference:
            for name in available:
                if _reported_kind(name) == kind:
                    return name
        raise DeviceNotFoundError(f"No usable device found; the runtime reports {available or 'none'}.")
    if requested in available:
        return requested
    if "." not in requested and any(_reported_kind(name) == requested for name in available):
        return requested
    raise DeviceNotFoundError(
        f"Device '{requested}' is not present on this machine. Devices present: {', '.join(available) or 'none'}. "
        f"Pass one of those, or device='auto'."
    )


def _reported_kind(name: str) -> str:
    """The kind of a device name a runtime reported (which may be one this table does not know)."""
    return re.split(r"[.:]", name.strip().upper(), maxsplit=1)[0]


def refuse_kind(device: str, backend: str) -> DeviceNotFoundError:
    """The error for a device kind a backend does not drive, naming the kinds it does and the backends to use."""
    kind = kind_info(device)
    served = [k.name for k in DEVICE_KINDS.values() if backend in k.backends]
    others = [b for b in kind.backends if b != backend]
    use = f"Use backend='{others[0]}' for it" + (f" (or {', '.join(others[1:])})" if others[1:] else "")
    return DeviceNotFoundError(
        f"The {backend} backend runs on the {', '.join(served)} only, not on '{device.lower()}' ({kind.label}). "
        f"{use}."
    )


@functools.cache
def openvino_devices() -> tuple[str, ...]:
    """The devices OpenVINO reports (e.g. 'CPU', 'GPU.0', 'NPU'), asked once per process: creating an OpenVINO
    Core takes milliseconds, and every ``get_engine`` call resolves its device."""
    import openvino as ov

    return tuple(ov.Core().available_devices)


# -- probes for 'auto' on Windows (imports a runtime only when asked) ---------------------------------------------
def _is_windows() -> bool:
    return sys.platform == "win32"


def _openvino_accelerator() -> bool:
    """Whether OpenVINO is installed and sees an NPU or GPU."""
    if importlib.util.find_spec("openvino") is None:
        return False
    return any(_reported_kind(d) in ("NPU", "GPU") for d in openvino_devices())


def _directml_available() -> bool:
    if importlib.util.find_spec("onnxruntime_genai") is None:
        return False
    import onnxruntime_genai as og

    return bool(og.is_dml_available())
