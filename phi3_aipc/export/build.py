"""Export a Hugging Face checkpoint for a device: OpenVINO IR (optimum-intel + NNCF) or ONNX Runtime GenAI.

Each device gets a preset that fits it:

- NPU: symmetric INT4, channel-wise (``group_size=-1``, the default) or group 128. The NPU pipeline rejects
  anything else, so asymmetric weights or other precisions are refused here, before minutes of export.
- GPU: the Phi-3 AI PC recipe's ``int4 --group-size 128 --ratio 0.6 --sym``; int8, fp16 and fp32 are allowed.
- CPU: int8 (default) or int4 (symmetric, group 128); fp16 and fp32 are allowed.

The exporters are the libraries' own (``phi3_aipc.convert.export_openvino`` over optimum-intel, and the
onnxruntime-genai model builder); this module only picks their options, shows progress, checks the tokenizer
and writes a manifest recording how the folder was made. ``auto_export`` does the same into the user cache, keyed
by source and options, so a backend given a checkpoint folder exports it once and reuses it afterwards.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from phi3_aipc import models
from phi3_aipc.errors import InvalidParameterError, ModelNotFoundError, Phi3AIPCError
from phi3_aipc.paths import cache_root

__all__ = [
    "DEVICES",
    "MANIFEST_NAME",
    "PRECISIONS",
    "TARGETS",
    "ExportError",
    "ExportPlan",
    "auto_export",
    "export_model",
    "plan_export",
    "read_manifest",
]

log = logging.getLogger(__name__)

TARGETS = ("openvino", "onnx")
PRECISIONS = ("int4", "int8", "fp16", "fp32")
DEVICES = ("npu", "gpu", "cpu")
MANIFEST_NAME = "phi3_aipc_export.json"
#: Bump when the layout of an export changes, so auto-export caches made by older versions are not reused.
MANIFEST_FORMAT = 1

_DEFAULT_PRECISION = {"npu": "int4", "gpu": "int4", "cpu": "int8"}
# int4 defaults per device: (sym, group_size, ratio). GPU is the Phi-3 AI PC recipe; NPU is what it accepts.
_INT4_DEFAULTS = {"npu": (True, -1, 1.0), "gpu": (True, 128, 0.6), "cpu": (True, 128, 1.0)}
_NPU_GROUP_SIZES = (-1, 128)
_ONNX_PROVIDER = {"gpu": "dml", "cpu": "cpu"}
_VERSIONED_PACKAGES = (
    "optimum-intel",
    "optimum",
    "nncf",
    "openvino",
    "openvino-tokenizers",
    "onnxruntime-genai",
    "transformers",
    "torch",
)


class ExportError(Phi3AIPCError, RuntimeError):
    """An export ran but its result is unusable (e.g. the tokenizer IR is missing)."""


@dataclass(frozen=True)
class ExportPlan:
    """Validated export options: the format, the device it is for, and the weight compression."""

    to: str
    device: str
    precision: str
    sym: bool | None = None
    group_size: int | None = None
    ratio: float | None = None
    #: NNCF's answer to a layer the int4 group size does not divide: "adjust" (a smaller power-of-two group) on
    #: the GPU and CPU; on the NPU, which takes only group 128 or channel-wise, such a model is an error.
    group_size_fallback: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        extras = []
        if self.sym is not None:
            extras.append("sym" if self.sym else "asym")
        if self.group_size is not None:
            extras.append("channel-wise" if self.group_size == -1 else f"group {self.group_size}")
        if self.ratio is not None and self.precision == "int4":
            extras.append(f"ratio {self.ratio:g}")
        detail = f" ({', '.join(extras)})" if extras else ""
        return f"{self.to} {self.precision}{detail} for the {self.device.upper()}"


# -- presets -----------------------------------------------------------------------------------------------------
def plan_export(
    to: str = "openvino",
    device: str = "cpu",
    precision: str | None = None,
    *,
    sym: bool | None = None,
    group_size: int | None = None,
    ratio: float | None = None,
) -> ExportPlan:
    """Fill in the device preset and refuse combinations the device cannot run, with a message saying what to do."""
    to = _choice("--to", to, TARGETS)
    device = _choice("--for", device, DEVICES)
    if precision is not None:
        precision = _choice("--precision", precision, PRECISIONS)
    if to == "onnx":
        return _onnx_plan(device, precision, sym, group_size, ratio)
    precision = precision or _DEFAULT_PRECISION[device]
    if device == "npu":
        _check_npu(precision, sym, group_size)
    if precision in ("fp16", "fp32"):
        _no_compression_options(precision, sym, group_size, ratio)
        return ExportPlan(to, device, precision)
    if precision == "int8":
        if group_size not in (None, -1) or ratio is not None:
            raise InvalidParameterError(
                "int8 weights are always channel-wise over every layer: drop --group-size and --ratio, "
                "or use --precision int4."
            )
        return ExportPlan(to, device, precision, sym=bool(sym), group_size=-1)
    default_sym, default_group, default_ratio = _INT4_DEFAULTS[device]
    group_size = default_group if group_size is None else _check_group_size(group_size)
    ratio = default_ratio if ratio is None else _check_ratio(ratio)
    fallback = "adjust" if device != "npu" and group_size > 0 else None
    return ExportPlan(
        to,
        device,
        precision,
        sym=default_sym if sym is None else sym,
        group_size=group_size,
        ratio=ratio,
        group_size_fallback=fallback,
    )


def _choice(flag: str, value: Any, allowed: tuple[str, ...]) -> str:
    text = str(value).strip().lower() if value is not None else ""
    if text not in allowed:
        raise InvalidParameterError(f"Unknown {flag} value {value!r}: choose one of {', '.join(allowed)}.")
    return text


def _check_npu(precision: str, sym: bool | None, group_size: int | None) -> None:
    hint = "Use: --precision int4 --for npu (symmetric, channel-wise by default, or --group-size 128)."
    if precision != "int4":
        raise InvalidParameterError(
            f"The NPU pipeline needs symmetric INT4 weights; --precision {precision} does not fit the NPU. {hint}"
        )
    if sym is False:
        raise InvalidParameterError(
            f"The NPU needs symmetric INT4 weights; asymmetric int4 does not run there. {hint}"
        )
    if group_size is not None and group_size not in _NPU_GROUP_SIZES:
        raise InvalidParameterError(
            f"The NPU takes INT4 channel-wise (--group-size -1) or group 128, not group {group_size}. {hint}"
        )


def _check_group_size(group_size: Any) -> int:
    if (
        isinstance(group_size, bool)
        or not isinstance(group_size, int)
        or (group_size < 1 and group_size != -1)
    ):
        raise InvalidParameterError(
            f"--group-size must be a positive integer (e.g. 128) or -1 for channel-wise, got {group_size!r}."
        )
    return group_size


def _check_ratio(ratio: Any) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise InvalidParameterError(
            f"--ratio is the share of layers in int4 (the rest int8): a number in (0, 1], got {ratio!r}."
        )
    return float(ratio)


def _given_compression_options(sym: bool | None, group_size: int | None, ratio: float | None) -> list[str]:
    """The compression flags the user set, named as on the command line."""
    flags = (("--sym/--asym", sym), ("--group-size", group_size), ("--ratio", ratio))
    return [name for name, value in flags if value is not None]


def _no_compression_options(
    precision: str, sym: bool | None, group_size: int | None, ratio: float | None
) -> None:
    given = _given_compression_options(sym, group_size, ratio)
    if given:
        raise InvalidParameterError(
            f"{', '.join(given)} only apply to int4/int8 weight compression, not --precision {precision}: drop them."
        )


def _onnx_plan(
    device: str, precision: str | None, sym: bool | None, group_size: int | None, ratio: float | None
) -> ExportPlan:
    if device == "npu":
        raise InvalidParameterError(
            "The ONNX Runtime GenAI builder has no Intel NPU target. For the NPU use: --to openvino --for npu."
        )
    given = _given_compression_options(sym, group_size, ratio)
    if given:
        raise InvalidParameterError(
            f"{', '.join(given)} apply to --to openvino only; the ONNX Runtime GenAI builder picks its own "
            "quantisation blocks. Drop them."
        )
    from phi3_aipc.convert_onnx import SUPPORTED

    provider = _ONNX_PROVIDER[device]
    precision = precision or "int4"
    if (precision, provider) not in SUPPORTED:
        fits = sorted(p for p, e in SUPPORTED if e == provider)
        raise InvalidParameterError(
            f"The ONNX Runtime GenAI builder makes no {precision} model for the {device.upper()} ({provider}); "
            f"use --precision {' or '.join(fits)}, or --to openvino."
        )
    return ExportPlan("onnx", device, precision)


# -- export ------------------------------------------------------------------------------------------------------
def export_model(
    model: str | Path,
    out: str | Path,
    *,
    to: str = "openvino",
    device: str = "cpu",
    precision: str | None = None,
    sym: bool | None = None,
    group_size: int | None = None,
    ratio: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Export ``model`` (HF repo id or local checkpoint folder) to ``out`` for ``device``; returns ``out``.

    The export is built in a temporary sibling folder and moved into place when complete, so an interrupted
    export never leaves a folder that looks usable.
    """
    plan = plan_export(to, device, precision, sym=sym, group_size=group_size, ratio=ratio)
    source = resolve_source(model)
    out = Path(out).expanduser().resolve()
    _check_out(out, source, overwrite)
    return _build(str(model), source, out, plan, progress, replace=True)


