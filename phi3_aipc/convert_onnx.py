"""Moved to ``phi3_aipc.export.onnx``; this name stays for existing imports (benchmarks)."""

from __future__ import annotations

import os
from pathlib import Path

from phi3_aipc.export.onnx import SUPPORTED, ExecutionProvider, Precision, export_onnx

__all__ = ["SUPPORTED", "ExecutionProvider", "Precision", "cached_export", "export_onnx"]


def cached_export(
    hf_dir: str | os.PathLike[str],
    precision: Precision = "int4",
    execution_provider: ExecutionProvider = "cpu",
) -> Path:
    """``export_onnx`` into the shared export cache (``phi3_aipc.export.auto_export``); later calls reuse it."""
    from phi3_aipc.export import auto_export, plan_export

    preset = "cpu" if execution_provider == "cpu" else "gpu"
    plan = plan_export("onnx", preset, precision, provider=execution_provider)
    return auto_export(Path(hf_dir).expanduser(), plan, progress=False)
