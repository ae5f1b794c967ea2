"""Hugging Face checkpoint -> ONNX Runtime GenAI folder, through onnxruntime-genai's own model builder.

The builder (``python -m onnxruntime_genai.models.builder``) writes the ONNX graph, ``genai_config.json`` and the
tokenizer files. It runs in a subprocess: it imports torch and transformers, and a Phi-3-mini export peaks at
~23 GiB of RAM, which is then returned to the system as soon as the export ends.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from phi3_aipc.errors import (
    BackendNotInstalledError,
    ExportError,
    InvalidParameterError,
    ModelNotFoundError,
    OnnxExportError,
)

if TYPE_CHECKING:
    from phi3_aipc.export.plan import ExportPlan

__all__ = ["SUPPORTED", "ExecutionProvider", "Precision", "builder_version", "export_onnx"]

log = logging.getLogger(__name__)

Precision = Literal["int4", "fp16", "fp32"]
ExecutionProvider = Literal["cpu", "dml", "cuda"]

PRECISIONS = ("int4", "fp16", "fp32")
EXECUTION_PROVIDERS = ("cpu", "dml", "cuda")
# The pairs the builder supports (it prints this list itself): there is no fp16 CPU and no fp32 DirectML model.
SUPPORTED = {
    ("int4", "cpu"),
    ("fp32", "cpu"),
    ("int4", "dml"),
    ("fp16", "dml"),
    ("int4", "cuda"),
    ("fp16", "cuda"),
    ("fp32", "cuda"),
}
# What the builder imports besides onnxruntime_genai: module -> pip package.
_BUILDER_NEEDS = {"torch": "torch", "transformers": "transformers", "onnx_ir": "onnx-ir", "onnx": "onnx"}
_BUILDER_LOG_TAIL = 3000


def export_onnx(
    hf_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    precision: Precision = "int4",
    execution_provider: ExecutionProvider = "cpu",
) -> Path:
    """Export the Hugging Face checkpoint in ``hf_dir`` to an ONNX Runtime GenAI folder ``out_dir``.

    ``precision`` is int4, fp16 or fp32; ``execution_provider`` is the device the model is tuned for: cpu, dml
    (DirectML) or cuda. Returns ``out_dir``, which then holds ``genai_config.json``, ``model.onnx`` and the tokenizer.
    """
    hf_dir, out_dir = Path(hf_dir).expanduser(), Path(out_dir).expanduser()
    precision, execution_provider = _check_options(precision, execution_provider)
    _check_checkpoint(hf_dir)
    _check_builder_installed()
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info(
        "Exporting %s to ONNX Runtime GenAI (%s, %s) in %s", hf_dir, precision, execution_provider, out_dir
    )
    with tempfile.TemporaryDirectory(prefix="phi3-aipc-ort-builder-") as scratch:
        command = [
            sys.executable,
            "-m",
            "onnxruntime_genai.models.builder",
            "-i",
            str(hf_dir),
            "-o",
            str(out_dir),
            "-p",
            precision,
            "-e",
            execution_provider,
            "-c",
            scratch,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not (out_dir / "genai_config.json").is_file():
        output = (done.stdout + done.stderr)[-_BUILDER_LOG_TAIL:]
        raise OnnxExportError(
            f"The ONNX Runtime GenAI model builder failed to export '{hf_dir}' ({precision}, {execution_provider}; "
            f"exit code {done.returncode}). It supports Phi-3/Phi-4, Llama, Mistral, Qwen and a few other "
            f"architectures. Its output ended with:\n{output}"
        )
    return out_dir


def _check_options(precision: str, execution_provider: str) -> tuple[str, str]:
    precision = str(precision).lower()
    execution_provider = {"directml": "dml"}.get(
        str(execution_provider).lower(), str(execution_provider).lower()
    )
    if precision not in PRECISIONS:
        raise InvalidParameterError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    if execution_provider not in EXECUTION_PROVIDERS:
        raise InvalidParameterError(
            f"execution_provider must be one of {', '.join(EXECUTION_PROVIDERS)}, got {execution_provider!r}."
        )
    if (precision, execution_provider) not in SUPPORTED:
        pairs = ", ".join(f"{p} {e}" for p, e in sorted(SUPPORTED, key=lambda pe: (pe[1], pe[0])))
        raise InvalidParameterError(
            f"The ONNX Runtime GenAI builder cannot make a {precision} model for {execution_provider}. "
            f"Supported pairs: {pairs}."
        )
    return precision, execution_provider


def _check_checkpoint(hf_dir: Path) -> None:
    if not (hf_dir / "config.json").is_file():
        raise ModelNotFoundError(
            f"'{hf_dir}' is not a Hugging Face checkpoint folder (no config.json); only those can be exported to "
            f"ONNX Runtime GenAI."
        )


def _check_builder_installed() -> None:
    for module, package in {"onnxruntime_genai": "onnxruntime-genai", **_BUILDER_NEEDS}.items():
        if importlib.util.find_spec(module) is None:
            raise BackendNotInstalledError("onnx export", package, "export")


def builder_version() -> str:
    for package in ("onnxruntime-genai", "onnxruntime-genai-directml", "onnxruntime-genai-cuda"):
        try:
            return f"{package}=={importlib.metadata.version(package)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


# -- steps of an export (see phi3_aipc.export.build) -----------------------------------------------------------
def run_builder(source: Path, staging: Path, plan: ExportPlan) -> None:
    export_onnx(source, staging, plan.precision, plan.provider or "cpu")  # type: ignore[arg-type]


def check_output(source: Path, staging: Path, plan: ExportPlan) -> None:
    missing = [name for name in ("genai_config.json", "tokenizer.json") if not (staging / name).is_file()]
    if missing or not list(staging.glob("*.onnx")):
        raise ExportError(
            f"The ONNX export of '{source}' is incomplete (missing: {', '.join(missing) or '*.onnx'}); "
            "ONNX Runtime GenAI could not load it. Check the builder's output above."
        )
