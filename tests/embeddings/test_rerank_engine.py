"""The rerank engine on a tiny random cross-encoder: the plumbing (scores, order, top_n, truncation, errors).

The model's weights are random, so this checks that our scores are the model's (against transformers) and that
we order and cut by them; whether a real cross-encoder ranks well is not tested here (no package ships one).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from phi3_aipc.embeddings import InputTruncatedWarning, get_rerank_engine
from phi3_aipc.errors import InvalidParameterError
from phi3_aipc.testing.precision import ENCODER_F32

pytest.importorskip("openvino_genai")

QUERY = "On which day is the fish market closed?"
DOCS = [
    "The Kestrel Bay fish market is closed on Tuesdays.",
    "The night ferry leaves from pier 9 at 23:40.",
    "Kites fly at the festival on the first Sunday of May.",
    "Harbourmaster Ilse Varga keeps the logbook in a copper box.",
    "The lighthouse was repainted in teal and orange.",
]


@pytest.fixture(scope="module")
def reference_scores(tiny_cross_encoder_hf: Path) -> list[float]:
    """sigmoid(logit) of each (query, document) pair, computed by transformers on the same checkpoint."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_cross_encoder_hf)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder_hf).eval()
    with torch.no_grad():
        batch = tokenizer([QUERY] * len(DOCS), DOCS, padding=True, return_tensors="pt")
        return torch.sigmoid(model(**batch).logits[:, 0]).tolist()


def test_scores_are_the_models_and_order_follows_them(tiny_reranker, reference_scores) -> None:
    ranked = tiny_reranker.rerank(QUERY, DOCS)
    assert sorted(r.index for r in ranked) == list(range(len(DOCS)))
    for r in ranked:
        assert math.isclose(r.score, reference_scores[r.index], abs_tol=1e-4)
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    # The random model's scores are far apart (wide init): the order itself is the reference's.
    expected = sorted(range(len(DOCS)), key=lambda i: -reference_scores[i])
    gaps = [reference_scores[a] - reference_scores[b] for a, b in zip(expected, expected[1:], strict=False)]
    assert min(gaps) > 1e-3, gaps
    assert [r.index for r in ranked] == expected


def test_top_n_keeps_the_best(tiny_reranker) -> None:
    everything = tiny_reranker.rerank(QUERY, DOCS)
    assert tiny_reranker.rerank(QUERY, DOCS, top_n=2) == everything[:2]
    assert tiny_reranker.rerank(QUERY, DOCS, top_n=50) == everything
    assert tiny_reranker.rerank(QUERY, []) == []


def test_long_pairs_are_truncated_with_a_warning(tiny_reranker) -> None:
    with pytest.warns(InputTruncatedWarning, match="1 of 2 query-document pairs exceed"):
        ranked = tiny_reranker.rerank(QUERY, ["harbour " * 600, DOCS[0]])
    assert len(ranked) == 2


def test_engine_is_shared(tiny_reranker, tiny_cross_encoder_hf: Path) -> None:
    assert get_rerank_engine(str(tiny_cross_encoder_hf), "CPU", ENCODER_F32) is tiny_reranker
    assert get_rerank_engine(tiny_reranker.artifact.path, "cpu") is not None


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda e: e.rerank(QUERY, DOCS, top_n=0), "top_n must be a positive integer"),
        (lambda e: e.rerank(QUERY, "one string"), "documents must be a list of strings"),
        (lambda e: e.rerank(None, DOCS), "query must be a string"),
    ],
)
def test_bad_inputs_are_clear_errors(tiny_reranker, call, match) -> None:
    with pytest.raises(InvalidParameterError, match=match):
        call(tiny_reranker)


def test_an_embedding_model_is_not_a_reranker() -> None:
    with pytest.raises(InvalidParameterError, match="is an embedding model, not a reranker"):
        get_rerank_engine("minilm", "cpu")
