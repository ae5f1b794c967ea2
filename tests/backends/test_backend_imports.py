"""Backends run resolved artifacts: importing one pulls in neither the export tooling nor an adapter framework."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "requires"),
    [
        ("phi3_aipc.backends.openvino_genai", "openvino_genai"),
        ("phi3_aipc.backends.onnx_genai", "onnxruntime_genai"),
        ("phi3_aipc.backends.optimum_intel", "optimum.intel"),
        ("phi3_aipc.backends.transformers_backend", "transformers"),
    ],
)
def test_a_backend_module_imports_no_export_code_and_no_adapter(module: str, requires: str) -> None:
    pytest.importorskip(requires)
    code = (
        f"import sys, {module}\n"
        "bad = [m for m in sys.modules if m.startswith(('phi3_aipc.export', 'phi3_aipc.convert', 'langchain',"
        " 'llama_index', 'phi3_aipc.cli'))]\n"
        "print(bad)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