def resolve_source(model: str | Path) -> Path:
    """A local HF checkpoint folder for ``model``: the folder itself, or a Hub snapshot of the repo id."""
    model_id = models.canonical_model_id(str(model))
    path = models.local_path(model_id)
    if path is None:
        if not models.is_repo_id(model_id):
            raise ModelNotFoundError(f"'{model}' is neither a local folder nor a Hugging Face repo id.")
        path = models.fetch_from_hub(model_id, what="the Hugging Face checkpoint")
    if not (path.is_dir() and (path / "config.json").is_file()):
        raise ModelNotFoundError(
            f"'{path}' is not a Hugging Face checkpoint folder (no config.json). Export needs the original "
            "checkpoint: a folder with config.json, the weights and the tokenizer files, or its Hub repo id."
        )
    return path


def _check_out(out: Path, source: Path, overwrite: bool) -> None:
    if out == source or source in out.parents:
        raise InvalidParameterError(f"Write the export outside the source folder '{source}'.")
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not (out / MANIFEST_NAME).is_file():
        raise InvalidParameterError(
            f"'{out}' exists and is not an empty folder or an earlier phi3-aipc export: choose a new folder."
        )
    if not overwrite:
        raise InvalidParameterError(f"'{out}' already holds an export. Pass --force to replace it.")


