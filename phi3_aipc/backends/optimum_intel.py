"""optimum-intel backend: the Phi-3 AI PC recipe's ``OVModelForCausalLM`` with its ov_config, on CPU or Intel GPU.

Generation goes through transformers' ``generate`` (as in the recipe), streamed token by token by the shared
callback streamer: there is no queue timeout, so a first GPU compile that takes minutes does not break a stream.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import transformers
from optimum.intel import OVModelForCausalLM

from phi3_aipc import models
from phi3_aipc.backends.transformers_backend import TransformersBackend
from phi3_aipc.devices import device_kind, normalise_device, pick_device
from phi3_aipc.errors import DeviceNotFoundError, InvalidParameterError, ModelNotFoundError
from phi3_aipc.paths import compile_cache_dir

#: The seed recipe's ov_config; CACHE_DIR "" there disables the compile cache, so a real folder replaces it.
RECIPE_OV_CONFIG = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
KNOWN_OPTIONS = {"ov_config", "trust_remote_code"}
_HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


class OptimumIntelBackend(TransformersBackend):
    """Same prompt, tokenizer and generate path as the transformers backend; the model is OpenVINO-compiled."""

    name = "optimum-intel"
    ov_config: dict[str, Any]
    model_path: Path

    @classmethod
    def load(cls, model: str | None, device: str | None, options: dict[str, Any]) -> OptimumIntelBackend:
        target = _pick_target(normalise_device(device))
        ov_config, trust = _parse_options(options, target)
        path = resolve_model(model, target)
        started = time.perf_counter()
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
        loaded = OVModelForCausalLM.from_pretrained(
            str(path), device=target, ov_config=ov_config, trust_remote_code=trust
        )
        backend = cls(loaded, tokenizer, models.canonical_model_id(model), target)
        backend.ov_config = ov_config
        backend.model_path = path
        backend.load_ms = (time.perf_counter() - started) * 1000
        return backend


def default_ov_config(device: str) -> dict[str, Any]:
    return {**RECIPE_OV_CONFIG, "CACHE_DIR": str(compile_cache_dir("optimum-intel", device))}


def _parse_options(options: dict[str, Any], device: str) -> tuple[dict[str, Any], bool]:
    """``ov_config={...}`` and upper-case keys (as ``-o KEY=VALUE`` on the CLI) both override the recipe's."""
    ov_config = default_ov_config(device)
    extra = options.get("ov_config") or {}
    if not isinstance(extra, dict):
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
            f"{sorted(KNOWN_OPTIONS)} and OpenVINO properties in upper case, e.g. NUM_STREAMS=1."
        )
    return ov_config, bool(options.get("trust_remote_code", False))


def available_devices() -> list[str]:
    import openvino as ov

    return list(ov.Core().available_devices)


def _pick_target(requested: str) -> str:
    if device_kind(requested) == "NPU":
        raise DeviceNotFoundError(
            "The optimum-intel backend runs on the CPU and Intel GPU only; for the NPU use backend='openvino' "
            "(OpenVINO GenAI's NPU pipeline) with a symmetric INT4 model."
        )
    if requested in ("DML", "DIRECTML", "CUDA"):
        raise DeviceNotFoundError(
            f"optimum-intel cannot run on '{requested.lower()}'. Use backend='onnx' for DirectML, "
            "backend='transformers' for CUDA."
        )
    return pick_device(requested, available_devices(), preference=("GPU", "CPU"))


def resolve_model(model: str | None, device: str) -> Path:
    """An OpenVINO IR folder with HF tokenizer files; a HF checkpoint folder is auto-exported (cached) first."""
    model_id = models.canonical_model_id(model)
    if model_id.lower() == models.SMOLLM2_ALIAS:
        raise ModelNotFoundError(
            "The packaged SmolLM2 is a GGUF file, which optimum-intel does not load. Use backend='openvino', or "
            "export a checkpoint: phi3-aipc export CHECKPOINT OUT --for cpu, then pass OUT."
        )
    path = models.local_path(model_id)
    if path is None:
        known = models.known_model(model_id)
        repo = known.openvino.get(device_kind(device).lower()) if known else model_id
        if repo is None or not models.is_repo_id(repo):
            raise ModelNotFoundError(f"'{model_id}' is neither a local folder nor a Hugging Face repo id.")
        path = models.fetch_from_hub(repo, what="the OpenVINO model")
    if path.is_file() and path.name == "openvino_model.xml":
        path = path.parent
    if not path.is_dir():
        raise ModelNotFoundError(
            f"'{path}' is not a folder; optimum-intel loads an OpenVINO IR or checkpoint folder."
        )
    if not (path / "openvino_model.xml").is_file():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"'{path}' holds no OpenVINO model (openvino_model.xml) and no Hugging Face checkpoint (config.json)."
            )
        from phi3_aipc.export import auto_export

        path = auto_export(path, device)
    if not any((path / name).is_file() for name in _HF_TOKENIZER_FILES):
        raise ModelNotFoundError(
            f"'{path}' has no Hugging Face tokenizer files ({', '.join(_HF_TOKENIZER_FILES)}), which the "
            "optimum-intel backend tokenizes with. Copy them from the original checkpoint, or use backend='openvino'."
        )
    return path
