"""Export a Hugging Face checkpoint for a device: OpenVINO IR (optimum-intel + NNCF) or ONNX Runtime GenAI.

- ``plan``: the device presets and the validated ``ExportPlan``.
- ``openvino``: the OpenVINO exporter, the tokenizer IR, and its checks.
- ``onnx``: the ONNX Runtime GenAI model builder and its checks.
- ``cache``: the manifest, the source fingerprint and where auto-exports live (one cache for both formats).
- ``build``: running an export into a named folder or the cache.
- ``gguf``: a packaged GGUF converted once to an OpenVINO IR (CPU/GPU, and one repaired for the NPU pipeline).

Nothing here is imported by a backend: the model resolver (``phi3_aipc.models``) drives auto-export.
"""

from phi3_aipc.errors import ExportError
from phi3_aipc.export.build import auto_export, export_model, resolve_source
from phi3_aipc.export.cache import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    export_cache_path,
    exports_dir,
    fingerprint,
    read_manifest,
)
from phi3_aipc.export.plan import DEVICES, PRECISIONS, TARGETS, ExportPlan, plan_export

__all__ = [
    "DEVICES",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "PRECISIONS",
    "TARGETS",
    "ExportError",
    "ExportPlan",
    "auto_export",
    "export_cache_path",
    "export_model",
    "exports_dir",
    "fingerprint",
    "plan_export",
    "read_manifest",
    "resolve_source",
]
