"""Export presets: which weights fit which device, and the validated plan an export runs.

- NPU: symmetric INT4, channel-wise (``group_size=-1``, the default) or group 128. The NPU pipeline rejects
  anything else, so asymmetric weights or other precisions are refused here, before minutes of export.
- GPU: the Phi-3 AI PC recipe's ``int4 --group-size 128 --ratio 0.6 --sym``; int8, fp16 and fp32 are allowed.
- CPU: int8 (default) or int4 (symmetric, group 128); fp16 and fp32 are allowed.
- ONNX: the onnxruntime-genai builder's precisions for the execution provider the device uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from phi3_aipc.errors import InvalidParameterError

TARGETS = ("openvino", "onnx")
PRECISIONS = ("int4", "int8", "fp16", "fp32")
#: Export presets (``--for``); a device's preset comes from ``phi3_aipc.devices``.
DEVICES = ("npu", "gpu", "cpu")

_DEFAULT_PRECISION = {"npu": "int4", "gpu": "int4", "cpu": "int8"}
# int4 defaults per device: (sym, group_size, ratio). GPU is the Phi-3 AI PC recipe; NPU is what it accepts.
# CPU, measured (docs/cpu-decode.md): channel-wise int4 decodes Phi-3-mini 8-15% faster than group 128, but raised
# SmolLM2's perplexity 1.31x over group 128's, so the CPU keeps int8 by default and group 128 for int4;
# --group-size -1 is the opt-in for speed.
_INT4_DEFAULTS = {"npu": (True, -1, 1.0), "gpu": (True, 128, 0.6), "cpu": (True, 128, 1.0)}
_NPU_GROUP_SIZES = (-1, 128)
# The ONNX execution provider a preset builds for when none is named (a GPU preset means DirectML, as on Windows).
_ONNX_PROVIDER = {"gpu": "dml", "cpu": "cpu"}
_ONNX_PROVIDERS = ("cpu", "dml", "cuda")


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
    #: ONNX only: the execution provider the builder tunes the model for ('cpu', 'dml', 'cuda').
    provider: str | None = None

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
        if self.provider is not None:
            extras.append(self.provider)
        detail = f" ({', '.join(extras)})" if extras else ""
        return f"{self.to} {self.precision}{detail} for the {self.device.upper()}"


def plan_export(
    to: str = "openvino",
    device: str = "cpu",
    precision: str | None = None,
    *,
    sym: bool | None = None,
    group_size: int | None = None,
    ratio: float | None = None,
    provider: str | None = None,
) -> ExportPlan:
    """Fill in the device preset and refuse combinations the device cannot run, with a message saying what to do."""
    to = _choice("--to", to, TARGETS)
    device = _choice("--for", device, DEVICES)
    if precision is not None:
        precision = _choice("--precision", precision, PRECISIONS)
    if to == "onnx":
        return _onnx_plan(device, precision, sym, group_size, ratio, provider)
    if provider is not None:
        raise InvalidParameterError("An execution provider applies to --to onnx only; drop it for OpenVINO.")
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
    device: str,
    precision: str | None,
    sym: bool | None,
    group_size: int | None,
    ratio: float | None,
    provider: str | None,
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
    from phi3_aipc.export.onnx import SUPPORTED

    provider = (
        _choice("execution provider", provider, _ONNX_PROVIDERS) if provider else _ONNX_PROVIDER[device]
    )
    precision = precision or "int4"
    if (precision, provider) not in SUPPORTED:
        fits = sorted(p for p, e in SUPPORTED if e == provider)
        raise InvalidParameterError(
            f"The ONNX Runtime GenAI builder makes no {precision} model for the {device.upper()} ({provider}); "
            f"use --precision {' or '.join(fits)}, or --to openvino."
        )
    return ExportPlan("onnx", device, precision, provider=provider)
