"""Random-weight models with the exact architecture of Phi-3-mini, Phi-3.5-mini and Phi-4-mini.

They measure real-size speed where the real weights cannot be downloaded: the amount of compute and memory traffic
per token depends on the shapes, not on the weight values, as long as decoding is forced past EOS
(``GenerationParams(ignore_eos=True)``). Their answers are noise.

The checkpoint is built in bfloat16 (7.6 GB for Phi-3-mini, so it fits in RAM), saved with the real Phi-3 tokenizer
shipped in ``phi3_aipc.testing.tiny``, and exported like a real model (OpenVINO IR, INT4 symmetric group 128, which both
the NPU and the CPU/GPU run). Both forms are cached under ``<user cache>/phi3-aipc/synthetic``.

Heavy libraries (torch, transformers, optimum-intel) are imported inside the functions.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from phi3_aipc.errors import InvalidParameterError
from phi3_aipc.paths import cache_root
from phi3_aipc.testing.cache import cached_model_dir
from phi3_aipc.testing.checkpoint import require
from phi3_aipc.testing.tiny import build_tiny_phi3

SyntheticFormat = Literal["int4", "hf"]

# The rows of the real Phi-3 tokenizer; ids at or above it have no text.
PHI3_TOKENIZER_ROWS = 32064

# Values from each model's config.json on the Hugging Face Hub (transformers 5 spelling). Long-context RoPE
# factors are placeholders (1.0): they are values, not shapes, and do not change the cost of a token.
_LONGROPE = {"rope_type": "longrope", "rope_theta": 10000.0}
SPECS: dict[str, dict[str, Any]] = {
    "phi-3-mini": {  # microsoft/Phi-3-mini-4k-instruct, 3.82 B parameters
        "vocab_size": 32064,
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "original_max_position_embeddings": 4096,
        "sliding_window": 2047,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    },
    "phi-3.5-mini": {  # microsoft/Phi-3.5-mini-instruct, 3.82 B parameters, 128k context
        "vocab_size": 32064,
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096,
        "sliding_window": 262144,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "rope_parameters": dict(_LONGROPE),
    },
    "phi-4-mini": {  # microsoft/Phi-4-mini-instruct, 3.84 B parameters, grouped-query attention, 200k vocabulary
        "vocab_size": 200064,
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 32,
        "num_attention_heads": 24,
        "num_key_value_heads": 8,
        "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096,
        "sliding_window": 262144,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True,
        "partial_rotary_factor": 0.75,
        "rope_parameters": {**_LONGROPE, "partial_rotary_factor": 0.75},
    },
}


def synthetic_names() -> list[str]:
    return sorted(SPECS)


def _check_name(name: str) -> str:
    key = str(name).lower()
    if key not in SPECS:
        raise InvalidParameterError(
            f"Unknown synthetic model {name!r}; choose one of {', '.join(synthetic_names())}."
        )
    return key


def synthetic_model(
    name: str,
    fmt: SyntheticFormat = "int4",
    *,
    cache: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """The cached synthetic model folder, built on first use (Phi-3-mini: 13 min, 10 GB peak RSS on 2 cores).

    ``fmt="int4"``: an OpenVINO IR folder, INT4 symmetric group 128 (what the NPU needs; the CPU and GPU run it
    too). ``fmt="hf"``: the bfloat16 Hugging Face checkpoint, for the transformers backend and other exporters.
    ``overrides`` changes config values (tests use it to shrink the model); the cache key includes them.
    """
    key = _check_name(name)
    if fmt not in ("int4", "hf"):
        raise InvalidParameterError(f"fmt must be 'int4' or 'hf', got {fmt!r}.")
    root = Path(cache) if cache is not None else cache_root() / "synthetic"
    suffix = "" if not overrides else "-" + "-".join(f"{k}{v}" for k, v in sorted(overrides.items()))
    hf_dir = cached_model_dir(root, f"{key}{suffix}-hf-bf16", lambda out: build_hf(key, out, overrides))
    if fmt == "hf":
        return hf_dir
    return cached_model_dir(root, f"{key}{suffix}-int4-sym-g128-ov", lambda out: _export_int4(hf_dir, out))


def build_hf(name: str, out_dir: Path, overrides: dict[str, Any] | None = None) -> Path:
    """Save a random bfloat16 ``Phi3ForCausalLM`` with ``name``'s architecture and the real Phi-3 tokenizer."""
    torch = require("torch", "torch", extra="transformers")
    transformers = require("transformers", "transformers")
    key = _check_name(name)
    out_dir = Path(out_dir)
    values = {**SPECS[key], **(overrides or {})}
    values["rope_parameters"] = _rope(values)
    config = transformers.Phi3Config(bos_token_id=1, eos_token_id=32000, pad_token_id=32000, **values)
    torch.manual_seed(0)
    # Built directly in bfloat16: in float32 Phi-3-mini alone would take 15 GB.
    model = transformers.Phi3ForCausalLM._from_config(config, dtype=torch.bfloat16).eval()
    _silence_rows_without_text(model, config.vocab_size)
    model.save_pretrained(out_dir, safe_serialization=True)
    del model
    _copy_phi3_tokenizer(out_dir)
    return out_dir


def _rope(values: dict[str, Any]) -> dict[str, Any]:
    """Long-RoPE needs one factor per rotary frequency: head_dim * partial_rotary_factor / 2 (48 for all three)."""
    rope = dict(values["rope_parameters"])
    if rope["rope_type"] == "longrope":
        head_dim = values["hidden_size"] // values["num_attention_heads"]
        count = int(head_dim * rope.get("partial_rotary_factor", 1.0)) // 2
        rope.setdefault("long_factor", [1.0] * count)
        rope.setdefault("short_factor", [1.0] * count)
    return rope


def _silence_rows_without_text(model: Any, vocab_size: int) -> None:
    """Phi-4-mini's 200k rows exceed the Phi-3 tokenizer: zero them so greedy decoding never picks an id
    the detokenizer cannot turn into text. The matmuls keep their full shape, so the cost is unchanged."""
    torch = require("torch", "torch", extra="transformers")
    if vocab_size <= PHI3_TOKENIZER_ROWS:
        return
    with torch.no_grad():
        model.get_output_embeddings().weight[PHI3_TOKENIZER_ROWS:].zero_()
        model.get_input_embeddings().weight[PHI3_TOKENIZER_ROWS:].zero_()


def _copy_phi3_tokenizer(out_dir: Path) -> None:
    """The real Phi-3 tokenizer, chat template and stop ids, as build_tiny_phi3 saves them for a tiny Phi-3."""
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny_phi3(Path(tmp) / "tiny", tokenizer="phi3")
        for path in tiny.iterdir():
            if path.is_file() and not path.name.startswith(("model", "config.json")):
                shutil.copy2(path, out_dir / path.name)


def _export_int4(hf_dir: Path, out_dir: Path) -> Path:
    from phi3_aipc.export.openvino import export_openvino

    return export_openvino(hf_dir, out_dir, weight_format="int4", sym=True, group_size=128, ratio=1.0)
