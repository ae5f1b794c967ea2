"""What a model on disk is: its format, whether it is intact, and the facts its metadata states.

A broken file must never reach a runtime: OpenVINO GenAI segfaults on a truncated GGUF. Every GGUF is read by the
``gguf`` package's reader first, which raises on truncated or corrupt files.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from phi3_aipc.errors import BackendNotInstalledError, InvalidModelFileError, ModelNotFoundError

ArtifactFormat = Literal["openvino-ir", "openvino-vlm", "gguf", "onnx", "hf-checkpoint"]

# Marker file -> the format of a folder that holds it, in the order they are tried.
_FOLDER_MARKERS: tuple[tuple[str, ArtifactFormat], ...] = (
    ("openvino_model.xml", "openvino-ir"),
    ("genai_config.json", "onnx"),
    # A vision model's IR (VLMPipeline): language, text-embeddings and vision-embeddings models, no openvino_model.
    ("openvino_language_model.xml", "openvino-vlm"),
    ("config.json", "hf-checkpoint"),
)
_MODEL_SUFFIXES = (".gguf", ".xml", ".onnx")
#: What a GGUF's metadata said, kept next to the OpenVINO IR converted from it (an IR has no config.json).
FACTS_FILE = "phi3_aipc_model_facts.json"
# GGUF token types (gguf.TokenType): CONTROL and USER_DEFINED are the tokens a chat template's markers use.
_GGUF_SPECIAL_TYPES = (3, 4)


@dataclass(frozen=True)
class ModelFacts:
    """What a model's own metadata says (None where it does not say)."""

    context_window: int | None = None
    model_type: str | None = None
    vocab_size: int | None = None
    #: The tokenizer's control and added special tokens as text, e.g. '<|end|>'.
    special_tokens: frozenset[str] = frozenset()
    #: GGUF only: the GGML types of its weight matrices (2-D+ tensors), e.g. {'Q4_K', 'Q6_K', 'Q5_0'}.
    matrix_types: frozenset[str] = frozenset()


def local_path(model: str) -> Path | None:
    """The model as a local path, if it is one. A path-looking string that does not exist is an error."""
    path = Path(os.path.expanduser(model))
    if path.exists():
        return path.resolve()
    from phi3_aipc.models.hub import is_repo_id

    looks_like_path = model.startswith(("/", ".", "~")) or (
        os.sep in model.strip("/") and not is_repo_id(model)
    )
    if looks_like_path or model.lower().endswith(_MODEL_SUFFIXES):
        raise ModelNotFoundError(
            f"No model at '{model}': the path does not exist. Pass an existing OpenVINO IR folder, GGUF file, "
            f"ONNX Runtime GenAI folder or Hugging Face checkpoint folder, or a Hugging Face repo id."
        )
    return None


def detect_format(path: Path) -> tuple[Path, ArtifactFormat]:
    """(the folder or file to load, its format); a path that holds no model is an error saying what would."""
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return path, "gguf"
        for marker, fmt in _FOLDER_MARKERS:
            if path.name == marker:
                return path.parent, fmt
        raise ModelNotFoundError(
            f"'{path}' is a file but not a model: pass a .gguf file or a model folder (OpenVINO IR, ONNX Runtime "
            f"GenAI or Hugging Face checkpoint)."
        )
    for marker, fmt in _FOLDER_MARKERS:
        if (path / marker).is_file():
            return path, fmt
    raise ModelNotFoundError(
        f"'{path}' holds no OpenVINO model (openvino_model.xml), no ONNX Runtime GenAI model (genai_config.json) "
        f"and no Hugging Face checkpoint (config.json). Pass a folder with one of them, or a .gguf file."
    )


