"""`phi3-aipc doctor`: devices, installed backends, and what device='auto' would pick."""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import sys

from phi3_aipc.backends import BACKENDS
from phi3_aipc.devices import DEVICE_KINDS, pick_device
from phi3_aipc.errors import InvalidParameterError, Phi3AIPCError, install_hint
from phi3_aipc.paths import cache_root

ONNX_BUILDS = ("onnxruntime-genai", "onnxruntime-genai-directml", "onnxruntime-genai-cuda")
HELP = (
    "Show the devices, the installed backends with their versions, and what device='auto' chooses; --check also "
    "runs a short generation on each device and backend and prints a report to paste into a bug report."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check",
        action="store_true",
        help="Run a short generation (the packaged SmolLM2, and Phi-3-mini when cached) on every present device "
        "with every installed backend; report OS, CPU, devices and drivers, versions, pass/fail, load time, TTFT, "
        "tokens/s and errors.",
    )
    parser.add_argument("--json", action="store_true", help="With --check: print the report as JSON.")
    parser.add_argument(
        "--npu-on-cpu",
        action="store_true",
        help="With --check on a machine without an NPU: also run OpenVINO's NPU pipeline on the CPU "
        "(NPUW_DEVICES=CPU), a check of that code path, not of an NPU.",
    )


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


def onnx_genai_report() -> list[str]:
    """The onnxruntime-genai builds installed and the execution providers the importable one has."""
    builds = [f"{p} {v}" for p in ONNX_BUILDS if (v := _version(p))]
    if not builds:
        return [
            f"ONNX Runtime GenAI: not installed ({install_hint('onnx')}; DirectML on Windows: "
            "`pip install onnxruntime-genai-directml`)"
        ]
    lines = [f"ONNX Runtime GenAI builds: {', '.join(builds)}"]
    if len(builds) > 1:
        lines.append(
            "  Warning: these packages share the 'onnxruntime_genai' module and overwrite each other; keep one "
            "(pip uninstall the others, then reinstall the one you want)."
        )
    try:
        import onnxruntime_genai as og
    except ImportError as exc:
        return [*lines, f"  onnxruntime_genai does not import: {exc}"]
    providers = ["CPU"] + [
        name for name, ok in (("DirectML", og.is_dml_available()), ("CUDA", og.is_cuda_available())) if ok
    ]
    lines.append(f"  execution providers: {', '.join(providers)}")
    if sys.platform == "win32" and "DirectML" not in providers:
        lines.append(
            "  DirectML (any DirectX 12 GPU) needs onnxruntime-genai-directml in place of the CPU build."
        )
    return lines


def run(args: argparse.Namespace) -> int:
    if args.check:
        return _run_check(args)
    if args.json or args.npu_on_cpu:
        raise InvalidParameterError(
            "--json and --npu-on-cpu go with --check: phi3-aipc doctor --check --json"
        )
    print("Backends:")
    for info in BACKENDS.values():
        # The onnx backend is served by whichever one of its builds (CPU, DirectML, CUDA) is installed.
        packages = ONNX_BUILDS if info.name == "onnx" else (info.package,)
        found = next((f"{p} {v}" for p in packages if (v := _version(p))), None)
        state = found or f"not installed: {install_hint(info.extra)}"
        print(f"  {info.name:<14} {state}   devices: {info.devices}")
    print("Device kinds (device=...):")
    for kind in DEVICE_KINDS.values():
        spellings = ", ".join(dict.fromkeys((kind.name.lower(), *kind.aliases)))
        print(
            f"  {spellings:<14} {kind.label}; backends: {', '.join(kind.backends)} (default {kind.backends[0]})"
        )
    devices = openvino_devices()
    print("OpenVINO devices:", ", ".join(devices) if devices else "unknown (OpenVINO is not installed)")
    if devices:
        names = [d.split(" ", 1)[0] for d in devices]
        try:
            print(f"device='auto' picks: {pick_device('AUTO', names)} (order: NPU, GPU, CPU)")
        except Phi3AIPCError as exc:
            print(f"device='auto' cannot pick: {exc}")
        if "NPU" not in names:
            print(
                "No NPU found. On Core Ultra laptops install the Intel NPU driver (see docs/ai-pc-setup.md in the source tree), "
                "then run `phi3-aipc doctor --check`."
            )
    for line in onnx_genai_report():
        print(line)
    print(f"Cache (compiled models, exports): {cache_root()}")
    print("Run `phi3-aipc doctor --check` to try a short generation on every device.")
    return 0


def _run_check(args: argparse.Namespace) -> int:
    from phi3_aipc.cli.selfcheck import format_report, report

    data = report(npu_on_cpu=args.npu_on_cpu)
    print(json.dumps(data, indent=2) if args.json else format_report(data))
    return 1 if any(check["status"] == "fail" for check in data["checks"]) else 0
