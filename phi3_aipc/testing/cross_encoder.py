"""A tiny random cross-encoder (BERT sequence classifier, one logit) on all-MiniLM-L6-v2's tokenizer, built offline.

No PyPI package ships a cross-encoder's weights, so tests check the rerank plumbing on this model: its scores are
random, and ranking quality is NOT verified by it.
"""

from __future__ import annotations

from pathlib import Path


def build_tiny_cross_encoder(out: Path, seed: int = 0) -> Path:
    """Write the model and its tokenizer to ``out`` (an HF checkpoint folder); needs torch and transformers."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from phi3_aipc.embeddings.catalogue import packaged_minilm

    tokenizer = AutoTokenizer.from_pretrained(packaged_minilm())
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
        # Wider than BERT's 0.02, so random documents get clearly different scores rather than near-ties.
        initializer_range=0.5,
    )
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return Path(out)
