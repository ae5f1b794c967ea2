"""Hugging Face checkpoint -> ONNX Runtime GenAI folder, through onnxruntime-genai's own model builder.

The builder (``python -m onnxruntime_genai.models.builder``) writes the ONNX graph, ``genai_config.json`` and the
tokenizer files. It runs in a subprocess: it imports torch and transformers, and a Phi-3-mini export peaks at
~23 GiB of RAM, which is then returned to the system as soon as the export ends.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

from phi3_aipc.errors import (
    BackendNotInstalledError,
    InvalidParameterError,
    ModelNotFoundError,
    OnnxExportError,
)
from phi3_aipc.paths import cache_root

__all__ = ["ExecutionProvider", "Precision", "cached_export", "export_cache_dir", "export_onnx"]

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
# Files whose content defines the checkpoint, for the cache key (weights by size and mtime, small files by content).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")
_KEY_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)
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


def export_cache_dir(hf_dir: str | os.PathLike[str], precision: str, execution_provider: str) -> Path:
    """Where ``cached_export`` keeps the export of ``hf_dir`` with these options."""
    hf_dir = Path(hf_dir).expanduser().resolve()
    return (
        cache_root()
        / "exports"
        / "onnx"
        / f"{hf_dir.name}-{precision}-{execution_provider}-{_source_key(hf_dir)}"
    )


def cached_export(
    hf_dir: str | os.PathLike[str],
    precision: Precision = "int4",
    execution_provider: ExecutionProvider = "cpu",
) -> Path:
    """``export_onnx`` into the user cache, keyed by the checkpoint and the options; later calls reuse it."""
    precision, execution_provider = _check_options(precision, execution_provider)
    _check_checkpoint(Path(hf_dir).expanduser())
    target = export_cache_dir(hf_dir, precision, execution_provider)
    if (target / "genai_config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Export beside the target and rename it into place, so an interrupted export is never mistaken for a good one.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        export_onnx(hf_dir, staging, precision, execution_provider)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished the same export first: keep theirs.
            if not (target / "genai_config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


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


def _source_key(hf_dir: Path) -> str:
    """A digest of what the export depends on: the checkpoint's files and the builder's version."""
    digest = hashlib.sha256(str(hf_dir).encode())
    for name in _KEY_FILES:
        path = hf_dir / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    weights = sorted(p for p in hf_dir.iterdir() if p.suffix in _WEIGHT_SUFFIXES)
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in weights]
    digest.update(json.dumps(stats).encode())
    digest.update(_builder_version().encode())
    return digest.hexdigest()[:16]


def _builder_version() -> str:
    for package in ("onnxruntime-genai", "onnxruntime-genai-directml", "onnxruntime-genai-cuda"):
        try:
            return f"{package}=={importlib.metadata.version(package)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"
