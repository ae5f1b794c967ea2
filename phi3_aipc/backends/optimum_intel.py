"""optimum-intel backend: the Phi-3 AI PC recipe's ``OVModelForCausalLM`` with its ov_config, on CPU or Intel GPU.

Generation goes through transformers' ``generate`` (as in the recipe), streamed token by token by the shared
callback streamer: there is no queue timeout, so a first GPU compile that takes minutes does not break a stream.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import transformers
from optimum.intel import OVModelForCausalLM

from phi3_aipc.backends.options import trust_remote_code
from phi3_aipc.backends.transformers_backend import TransformersBackend
from phi3_aipc.devices import DEVICE_KINDS, device_kind, openvino_devices, pick_device, refuse_kind
from phi3_aipc.errors import InvalidParameterError
from phi3_aipc.models import Artifact
from phi3_aipc.paths import compile_cache_dir

#: The seed recipe's ov_config; CACHE_DIR "" there disables the compile cache, so a real folder replaces it.
RECIPE_OV_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
KNOWN_OPTIONS = {"ov_config", "trust_remote_code"}


class OptimumIntelBackend(TransformersBackend):
    """Same prompt, tokenizer and generate path as the transformers backend; the model is OpenVINO-compiled."""

    name = "optimum-intel"
    ov_config: dict[str, Any]
    model_path: Path

    @classmethod
    def pick_device(cls, requested: str, options: Mapping[str, Any]) -> str:
        if requested != "AUTO" and "optimum-intel" not in DEVICE_KINDS[device_kind(requested)].backends:
            raise refuse_kind(requested, "optimum-intel")
        return pick_device(requested, available_devices(), preference=("GPU", "CPU"))

    @classmethod
    def load(cls, artifact: Artifact, device: str, options: dict[str, Any]) -> OptimumIntelBackend:
        ov_config = _parse_options(options, device)
        trust = trust_remote_code(options)
        path = artifact.path
        started = time.perf_counter()
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
        loaded = OVModelForCausalLM.from_pretrained(
            str(path), device=device, ov_config=ov_config, trust_remote_code=trust
        )
        backend = cls(loaded, tokenizer, artifact, device)
        backend.ov_config = ov_config
        backend.model_path = path
        backend.load_ms = (time.perf_counter() - started) * 1000
        return backend


def default_ov_config(device: str) -> dict[str, Any]:
    cache = compile_cache_dir("optimum-intel", device)
    return {**RECIPE_OV_CONFIG, **({"CACHE_DIR": str(cache)} if cache is not None else {})}


def _parse_options(options: Mapping[str, Any], device: str) -> dict[str, Any]:
    """``ov_config={...}`` and upper-case keys (as ``-o KEY=VALUE`` on the CLI) both override the recipe's."""
    ov_config = default_ov_config(device)
    extra = options.get("ov_config") or {}
    if not isinstance(extra, Mapping):
        raise InvalidParameterError(
            f"ov_config must be a dict of OpenVINO properties, got {type(extra).__name__}."
        )
    ov_config.update({str(k).upper(): v for k, v in extra.items()})
    unknown = []
    for key, value in options.items():
        if key in KNOWN_OPTIONS:
            continue
        if key.isupper():
            ov_config[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise InvalidParameterError(
            f"Unknown option(s) for the optimum-intel backend: {sorted(unknown)}. It accepts "
            f"{sorted(KNOWN_OPTIONS)}, 'revision', and OpenVINO properties in upper case, e.g. NUM_STREAMS=1."
        )
    return ov_config


def available_devices() -> list[str]:
    return list(openvino_devices())
