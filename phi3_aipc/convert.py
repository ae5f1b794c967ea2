"""Moved to ``phi3_aipc.export.openvino``; this name stays for existing imports (test fixtures, benchmarks)."""

from phi3_aipc.export.openvino import (
    OV_DETOKENIZER,
    OV_TOKENIZER,
    WeightFormat,
    ensure_openvino_tokenizer,
    export_openvino,
)

__all__ = ["OV_DETOKENIZER", "OV_TOKENIZER", "WeightFormat", "ensure_openvino_tokenizer", "export_openvino"]
