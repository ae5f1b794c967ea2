"""HF encoder checkpoint (embedding model or cross-encoder) -> OpenVINO IR + tokenizer IR, once, into the cache.

TextEmbeddingPipeline reads an IR whose output is the token vectors (``last_hidden_state``: it pools them itself),
TextRerankPipeline one whose output is the relevance logits. optimum-intel's ``feature-extraction`` and
``text-classification`` exports are exactly those. Weights stay fp32: the models are small, the NPU compiles to
fp16 itself, and the vectors then match sentence-transformers'.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal

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
    library_log = target.parent / f"{target.name}.export.log"
    log.warning(
        "Exporting %s to OpenVINO IR (%s) once; later loads reuse %s. The exporters' own output goes to %s.",
        source,
        EXPORT_TASKS[task],
        target,
        library_log,
    )
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        started = time.perf_counter()
        try:
            with _library_output_to(library_log) as terminal:
                _export_with_progress(source, staging, task, terminal, model_arg or source.name)
        except Exception:
            log.error("Exporting %s failed; the exporters' own output is in %s.", source, library_log)
            raise
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


def _export_with_progress(source: Path, out: Path, task: EncoderTask, terminal: IO[str], name: str) -> None:
    from tqdm.auto import tqdm

    with tqdm(total=2, desc=f"Exporting {name}", unit="step", file=terminal) as bar:
        bar.set_postfix_str("optimum-intel export")
        _export_model(source, out, task)
        bar.update(1)
        bar.set_postfix_str("tokenizer IR")
        _export_tokenizer(source, out)
        bar.update(1)


@contextlib.contextmanager
def _library_output_to(path: Path) -> Iterator[IO[str]]:
    """Send everything printed while exporting to ``path`` and yield a stream to the terminal for the bar.

    transformers, optimum, NNCF and torch write to the process's stdout/stderr from Python (warnings, load
    reports, tracer warnings) and from C++ ("No CUDA runtime is found"), so the redirection is of the file
    descriptors themselves. It is process-wide while it lasts: output of other threads goes to the log too.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = os.fdopen(os.dup(saved[2]), "w", buffering=1)
    with open(path, "w") as library_log:
        try:
            for fd in saved:
                os.dup2(library_log.fileno(), fd)
            yield terminal
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            terminal.close()


def export_encoder(source: Path, out: Path, task: EncoderTask) -> Path:
    """Export checkpoint ``source`` into ``out`` with optimum-intel (fp32), plus the tokenizer IR."""
    _export_model(source, out, task)
    _export_tokenizer(source, out)
    return out


def _export_model(source: Path, out: Path, task: EncoderTask) -> None:
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


def _export_tokenizer(source: Path, out: Path) -> None:
    ensure_openvino_tokenizer(out)
    if not (out / OV_TOKENIZER).is_file():
        raise ExportError(
            f"Exported {source} to {out}, but {OV_TOKENIZER} is missing: OpenVINO GenAI could not tokenize. "
            "Check that the folder's tokenizer loads with transformers.AutoTokenizer."
        )


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
