"""Running an export: into a folder the user names (``export_model``) or into the cache (``auto_export``).

The exporters are the libraries' own (optimum-intel + NNCF, the onnxruntime-genai model builder); this module runs
their steps with progress, builds in a temporary sibling folder and moves it into place when complete (so an
interrupted export never leaves a folder that looks usable), and writes the manifest.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from phi3_aipc.errors import InvalidParameterError, ModelNotFoundError
from phi3_aipc.export import onnx as onnx_export
from phi3_aipc.export import openvino as openvino_export
from phi3_aipc.export.cache import (
    MANIFEST_NAME,
    export_cache_path,
    is_complete,
    writable_exports_dir,
    write_manifest,
)
from phi3_aipc.export.plan import ExportPlan, plan_export

log = logging.getLogger(__name__)

Step = Callable[[Path, Path, ExportPlan], None]
STEPS: dict[str, list[tuple[str, Step]]] = {
    "openvino": [
        ("optimum-intel export", openvino_export.run_export),
        ("check tokenizer IR", openvino_export.check_tokenizer),
    ],
    "onnx": [
        ("onnxruntime-genai model builder", onnx_export.run_builder),
        ("check tokenizer", onnx_export.check_output),
    ],
}


def export_model(
    model: str | Path,
    out: str | Path,
    *,
    to: str = "openvino",
    device: str = "cpu",
    precision: str | None = None,
    sym: bool | None = None,
    group_size: int | None = None,
    ratio: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
    revision: str | None = None,
) -> Path:
    """Export ``model`` (HF repo id, alias or local checkpoint folder) to ``out`` for ``device``; returns ``out``."""
    plan = plan_export(to, device, precision, sym=sym, group_size=group_size, ratio=ratio)
    source = resolve_source(model, revision=revision)
    out = Path(out).expanduser().resolve()
    _check_out(out, source, overwrite)
    return build(str(model), source, out, plan, progress, replace=True)


def auto_export(
    source: Path, plan: ExportPlan, *, model_arg: str | None = None, progress: bool = True
) -> Path:
    """Export a checkpoint folder with ``plan`` into the user cache once; later calls return the same folder."""
    source = Path(source).resolve()
    target = export_cache_path(source, plan)
    if is_complete(target):
        return target
    writable_exports_dir(plan.to)
    log.warning("Exporting %s to %s once; later loads reuse %s.", source, plan.describe(), target)
    return build(model_arg or str(source), source, target, plan, progress, replace=False)


def resolve_source(model: str | Path, *, revision: str | None = None) -> Path:
    """A local HF checkpoint folder for ``model``: the folder itself, or a Hub snapshot of the repo id."""
    from phi3_aipc.models import resolve_checkpoint

    return resolve_checkpoint(str(model), revision=revision)


def _check_out(out: Path, source: Path, overwrite: bool) -> None:
    if out == source or source in out.parents:
        raise InvalidParameterError(f"Write the export outside the source folder '{source}'.")
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not (out / MANIFEST_NAME).is_file():
        raise InvalidParameterError(
            f"'{out}' exists and is not an empty folder or an earlier phi3-aipc export: choose a new folder."
        )
    if not overwrite:
        raise InvalidParameterError(f"'{out}' already holds an export. Pass --force to replace it.")


def build(model_arg: str, source: Path, out: Path, plan: ExportPlan, progress: bool, replace: bool) -> Path:
    if not (source / "config.json").is_file():
        raise ModelNotFoundError(f"'{source}' is not a Hugging Face checkpoint folder (no config.json).")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    steps = STEPS[plan.to]
    started = time.perf_counter()
    try:
        with progress_bar(len(steps), f"Exporting {plan.describe()}", progress) as bar:
            for label, step in steps:
                bar.set_postfix_str(label)
                step(source, staging, plan)
                bar.update(1)
        weights = openvino_export.weight_types(staging, plan) if plan.to == "openvino" else {}
        write_manifest(staging, model_arg, source, plan, time.perf_counter() - started, weights)
        move_into_place(staging, out, replace=replace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_postfix_str(self, text: str) -> None:
        log.info("%s", text)

    def update(self, n: int) -> None:
        return None


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    # The exporters print their own bars (NNCF's compression, the ONNX builder's layers) inside each step.
    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr)


def move_into_place(staging: Path, out: Path, *, replace: bool) -> None:
    if replace and out.exists():
        # Only an empty folder or an earlier export of ours gets here (see _check_out).
        shutil.rmtree(out)
    try:
        os.replace(staging, out)
    except OSError:
        # Another process finished the same auto-export first: keep theirs.
        if not is_complete(out):
            raise
