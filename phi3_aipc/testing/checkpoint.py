"""Writing Hugging Face checkpoint folders that every engine reads alike: tokenizer files and generation config.

Shared by the tiny Phi-3, the SmolLM2 conversion and the synthetic models. Heavy libraries are imported inside the
functions, through ``require``, so that a missing one becomes the project's install hint.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phi3_aipc.errors import BackendNotInstalledError

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerBase


def require(module: str, package: str, extra: str = "export") -> Any:
    """Import a heavy dependency, turning its absence into the project's install hint."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendNotInstalledError(backend="testing", package=package, extra=extra, cause=exc) from exc


def wrap_fast(tok: Tokenizer, **special: str) -> PreTrainedTokenizerBase:
    """A transformers fast tokenizer around a ``tokenizers`` one, with the inputs a Phi-3 model takes."""
    transformers = require("transformers", "transformers")
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_input_names=["input_ids", "attention_mask"],
        clean_up_tokenization_spaces=False,
        **special,
    )


def save_tokenizer(hf_tok: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """Save ``hf_tok`` so that transformers 4 and 5, openvino_tokenizers and ONNX Runtime GenAI all read it."""
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


def generation_config(eos_ids: list[int], pad: int, bos: int | None = None) -> Any:
    """generation_config.json's content: every engine takes its stop ids from there."""
    transformers = require("transformers", "transformers")
    return transformers.GenerationConfig(
        bos_token_id=bos, eos_token_id=list(dict.fromkeys(eos_ids)), pad_token_id=pad
    )
