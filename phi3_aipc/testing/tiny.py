"""A tiny random-weight Phi-3 (hidden size 128, 2 layers) that builds offline in seconds.

Its ByteLevel tokenizer is trained on stdlib sources (greedy output then matches across transformers, optimum-intel,
OpenVINO GenAI and ONNX Runtime GenAI); ``tokenizer="phi3"`` uses Phi-3's real tokenizer from package data instead.
Heavy libraries are imported inside the functions.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from phi3_aipc.errors import InvalidParameterError
from phi3_aipc.testing.checkpoint import generation_config, require, save_tokenizer, wrap_fast

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Phi-3-mini-4k-instruct's chat template, embedded so that nothing here depends on files outside the package.
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
    "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
PHI3_SPECIAL_TOKENS = ("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
# Phi-3 stops on any of these; generation_config.json carries them so every engine stops alike.
PHI3_STOP_TOKENS = ("<|endoftext|>", "<|assistant|>", "<|end|>")

_BYTELEVEL_VOCAB_SIZE = 4000
# Sources of these stdlib packages are the training text: always present, no network, stable per Python version.
_CORPUS_PACKAGES = ("email", "json", "http", "urllib", "logging", "asyncio")
_CORPUS_MAX_BYTES = 3_000_000
_PHI3_TOKENIZER_DATA = "_data/phi3_tokenizer"


def _corpus_files() -> list[Path]:
    files: list[Path] = []
    for name in _CORPUS_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec and spec.submodule_search_locations:
            for root in spec.submodule_search_locations:
                files.extend(sorted(Path(root).rglob("*.py")))
    return files


def _corpus_lines() -> list[str]:
    """Deterministic training text: sorted stdlib sources, capped so training stays fast."""
    lines: list[str] = []
    size = 0
    for path in _corpus_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        lines.extend(text.splitlines(keepends=True))
        size += len(text)
        if size >= _CORPUS_MAX_BYTES:
            break
    return lines


@functools.lru_cache(maxsize=1)
def _bytelevel_tokenizer_json() -> str:
    """Train the ByteLevel BPE once per process; JSON so each caller gets a fresh, unshared object."""
    tokenizers = require("tokenizers", "tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=_BYTELEVEL_VOCAB_SIZE,
        special_tokens=list(PHI3_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus_lines(), trainer=trainer)
    return tok.to_str()


def _bytelevel_phi3_tokenizer() -> PreTrainedTokenizerBase:
    from tokenizers import Tokenizer

    hf = wrap_fast(
        Tokenizer.from_str(_bytelevel_tokenizer_json()), eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    hf.chat_template = PHI3_CHAT_TEMPLATE
    return hf


def _real_phi3_tokenizer(staging: Path) -> PreTrainedTokenizerBase:
    """Phi-3's real tokenizer from package data (gzipped: the JSON is 3.6 MB, gzip brings it to 0.5 MB)."""
    transformers = require("transformers", "transformers")
    data = importlib.resources.files("phi3_aipc").joinpath(_PHI3_TOKENIZER_DATA)
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "tokenizer.json").write_bytes(gzip.decompress(data.joinpath("tokenizer.json.gz").read_bytes()))
    (staging / "tokenizer_config.json").write_bytes(data.joinpath("tokenizer_config.json").read_bytes())
    # AutoTokenizer on these two files is the load path the data's README documents and measured.
    hf = transformers.AutoTokenizer.from_pretrained(staging)
    hf.chat_template = PHI3_CHAT_TEMPLATE
    return hf


def _phi3_config(vocab_size: int, token_ids: dict[str, int]) -> Any:
    transformers = require("transformers", "transformers")
    return transformers.Phi3Config(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        original_max_position_embeddings=4096,
        bos_token_id=token_ids.get("<s>"),
        eos_token_id=token_ids["<|endoftext|>"],
        pad_token_id=token_ids["<|endoftext|>"],
        tie_word_embeddings=False,
    )


def _random_phi3(config: Any, seed: int) -> Any:
    torch = require("torch", "torch", extra="transformers")
    transformers = require("transformers", "transformers")
    # Seeding right before construction makes the initial weights a function of (config, seed) alone.
    torch.manual_seed(seed)
    model = transformers.Phi3ForCausalLM(config).to(torch.float32).eval()
    return model


def build_tiny_phi3(
    out_dir: Path, *, tokenizer: Literal["bytelevel", "phi3"] = "bytelevel", seed: int = 0
) -> Path:
    """Save a random-weight fp32 ``Phi3ForCausalLM`` (hidden size 128, 2 layers) plus tokenizer to ``out_dir``.

    ``tokenizer="bytelevel"`` trains a ~4k ByteLevel BPE with Phi-3's special tokens and chat template: its greedy
    output matches across every engine. ``tokenizer="phi3"`` uses Phi-3's real 32,064-entry tokenizer.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer == "bytelevel":
        hf_tok = _bytelevel_phi3_tokenizer()
    elif tokenizer == "phi3":
        hf_tok = _real_phi3_tokenizer(out_dir)
    else:
        raise InvalidParameterError(f"tokenizer must be 'bytelevel' or 'phi3', not {tokenizer!r}.")
    vocab = hf_tok.get_vocab()
    # Real Phi-3 has 32,064 rows; padding to 64 also keeps the matmul shapes friendly.
    vocab_size = 32064 if tokenizer == "phi3" else _pad_to(len(hf_tok))
    model = _random_phi3(_phi3_config(vocab_size, vocab), seed)
    model.generation_config = generation_config(
        [vocab[t] for t in PHI3_STOP_TOKENS], pad=vocab["<|endoftext|>"], bos=vocab.get("<s>")
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(hf_tok, out_dir)
    return out_dir


def _pad_to(n: int, multiple: int = 64) -> int:
    return -(-n // multiple) * multiple
