"""The export cache and manifest, one for OpenVINO and ONNX alike.

Every export folder carries ``phi3_aipc_export.json``: where it came from (with the source's fingerprint), the plan,
the exporter versions and what the weights became. Auto-exports live under ``<cache>/exports/<format>/``, in a
folder named by one key: the source's path and fingerprint, the plan, and the exporter versions.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from phi3_aipc.errors import ModelNotFoundError
from phi3_aipc.export.plan import ExportPlan
from phi3_aipc.paths import cache_root, writable_cache_dir

MANIFEST_NAME = "phi3_aipc_export.json"
#: Bump when the layout of an export changes, so auto-export caches made by older versions are not reused.
MANIFEST_FORMAT = 2

# The packages whose versions shape an export, per format.
_OPTIMUM_INTEL = (
    "optimum-intel",
    "optimum",
    "nncf",
    "openvino",
    "openvino-tokenizers",
    "transformers",
    "torch",
)
EXPORTER_PACKAGES = {
    "openvino": _OPTIMUM_INTEL,
    # A GGUF converted by OpenVINO GenAI's own reader (phi3_aipc.export.gguf).
    "gguf": ("openvino-genai", "openvino", "openvino-tokenizers"),
    # A GGUF OpenVINO GenAI cannot read, dequantised by transformers and exported (phi3_aipc.export.gguf_hf).
    "gguf-transformers": ("gguf", *_OPTIMUM_INTEL),
    "onnx": (
        "onnxruntime-genai",
        "onnxruntime-genai-directml",
        "onnxruntime-genai-cuda",
        "onnx-ir",
        "transformers",
        "torch",
    ),
}


def fingerprint(source: Path) -> str:
    """Names, sizes and modification times of the checkpoint's files (or of one model file, e.g. a GGUF): cheap,
    and changes when a file does."""
    digest = hashlib.sha256()
    if source.is_file():
        stat = source.stat()
        digest.update(f"{source.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()
    for path in sorted(source.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(source).parts):
            stat = path.stat()
            digest.update(f"{path.relative_to(source)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def exporter_versions(to: str) -> dict[str, str]:
    """phi3-aipc's and the exporter packages' versions, for the manifest and the cache key."""
    return dict(_versions(to))


@functools.cache
def _versions(to: str) -> tuple[tuple[str, str], ...]:
    # Installed versions do not change under a running process; asking metadata costs milliseconds per call.
    found = {}
    for package in ("phi3-aipc", *EXPORTER_PACKAGES[to]):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return tuple(found.items())


# OpenVINO GenAI's own GGUF reader keeps the GGUF's weights ('gguf'), or fp16 for the NPU; any other plan for a
# GGUF is an export through transformers (int8, or int4 for the NPU).
_GGUF_READER_PRECISIONS = ("gguf", "fp16")


def exporter(source: Path, plan: ExportPlan) -> str:
    """The ``EXPORTER_PACKAGES`` key of an export: a GGUF file is converted by OpenVINO GenAI or through
    transformers (see ``_GGUF_READER_PRECISIONS``), a folder by ``plan.to``'s exporter."""
    if source.suffix.lower() != ".gguf":
        return plan.to
    return "gguf" if plan.precision in _GGUF_READER_PRECISIONS else "gguf-transformers"


def exports_dir() -> Path:
    return cache_root() / "exports"


def export_cache_path(source: Path, plan: ExportPlan) -> Path:
    """Where ``source`` exported with ``plan`` is cached: one key for both formats."""
    source = source.resolve()
    key_text = json.dumps(
        {
            "format": MANIFEST_FORMAT,
            "source": str(source),
            "files": fingerprint(source),
            "plan": plan.as_dict(),
            "versions": exporter_versions(exporter(source, plan)),
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    variant = plan.provider or plan.device
    return exports_dir() / plan.to / f"{source.name}-{plan.precision}-{variant}-{key}"


def writable_exports_dir(to: str) -> Path:
    """The auto-export folder for ``to``, created; an error naming it (and PHI3_AIPC_CACHE) if it is read-only."""
    return writable_cache_dir("exports", to)


def is_complete(folder: Path) -> bool:
    """A folder is a finished export once its manifest exists: the manifest is written last, then moved in."""
    return (folder / MANIFEST_NAME).is_file()


def write_manifest(
    folder: Path, model_arg: str, source: Path, plan: ExportPlan, seconds: float, weight_types: dict[str, int]
) -> None:
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    manifest = {
        "format": MANIFEST_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"model": model_arg, "path": str(source), "fingerprint": fingerprint(source)},
        "options": plan.as_dict(),
        "versions": exporter_versions(exporter(source, plan)),
        "weight_types": weight_types,
        "export_seconds": round(seconds, 2),
        "size_bytes": sum(files.values()),
        "files": files,
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of an export folder; raises ModelNotFoundError when the folder is not a phi3-aipc export."""
    path = Path(folder) / MANIFEST_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelNotFoundError(
            f"'{folder}' has no {MANIFEST_NAME}: it was not made by phi3-aipc export."
        ) from None
