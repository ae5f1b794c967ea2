"""Retrieval quality on 50 labelled question/passage pairs: ours equals sentence-transformers' recall@3."""

from __future__ import annotations

import numpy as np


def _recall_at_3(questions: np.ndarray, passages: np.ndarray) -> float:
    top3 = np.argsort(-(questions @ passages.T), axis=1)[:, :3]
    return float(np.mean([i in row for i, row in enumerate(top3)]))


def test_recall_at_3_equals_sentence_transformers(minilm_cpu, sentence_transformer, qa_pairs) -> None:
    questions = [p["question"] for p in qa_pairs]
    passages = [p["passage"] for p in qa_pairs]
    ours = _recall_at_3(
        np.array([minilm_cpu.embed_query(q) for q in questions]),
        np.array(minilm_cpu.embed_documents(passages)),
    )
    reference = _recall_at_3(
        sentence_transformer.encode(questions, normalize_embeddings=True),
        sentence_transformer.encode(passages, normalize_embeddings=True),
    )
    assert ours == reference
    # The set is easy for a real embedding model; a broken pooling or tokenizer scores far lower.
    assert ours >= 0.9