def _build(model_arg: str, source: Path, out: Path, plan: ExportPlan, progress: bool, replace: bool) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    steps = _steps(plan)
    started = time.perf_counter()
    try:
        with _progress(len(steps), f"Exporting {plan.describe()}", progress) as bar:
            for label, step in steps:
                bar.set_postfix_str(label)
                step(source, staging, plan)
                bar.update(1)
        _write_manifest(staging, model_arg, source, plan, time.perf_counter() - started)
        _move_into_place(staging, out, replace=replace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _steps(plan: ExportPlan) -> list[tuple[str, Callable[[Path, Path, ExportPlan], None]]]:
    if plan.to == "onnx":
        return [
            ("onnxruntime-genai model builder", _run_onnx_builder),
            ("check tokenizer", _check_onnx_output),
        ]
    return [("optimum-intel export", _run_openvino_export), ("check tokenizer IR", _check_openvino_tokenizer)]


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_postfix_str(self, text: str) -> None:
        log.info("%s", text)

    def update(self, n: int) -> None:
        return None


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    # The exporters print their own bars (NNCF's compression, the ONNX builder's layers) inside each step.
    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr)


def _run_openvino_export(source: Path, staging: Path, plan: ExportPlan) -> None:
    from phi3_aipc.convert import export_openvino

    try:
        export_openvino(
            source,
            staging,
            weight_format=plan.precision,  # type: ignore[arg-type]
            sym=bool(plan.sym),
            group_size=plan.group_size,
            ratio=plan.ratio,
            group_size_fallback=plan.group_size_fallback,
        )
    except Exception as exc:
        if type(exc).__name__ != "InvalidGroupSizeError":  # nncf.errors, without importing nncf here
            raise
        first_line = str(exc).splitlines()[0]
        raise InvalidParameterError(
            f"{first_line} Some of this model's layer sizes are not multiples of {plan.group_size}. "
            + (
                "For the NPU use channel-wise int4: --group-size -1 (the NPU preset's default)."
                if plan.device == "npu"
                else "Use --group-size -1 (channel-wise) or a group size that divides the layer sizes."
            )
        ) from exc


