from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smollm2_hf(model_cache: Path, smollm2_gguf: Path) -> Path:
    """SmolLM2-135M-Instruct as an HF checkpoint (from the packaged GGUF), for the transformers backend."""
    pytest.importorskip("torch")
    pytest.importorskip("gguf")
    from phi3_aipc.testing import build_smollm2_hf, cached_model_dir

    return cached_model_dir(model_cache, "smollm2-135m-instruct-hf-v1", build_smollm2_hf)
