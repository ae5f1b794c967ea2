"""HF encoder checkpoint (embedding model or cross-encoder) -> OpenVINO IR + tokenizer IR, once, into the cache.

TextEmbeddingPipeline reads an IR whose output is the token vectors (``last_hidden_state``: it pools them itself),
TextRerankPipeline one whose output is the relevance logits. optimum-intel's ``feature-extraction`` and
``text-classification`` exports are exactly those. Weights stay fp32: the models are small, the NPU compiles to
fp16 itself, and the vectors then match sentence-transformers'.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Literal

from phi3_aipc.errors import ExportError, ModelNotFoundError
from phi3_aipc.export.cache import MANIFEST_NAME, exporter_versions, exports_dir, fingerprint, is_complete
from phi3_aipc.export.openvino import OV_TOKENIZER, ensure_openvino_tokenizer, import_backend_module
from phi3_aipc.paths import writable_cache_dir

log = logging.getLogger(__name__)

EncoderTask = Literal["embed", "rerank"]
#: Our task -> optimum-intel's export task.
EXPORT_TASKS: dict[str, str] = {"embed": "feature-extraction", "rerank": "text-classification"}
#: Bump when the layout of an encoder export changes, so older cached exports are not reused.
ENCODER_EXPORT_FORMAT = 1


def encoder_export_path(source: Path, task: EncoderTask) -> Path:
    """Where ``source`` exported for ``task`` is cached: keyed by its path, its files and the exporter versions."""
    source = source.resolve()
    key_text = json.dumps(
        {
            "format": ENCODER_EXPORT_FORMAT,
            "source": str(source),
            "files": fingerprint(source),
            "task": task,
            "versions": exporter_versions("openvino"),
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    return exports_dir() / "openvino-encoders" / f"{source.name}-{task}-fp32-{key}"


def auto_export_encoder(source: Path, task: EncoderTask, *, model_arg: str | None = None) -> Path:
    """The IR folder of checkpoint ``source`` for ``task``: exported on the first call, reused after."""
    source = Path(source).resolve()
    if not (source / "config.json").is_file():
        raise ModelNotFoundError(f"'{source}' is not a Hugging Face checkpoint folder (no config.json).")
    target = encoder_export_path(source, task)
    if is_complete(target):
        return target
    writable_cache_dir("exports", "openvino-encoders")
    log.warning(
        "Exporting %s to OpenVINO IR (%s) once; later loads reuse %s.", source, EXPORT_TASKS[task], target
    )
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        started = time.perf_counter()
        export_encoder(source, staging, task)
        _write_manifest(staging, model_arg or str(source), source, task, time.perf_counter() - started)
        try:
            os.replace(staging, target)
        except OSError:
            # Another process finished the same export first: keep theirs.
            if not is_complete(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def export_encoder(source: Path, out: Path, task: EncoderTask) -> Path:
    """Export checkpoint ``source`` into ``out`` with optimum-intel (fp32), plus the tokenizer IR."""
    exporters = import_backend_module("optimum.exporters.openvino", "optimum-intel", "export")
    intel = import_backend_module("optimum.intel", "optimum-intel", "export")
    exporters.main_export(
        model_name_or_path=str(source),
        output=out,
        task=EXPORT_TASKS[task],
        ov_config=intel.OVConfig(dtype="fp32"),
        # One tokenizer conversion path for every export (optimum hides its own conversion failures).
        convert_tokenizer=False,
        library_name="transformers",
        local_files_only=True,
    )
    ensure_openvino_tokenizer(out)
    if not (out / OV_TOKENIZER).is_file():
        raise ExportError(
            f"Exported {source} to {out}, but {OV_TOKENIZER} is missing: OpenVINO GenAI could not tokenize. "
            "Check that the folder's tokenizer loads with transformers.AutoTokenizer."
        )
    return out


def _write_manifest(folder: Path, model_arg: str, source: Path, task: str, seconds: float) -> None:
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    manifest = {
        "format": ENCODER_EXPORT_FORMAT,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"model": model_arg, "path": str(source), "fingerprint": fingerprint(source)},
        "options": {"task": task, "export_task": EXPORT_TASKS[task], "precision": "fp32"},
        "versions": exporter_versions("openvino"),
        "export_seconds": round(seconds, 2),
        "size_bytes": sum(files.values()),
        "files": files,
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
