"""`phi3-aipc doctor`: devices, installed backends, and what device='auto' would pick."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util

from phi3_aipc.backends import BACKENDS
from phi3_aipc.devices import pick_device
from phi3_aipc.errors import Phi3AIPCError
from phi3_aipc.paths import cache_root

HELP = "Show the devices, the installed backends with their versions, and what device='auto' chooses."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def openvino_devices() -> list[str] | None:
    if importlib.util.find_spec("openvino") is None:
        return None
    import openvino as ov

    core = ov.Core()
    return [f"{d} ({core.get_property(d, 'FULL_DEVICE_NAME')})" for d in core.available_devices]


def run(args: argparse.Namespace) -> int:
    print("Backends:")
    for info in BACKENDS.values():
        version = _version(info.package)
        state = (
            f"{info.package} {version}"
            if version
            else f"not installed: pip install 'phi3-aipc[{info.extra}]'"
        )
        print(f"  {info.name:<14} {state}   devices: {info.devices}")
    devices = openvino_devices()
    print("OpenVINO devices:", ", ".join(devices) if devices else "unknown (OpenVINO is not installed)")
    if devices:
        names = [d.split(" ", 1)[0] for d in devices]
        try:
            print(f"device='auto' picks: {pick_device('AUTO', names)} (order: NPU, GPU, CPU)")
        except Phi3AIPCError as exc:
            print(f"device='auto' cannot pick: {exc}")
        if "NPU" not in names:
            print("No NPU found. On Core Ultra laptops install the Intel NPU driver; see the README.")
    print(f"Cache (compiled models, exports): {cache_root()}")
    return 0