def _check_openvino_tokenizer(source: Path, staging: Path, plan: ExportPlan) -> None:
    """The tokenizer IR must exist and round-trip a sample; without it OpenVINO GenAI cannot take text."""
    from phi3_aipc.convert import OV_DETOKENIZER, OV_TOKENIZER

    missing = [name for name in (OV_TOKENIZER, OV_DETOKENIZER) if not (staging / name).is_file()]
    if missing:
        raise ExportError(
            f"The export of '{source}' has no {' or '.join(missing)}, so OpenVINO GenAI could not tokenize text. "
            "Check that the folder's tokenizer loads with transformers.AutoTokenizer and that openvino-tokenizers "
            "matches the installed openvino version."
        )
    # Plain OpenVINO + openvino_tokenizers (both needed to export anyway), so no openvino-genai is required.
    import openvino as ov
    import openvino_tokenizers  # noqa: F401 - registers the tokenizer operations with OpenVINO

    core = ov.Core()
    sample = "Hello, AI PC!"
    ids = core.compile_model(staging / OV_TOKENIZER, "CPU")([sample])["input_ids"]
    decoded = str(core.compile_model(staging / OV_DETOKENIZER, "CPU")(ids)[0][0]) if ids.size else ""
    if not decoded.strip():
        raise ExportError(
            f"The tokenizer IR written for '{source}' turns {sample!r} into {ids} and back into {decoded!r}: "
            "OpenVINO GenAI would produce no text. Report this with the model's tokenizer files."
        )
    if decoded.strip() != sample:
        # Some tokenizers normalise text (lower-casing, Unicode forms): worth a note, not a failed export.
        log.warning("The tokenizer IR decodes %r as %r.", sample, decoded)


def _run_onnx_builder(source: Path, staging: Path, plan: ExportPlan) -> None:
    from phi3_aipc.convert_onnx import export_onnx

    export_onnx(source, staging, plan.precision, _ONNX_PROVIDER[plan.device])  # type: ignore[arg-type]


def _check_onnx_output(source: Path, staging: Path, plan: ExportPlan) -> None:
    missing = [name for name in ("genai_config.json", "tokenizer.json") if not (staging / name).is_file()]
    if missing or not list(staging.glob("*.onnx")):
        raise ExportError(
            f"The ONNX export of '{source}' is incomplete (missing: {', '.join(missing) or '*.onnx'}); "
            "ONNX Runtime GenAI could not load it. Check the builder's output above."
        )


def _move_into_place(staging: Path, out: Path, *, replace: bool) -> None:
    if replace and out.exists():
        # Only an empty folder or an earlier export of ours gets here (see _check_out).
        shutil.rmtree(out)
    try:
        os.replace(staging, out)
    except OSError:
        # Another process finished the same auto-export first: keep theirs.
        if not (out / MANIFEST_NAME).is_file():
            raise


