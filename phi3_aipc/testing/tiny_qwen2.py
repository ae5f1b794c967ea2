"""A tiny random-weight Qwen2 around the real Qwen2.5 tokenizer and chat template, for plumbing tests of a model's
own tool format (Hermes ``<tool_call>`` blocks, a ``tool`` role). Random weights: no answer quality at all; tests
constrain its output or read the prompt, never judge what it says."""

from __future__ import annotations

import gzip
import importlib.resources
import os
import shutil
from pathlib import Path

from phi3_aipc.errors import InvalidModelFileError
from phi3_aipc.testing.checkpoint import generation_config, require, save_tokenizer

#: The real tokenizer and template, packaged (from Qwen2.5-Coder-0.5B-Instruct's GGUF, Apache-2.0; converted by
#: transformers 5.5); $PHI3_AIPC_QWEN_TOKENIZER overrides the folder.
QWEN_TOKENIZER_DIR = Path(
    os.environ.get("PHI3_AIPC_QWEN_TOKENIZER")
    or str(importlib.resources.files("phi3_aipc").joinpath("_data/qwen2_tokenizer"))
)
IM_END = "<|im_end|>"


def build_tiny_qwen2(out_dir: Path, *, source: Path = QWEN_TOKENIZER_DIR, seed: int = 0) -> Path:
    """Save a random fp32 ``Qwen2ForCausalLM`` (hidden size 64, 2 layers, Qwen2.5's 151,936 tokens) to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hf_tok = _qwen_tokenizer(Path(source), out_dir)
    torch = require("torch", "torch")
    transformers = require("transformers", "transformers")
    vocab = hf_tok.get_vocab()
    config = transformers.Qwen2Config(
        vocab_size=151936,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=vocab[IM_END],
    )
    torch.manual_seed(seed)
    model = transformers.Qwen2ForCausalLM(config).to(torch.float32).eval()
    # The instruct model stops on <|im_end|> as well as <|endoftext|>.
    model.generation_config = generation_config(
        [vocab[IM_END], vocab["<|endoftext|>"]], pad=vocab["<|endoftext|>"]
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(hf_tok, out_dir)
    return out_dir


def _qwen_tokenizer(source: Path, work: Path):  # noqa: ANN202 - a transformers tokenizer
    packed = source / "tokenizer.json.gz"
    if not packed.is_file():
        raise InvalidModelFileError(
            f"The Qwen2.5 tokenizer is not at {source} (tokenizer.json.gz missing): set PHI3_AIPC_QWEN_TOKENIZER "
            "to the folder holding tokenizer.json.gz, tokenizer_config.json and chat_template.jinja."
        )
    staging = work / "_tokenizer"
    staging.mkdir(exist_ok=True)
    with gzip.open(packed, "rb") as src, open(staging / "tokenizer.json", "wb") as dst:
        shutil.copyfileobj(src, dst)
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(source / name, staging / name)
    transformers = require("transformers", "transformers")
    tok = transformers.AutoTokenizer.from_pretrained(staging)
    shutil.rmtree(staging)
    return tok
