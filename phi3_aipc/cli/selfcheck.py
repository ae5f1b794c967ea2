"""`phi3-aipc doctor --check`: a short real generation on every present device with every installed backend that
serves it, and a report a user can paste into a bug report (machine, devices and drivers, versions, results).

Each check loads the smallest model available offline (the packaged SmolLM2; Phi-3-mini too when its build for the
device is already in the Hugging Face cache), asks one question for a few tokens, and releases the engine.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from phi3_aipc import devices
from phi3_aipc.backends import BACKENDS
from phi3_aipc.bench.machine import machine_info
from phi3_aipc.errors import ModelNotFoundError, Phi3AIPCError

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# Another prompt than QUESTION, so that the measured TTFT is not a prefix-cache hit.
WARM_UP = [{"role": "user", "content": "Hi"}]
NEW_TOKENS = 8
NPU_ON_CPU = {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 256, "MIN_RESPONSE_LEN": 64}
#: The device column of OpenVINO's NPU pipeline run on the CPU (``--npu-on-cpu``): a code path, not an NPU.
NPU_ON_CPU_LABEL = "NPU-on-CPU"
_PACKAGES = (
    "phi3-aipc",
    "openvino",
    "openvino-genai",
    "openvino-tokenizers",
    "onnxruntime-genai",
    "onnxruntime-genai-directml",
    "onnxruntime-genai-cuda",
    "optimum-intel",
    "transformers",
    "torch",
    "intel-npu-acceleration-library",
    "langchain-core",
    "llama-index-core",
    "huggingface_hub",
)
# OpenVINO device properties worth a bug report: names, driver and compiler versions, architectures.
_PROPERTY_WORDS = ("FULL_DEVICE_NAME", "DRIVER", "VERSION", "ARCHITECTURE")
# Where the import that proves a backend is installed differs from BackendInfo.requires.
_BACKEND_MODULES = {"npu-lib": "intel_npu_acceleration_library", "optimum-intel": "optimum"}


@dataclass
class Check:
    """One generation: a model on a device through a backend, and how it went."""

    device: str
    backend: str
    model: str
    #: 'pass', 'fail', or 'skip' (nothing to run there offline, e.g. no checkpoint for transformers).
    status: str = "skip"
    options: dict[str, Any] | None = None
    ready_s: float | None = None
    load_ms: float | None = None
    #: Wall time of a 2-token warm-up generation (first-use costs); TTFT and tokens/s are measured after it.
    warmup_ms: float | None = None
    ttft_ms: float | None = None
    tokens_per_second: float | None = None
    answer: str | None = None
    error: str | None = None


def report(npu_on_cpu: bool = False) -> dict[str, Any]:
    """Everything ``doctor --check`` prints, as one JSON-ready dict."""
    machine = machine_info()
    found = openvino_devices()
    return {
        "system": {
            "os": machine["os"],
            "python": platform.python_version(),
            "cpu": machine["cpu"],
            "logical_cpus": machine["logical_cpus"],
            "memory_gib": machine["memory_gib"],
        },
        "packages": {p: v for p in _PACKAGES if (v := _version(p))},
        "devices": found,
        "checks": [asdict(check) for check in run_checks(found, npu_on_cpu)],
    }


def openvino_devices() -> list[dict[str, Any]]:
    """The devices OpenVINO reports, with their names and driver/compiler versions (empty without OpenVINO)."""
    if importlib.util.find_spec("openvino") is None:
        return []
    import openvino as ov

    core = ov.Core()
    found = []
    for name in core.available_devices:
        entry: dict[str, Any] = {"device": name}
        try:
            supported = core.get_property(name, "SUPPORTED_PROPERTIES")
        except RuntimeError as exc:
            found.append({**entry, "error": str(exc).strip().splitlines()[-1][:200]})
            continue
        for prop in supported:
            if any(word in prop for word in _PROPERTY_WORDS):
                try:
                    entry[prop] = str(core.get_property(name, prop))
                except RuntimeError as exc:  # a driver may list a property it cannot report
                    entry[prop] = f"unreadable: {str(exc).strip().splitlines()[-1][:120]}"
        found.append(entry)
    return found


def run_checks(found: list[dict[str, Any]], npu_on_cpu: bool) -> list[Check]:
    checks = []
    for device, backend, options in _targets(found, npu_on_cpu):
        for model in _models(device):
            checks.append(_check(device, backend, model, options))
    return checks


def _targets(found: list[dict[str, Any]], npu_on_cpu: bool) -> list[tuple[str, str, dict[str, Any] | None]]:
    """(device, backend, options) for every present device and every installed backend that serves it."""
    present = [entry["device"] for entry in found] or ["CPU"]
    present += _onnx_devices()
    targets: list[tuple[str, str, dict[str, Any] | None]] = []
    for device in dict.fromkeys(present):
        kind = devices.device_kind(device)
        for backend in devices.DEVICE_KINDS[kind].backends:
            if _installed(backend):
                targets.append((device, backend, None))
    if npu_on_cpu and "NPU" not in present and _installed("openvino"):
        targets.append(("NPU", "openvino", NPU_ON_CPU))
    return targets


def _onnx_devices() -> list[str]:
    if importlib.util.find_spec("onnxruntime_genai") is None:
        return []
    import onnxruntime_genai as og

    return [name for name, ok in (("DML", og.is_dml_available()), ("CUDA", og.is_cuda_available())) if ok]


def _installed(backend: str) -> bool:
    module = _BACKEND_MODULES.get(backend, BACKENDS[backend].requires)
    return importlib.util.find_spec(module) is not None


def _models(device: str) -> list[str]:
    """The packaged SmolLM2 (if installed), and Phi-3-mini when its build for ``device`` is already cached."""
    from phi3_aipc.models import smollm2_gguf

    models = []
    try:
        smollm2_gguf()
        models.append("smollm2")
    except ModelNotFoundError:
        pass
    if _phi3_cached(device):
        models.append("phi-3-mini")
    return models or ["smollm2"]  # its check then says how to install it


def _phi3_cached(device: str) -> bool:
    from huggingface_hub import snapshot_download

    from phi3_aipc.models.catalogue import find

    known = find("phi-3-mini")
    kind = devices.device_kind(device)
    build = known.builds.get(("openvino-ir", kind)) if known else None
    if build is None:
        return False
    try:
        snapshot_download(build[0], local_files_only=True)
    except Exception:  # noqa: BLE001 - any miss means: not cached, so not checked
        return False
    return True


def _check(device: str, backend: str, model: str, options: dict[str, Any] | None) -> Check:
    from phi3_aipc.engine import get_engine, release_engine
    from phi3_aipc.params import GenerationParams

    label = NPU_ON_CPU_LABEL if options == NPU_ON_CPU else device
    check = Check(label, backend, model, options=options)
    print(f"checking {model} on {label} with {backend}...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        engine = get_engine(model, device, backend, options)
    except ModelNotFoundError as exc:
        check.error = _first_line(exc)
        return check  # skip: nothing this backend can run offline
    except Exception as exc:  # noqa: BLE001 - the report is where a failure goes
        check.status, check.error = "fail", _first_line(exc)
        return check
    check.ready_s = round(time.perf_counter() - started, 2)
    try:
        # OpenVINO prepares its kernels for each new input shape on first use (on the CPU about a second for the
        # first decoding step): a short warm-up keeps that out of the measured TTFT and tokens/s.
        started = time.perf_counter()
        engine.generate(WARM_UP, GenerationParams(max_new_tokens=2))
        check.warmup_ms = _round((time.perf_counter() - started) * 1000)
        result = engine.generate(QUESTION, GenerationParams(max_new_tokens=NEW_TOKENS))
    except Exception as exc:  # noqa: BLE001
        check.status, check.error = "fail", _first_line(exc)
        return check
    finally:
        release_engine(engine)
    timings = result.timings
    check.status = "pass" if result.completion_tokens > 0 else "fail"
    check.load_ms = _round(engine.load_ms)
    check.ttft_ms = _round(timings.ttft_ms)
    check.tokens_per_second = _round(timings.tokens_per_second, 1)
    check.answer = result.text.strip()[:80]
    return check


def format_report(data: dict[str, Any]) -> str:
    system = data["system"]
    lines = [
        "phi3-aipc doctor --check (paste this into an issue)",
        f"System: {system['os']}, Python {system['python']}, CPU {system['cpu']} "
        f"({system['logical_cpus']} logical), {system['memory_gib'] or '?'} GiB RAM",
        "Packages: " + ", ".join(f"{p} {v}" for p, v in data["packages"].items()),
        "Devices (OpenVINO):",
    ]
    for entry in data["devices"] or [{"device": "none (OpenVINO is not installed)"}]:
        details = ", ".join(f"{k}={v}" for k, v in entry.items() if k != "device")
        lines.append(f"  {entry['device']}: {details}")
    lines.append(
        f"Checks ({NEW_TOKENS} new tokens, greedy, after a 2-token warm-up; skip = no model this backend can run offline; "
        f"{NPU_ON_CPU_LABEL} = OpenVINO's NPU pipeline executed on the CPU):"
    )
    lines.extend(_table(data["checks"]))
    return "\n".join(lines)


#: The report's columns: heading, the check's field, and whether the column is numeric (right-aligned).
COLUMNS = (
    ("result", "status", False),
    ("device", "device", False),
    ("backend", "backend", False),
    ("model", "model", False),
    ("load ms", "load_ms", True),
    ("TTFT ms", "ttft_ms", True),
    ("tok/s", "tokens_per_second", True),
)


def _table(checks: list[dict[str, Any]]) -> list[str]:
    """One aligned row per check, each column as wide as its widest cell; the detail (the answer, or the whole
    error with its advice) comes last, uncut, so a pasted report says everything the JSON form says."""
    cells = [[_text(c[field]) for _, field, _ in COLUMNS] for c in checks]
    widths = [max([len(head)] + [len(row[i]) for row in cells]) for i, (head, _, _) in enumerate(COLUMNS)]

    def line(values: list[str], detail: str) -> str:
        padded = [
            v.rjust(w) if numeric else v.ljust(w)
            for v, w, (_, _, numeric) in zip(values, widths, COLUMNS, strict=True)
        ]
        return "  " + "  ".join([*padded, detail])

    rows = [line([head for head, _, _ in COLUMNS], "detail")]
    for c, row in zip(checks, cells, strict=True):
        rows.append(line(row, c["error"] if c["error"] else repr(c["answer"])))
    return rows


def _text(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # phi3-aipc's own messages are written to be read whole; a runtime's last line is usually the cause.
    line = text if isinstance(exc, Phi3AIPCError) else (text.splitlines() or [""])[-1]
    return f"{type(exc).__name__}: {line[:400]}"


def _round(value: float | None, digits: int = 0) -> float | None:
    return round(value, digits) if value is not None else None