def read_facts(path: Path, fmt: ArtifactFormat) -> ModelFacts:
    """Context window, architecture, vocabulary and special tokens from the model's metadata; GGUFs are validated."""
    marker = path if fmt == "gguf" else path / ("genai_config.json" if fmt == "onnx" else "config.json")
    if fmt == "openvino-ir" and not marker.is_file() and (path / FACTS_FILE).is_file():
        marker = path / FACTS_FILE
    try:
        stat = marker.stat()
    except FileNotFoundError:
        return ModelFacts(special_tokens=_tokenizer_specials(str(path), 0))
    if fmt == "gguf":
        return _gguf_facts(str(path), stat.st_size, stat.st_mtime_ns)
    return _folder_facts(str(path), fmt, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _folder_facts(folder: str, fmt: ArtifactFormat, mtime_ns: int) -> ModelFacts:
    del mtime_ns  # part of the cache key only
    path = Path(folder)
    specials = _tokenizer_specials(folder, 0)
    if fmt == "onnx":
        model = _read_json(path / "genai_config.json").get("model", {})
        return ModelFacts(
            _int(model.get("context_length")), model.get("type"), _int(model.get("vocab_size")), specials
        )
    if fmt == "openvino-ir" and not (path / "config.json").is_file():
        saved = _read_json(path / FACTS_FILE)
        return ModelFacts(
            _int(saved.get("context_window")),
            saved.get("model_type"),
            _int(saved.get("vocab_size")),
            frozenset(str(t) for t in saved.get("special_tokens") or ()),
        )
    config = _read_json(path / "config.json")
    return ModelFacts(
        _int(config.get("max_position_embeddings")),
        config.get("model_type"),
        _int(config.get("vocab_size")),
        specials,
    )


def check_checkpoint_config(folder: Path) -> None:
    """Refuse a checkpoint whose config.json is not a JSON object naming its model_type (cheap: no transformers).

    Without this, transformers' own reader reports a broken config.json as a bare OSError, TypeError or KeyError.
    """
    path = Path(folder) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise _broken_config(path, f"it cannot be read as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise _broken_config(path, f"it holds a JSON {type(data).__name__}, not an object")
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or not model_type.strip():
        raise _broken_config(
            path, f"its 'model_type' is {model_type!r}, not an architecture name such as 'phi3'"
        )


def load_checkpoint_config(folder: Path, *, trust_remote_code: bool = False) -> Any:
    """The checkpoint's ``transformers`` config, every failure of which names config.json and what was wrong."""
    import transformers

    check_checkpoint_config(folder)
    path = Path(folder) / "config.json"
    try:
        return transformers.AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, TypeError, its own errors
        reason = " ".join(str(exc).split())[:300] or "no message"
        raise _broken_config(path, f"transformers cannot read it ({type(exc).__name__}: {reason})") from exc


def _broken_config(path: Path, reason: str) -> InvalidModelFileError:
    return InvalidModelFileError(
        f"'{path}' is not a usable model config: {reason}. Restore the checkpoint's config.json (download the "
        f"model again), or pass another model."
    )


def save_facts(folder: Path, facts: ModelFacts) -> None:
    """Keep ``facts`` (read from a GGUF) next to the IR converted from it, where ``read_facts`` finds them."""
    saved = {
        "context_window": facts.context_window,
        "model_type": facts.model_type,
        "vocab_size": facts.vocab_size,
        "special_tokens": sorted(facts.special_tokens),
    }
    (folder / FACTS_FILE).write_text(json.dumps(saved, indent=2) + "\n")


@functools.lru_cache(maxsize=64)
def _tokenizer_specials(folder: str, _: int) -> frozenset[str]:
    """Special added tokens from tokenizer.json, else from tokenizer_config.json's added_tokens_decoder."""
    path = Path(folder)
    added = _read_json(path / "tokenizer.json").get("added_tokens") or list(
        (_read_json(path / "tokenizer_config.json").get("added_tokens_decoder") or {}).values()
    )
    return frozenset(
        str(t["content"]) for t in added if isinstance(t, dict) and t.get("special") and t.get("content")
    )


@functools.lru_cache(maxsize=32)
def _gguf_facts(path: str, size: int, mtime_ns: int) -> ModelFacts:
    """Parse (and so validate) a GGUF once per file version: the reader takes seconds on a large vocabulary."""
    del size, mtime_ns  # part of the cache key only: a rewritten file is read again
    if os.path.getsize(path) == 0:
        raise InvalidModelFileError(f"'{path}' is empty (0 bytes), not a GGUF model. Download it again.")
    try:
        from gguf import GGUFReader
    except ImportError as exc:
        # Never hand an unchecked GGUF to OpenVINO GenAI: a broken one crashes the process.
        raise BackendNotInstalledError("openvino", "gguf", "openvino", exc) from exc

    try:
        reader = GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 - the reader fails in many ways (ValueError, KeyError, IndexError...)
        raise InvalidModelFileError(
            f"'{path}' is not a valid GGUF file ({type(exc).__name__}: {exc}). It may be truncated or corrupt, or "
            f"not a GGUF at all; download it again, or pass another model."
        ) from exc
    arch = _gguf_value(reader, "general.architecture")
    if arch:
        _check_hyperparameters(path, reader, str(arch))
    tokens = _gguf_value(reader, "tokenizer.ggml.tokens") or []
    types = _gguf_value(reader, "tokenizer.ggml.token_type") or []
    return ModelFacts(
        context_window=_int(_gguf_value(reader, f"{arch}.context_length")) if arch else None,
        model_type=str(arch) if arch else None,
        vocab_size=len(tokens) or None,
        special_tokens=frozenset(
            str(token) for token, kind in zip(tokens, types, strict=False) if kind in _GGUF_SPECIAL_TYPES
        ),
        matrix_types=frozenset(t.tensor_type.name for t in reader.tensors if len(t.shape) >= 2),
    )


def _check_hyperparameters(path: str, reader: Any, arch: str) -> None:
    """Refuse hyperparameters the loader divides or allocates by when they are impossible or disagree with the
    tensors: OpenVINO GenAI's GGUF reader trusts them, and e.g. head_count = 0 kills the process with SIGFPE."""
    hyper = {
        key[len(arch) + 1 :]: _gguf_value(reader, key) for key in reader.fields if key.startswith(f"{arch}.")
    }
    shapes = {t.name: [int(n) for n in t.shape] for t in reader.tensors}
    problems = [
        *_impossible_values(hyper),
        *_inconsistent_heads(hyper),
        *_tensor_disagreements(hyper, shapes),
    ]
    if problems:
        raise InvalidModelFileError(
            f"'{path}' has impossible model hyperparameters ({arch}.*): {'; '.join(problems)}. The file's "
            f"metadata is corrupt or was edited by hand; download the model again, or pass another model."
        )


_GGUF_COUNTS = (
    "block_count",
    "context_length",
    "embedding_length",
    "feed_forward_length",
    "attention.head_count",
)
_GGUF_POSITIVE_FLOATS = ("attention.layer_norm_rms_epsilon", "attention.layer_norm_epsilon", "rope.freq_base")


def _impossible_values(hyper: dict[str, Any]) -> list[str]:
    problems = [
        f"{k} is {hyper[k]}, it must be at least 1" for k in _GGUF_COUNTS if _count(hyper.get(k)) == 0
    ]
    for key in _GGUF_POSITIVE_FLOATS:
        number = hyper.get(key)
        if isinstance(number, float) and not (math.isfinite(number) and number > 0):
            problems.append(f"{key} is {number}, it must be a positive number")
    return problems


def _inconsistent_heads(hyper: dict[str, Any]) -> list[str]:
    heads, width = _count(hyper.get("attention.head_count")), _count(hyper.get("embedding_length"))
    kv_heads = _count(hyper.get("attention.head_count_kv"))
    problems = []
    if heads and kv_heads is not None and (kv_heads == 0 or heads % kv_heads):
        problems.append(
            f"attention.head_count_kv is {kv_heads}, it must divide attention.head_count ({heads})"
        )
    if heads and width and width % heads:
        problems.append(f"embedding_length ({width}) is not a multiple of attention.head_count ({heads})")
    return problems


def _tensor_disagreements(hyper: dict[str, Any], shapes: dict[str, list[int]]) -> list[str]:
    """Hyperparameters that disagree with the tensors' own shapes (GGUF lists a tensor's dimensions inner first)."""
    problems = []
    layers = {name.split(".")[1] for name in shapes if name.startswith("blk.")}
    blocks = _count(hyper.get("block_count"))
    if blocks is not None and layers and blocks != len(layers):
        problems.append(f"block_count is {blocks}, but the file holds {len(layers)} layers")
    width, feed_forward = _count(hyper.get("embedding_length")), _count(hyper.get("feed_forward_length"))
    embedding, up = shapes.get("token_embd.weight"), shapes.get("blk.0.ffn_up.weight")
    if width is not None and embedding and embedding[0] != width:
        problems.append(f"embedding_length is {width}, but token_embd.weight is {embedding[0]} wide")
    if feed_forward is not None and up and len(up) == 2 and up[1] != feed_forward:
        problems.append(f"feed_forward_length is {feed_forward}, but blk.0.ffn_up.weight has {up[1]} rows")
    heads, kv_heads = _count(hyper.get("attention.head_count")), _count(hyper.get("attention.head_count_kv"))
    key = shapes.get("blk.0.attn_k.weight")
    if heads and kv_heads and width and width % heads == 0 and key and len(key) == 2:
        expected = kv_heads * (width // heads)
        if key[1] != expected:
            problems.append(
                f"attention.head_count_kv ({kv_heads}) times the head size ({width // heads}) is {expected}, "
                f"but blk.0.attn_k.weight has {key[1]} rows"
            )
    return problems


def _count(value: Any) -> int | None:
    """A scalar integer hyperparameter; None for a missing one or a per-layer list (left to the loader)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _gguf_value(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return field.contents() if field is not None else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise InvalidModelFileError(
            f"'{path}' cannot be read as JSON ({exc}); restore the model's file."
        ) from exc
    return data if isinstance(data, dict) else {}


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
