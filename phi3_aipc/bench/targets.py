"""What a benchmark measures: the targets (model, device, backend, options) and the settings every target shares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from phi3_aipc.backends.options import route
from phi3_aipc.devices import device_kind, normalise_device
from phi3_aipc.errors import InvalidParameterError


@dataclass(frozen=True)
class Target:
    """One thing to measure: a model on a device through a backend, with its options."""

    model: str
    device: str = "cpu"
    backend: str = "openvino"
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        extra = "".join(f" {k}={v}" for k, v in sorted(self.options.items()) if k != "CACHE_DIR")
        return f"{self.backend} {self.device}{extra}"


@dataclass(frozen=True)
class Settings:
    """How every target is measured: prompt lengths, forced output length, runs, and whether to time a cold load."""

    runs: int = 3
    input_tokens: tuple[int, ...] = (32, 1024)
    output_tokens: int = 128
    warmup: int = 1
    cold: bool = True

    def __post_init__(self) -> None:
        if self.runs < 1 or self.warmup < 0 or self.output_tokens < 2:
            raise InvalidParameterError(
                "runs must be at least 1, warmup at least 0 and output_tokens at least 2 (TPOT needs two tokens)."
            )
        if not self.input_tokens or min(self.input_tokens) < 8:
            raise InvalidParameterError(
                "input_tokens must list lengths of at least 8 tokens (the chat template)."
            )


def options_for(device: str, options: Mapping[str, Any], backend: str = "openvino") -> dict[str, Any]:
    """The options that apply to ``backend`` on ``device``: NPU pipeline options go to OpenVINO NPU targets only,
    OpenVINO properties to the OpenVINO backends only, so one command can compare
    ``--device cpu npu --backend openvino transformers -o NPUW_DEVICES=CPU``."""
    return route(options, backend, device_kind(normalise_device(device)))[0]


def targets_for(
    model: str, devices: Sequence[str], backends: Sequence[str], options: Mapping[str, Any]
) -> list[Target]:
    """One target per (backend, device) pair, in the order given, each with the options that apply to it."""
    return [
        Target(model, device, backend, options_for(device, options, backend))
        for backend in backends
        for device in devices
    ]