# -- manifest ----------------------------------------------------------------------------------------------------
def _write_manifest(staging: Path, model_arg: str, source: Path, plan: ExportPlan, seconds: float) -> None:
    files = {p.name: p.stat().st_size for p in sorted(staging.iterdir()) if p.is_file()}
    manifest = {
        "format": MANIFEST_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"model": model_arg, "path": str(source), "fingerprint": source_fingerprint(source)},
        "options": plan.as_dict(),
        "versions": _versions(),
        "weight_types": _weight_types(staging, plan),
        "export_seconds": round(seconds, 2),
        "size_bytes": sum(files.values()),
        "files": files,
    }
    (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")


def _weight_types(staging: Path, plan: ExportPlan) -> dict[str, int]:
    """How many 2-D+ constants (weights, scales) the IR stores per element type: what compression really did."""
    if plan.to != "openvino":
        return {}
    import openvino as ov

    model = ov.Core().read_model(staging / "openvino_model.xml")
    counts: dict[str, int] = {}
    for op in model.get_ops():
        shape = op.get_output_partial_shape(0) if op.get_type_name() == "Constant" else None
        if shape is not None and shape.rank.is_static and shape.rank.get_length() >= 2:
            name = op.get_output_element_type(0).get_type_name()
            counts[name] = counts.get(name, 0) + 1
    if plan.precision == "int4" and not counts.get("i4") and not counts.get("u4"):
        # NNCF leaves layers whose input size is not a multiple of the group size at the backup precision.
        log.warning(
            "No layer was compressed to int4 (group size %s does not divide this model's layer sizes); the "
            "weights are int8. Try --group-size -1 (channel-wise) or a group size that divides the hidden size.",
            plan.group_size,
        )
    return dict(sorted(counts.items()))


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of an export folder; raises ModelNotFoundError when the folder is not a phi3-aipc export."""
    path = Path(folder) / MANIFEST_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelNotFoundError(
            f"'{folder}' has no {MANIFEST_NAME}: it was not made by phi3-aipc export."
        ) from None


def _versions() -> dict[str, str]:
    found = {}
    for package in ("phi3-aipc", *_VERSIONED_PACKAGES):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def source_fingerprint(source: Path) -> str:
    """Names, sizes and modification times of the checkpoint's files: cheap, and changes when a file does."""
    digest = hashlib.sha256()
    for path in sorted(source.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(source).parts):
            stat = path.stat()
            digest.update(f"{path.relative_to(source)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# -- auto-export -------------------------------------------------------------------------------------------------
def exports_dir() -> Path:
    return cache_root() / "exports"


def auto_export_path(source: Path, plan: ExportPlan) -> Path:
    """Where ``source`` exported with ``plan`` is cached: keyed by its path, its files' fingerprint and the plan."""
    source = source.resolve()
    key_text = json.dumps(
        {
            "format": MANIFEST_FORMAT,
            "source": str(source),
            "files": source_fingerprint(source),
            "plan": plan.as_dict(),
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    return exports_dir() / plan.to / f"{source.name}-{plan.precision}-{plan.device}-{key}"


def auto_export(hf_dir: str | Path, device: str, *, to: str = "openvino", progress: bool = True) -> Path:
    """Export a checkpoint folder with ``device``'s preset into the user cache once; later calls reuse it."""
    source = resolve_source(str(hf_dir))
    kind = device.split(".", 1)[0].lower()
    plan = plan_export(to, kind if kind in DEVICES else "cpu")
    target = auto_export_path(source, plan)
    if (target / MANIFEST_NAME).is_file():
        return target
    log.warning("Exporting %s to %s once; later loads reuse %s.", source, plan.describe(), target)
    return _build(str(hf_dir), source, target, plan, progress, replace=False)
