"""Device names: what the user may write, and what 'auto' picks."""

from __future__ import annotations

from phi3_aipc.errors import DeviceNotFoundError, InvalidParameterError

AUTO_PREFERENCE = ("NPU", "GPU", "CPU")
GENERIC_DEVICES = ("auto", "npu", "gpu", "cpu")


def normalise_device(device: str | None) -> str:
    """'npu' -> 'NPU', 'gpu.1' -> 'GPU.1', None/'auto' -> 'AUTO'. Other names pass through upper-cased."""
    if device is None:
        return "AUTO"
    if not isinstance(device, str) or not device.strip():
        raise InvalidParameterError(
            f"device must be a string such as 'auto', 'npu', 'gpu', 'cpu' or 'GPU.1', got {device!r}."
        )
    return device.strip().upper()


def device_kind(device: str) -> str:
    """'GPU.1' -> 'GPU'."""
    return device.split(".", 1)[0].upper()


def pick_device(requested: str, available: list[str], preference: tuple[str, ...] = AUTO_PREFERENCE) -> str:
    """Resolve ``requested`` against the devices a runtime reports, or raise naming the ones present."""
    if requested == "AUTO":
        for kind in preference:
            for name in available:
                if device_kind(name) == kind:
                    return name
        raise DeviceNotFoundError(f"No usable device found; the runtime reports {available or 'none'}.")
    if requested in available:
        return requested
    if "." not in requested and any(device_kind(name) == requested for name in available):
        return requested
    raise DeviceNotFoundError(
        f"Device '{requested}' is not present on this machine. Devices present: {', '.join(available) or 'none'}. "
        f"Pass one of those, or device='auto'."
    )
