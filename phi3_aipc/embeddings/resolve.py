"""Whatever the caller named -> an OpenVINO IR folder TextEmbeddingPipeline / TextRerankPipeline can load.

catalogue name or alias -> its packaged folder (offline) or its Hub checkpoint; else a local path (an IR folder is
used as it is, a Hugging Face checkpoint folder is exported once into the cache); else a Hub repo id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from phi3_aipc.embeddings.catalogue import EncoderSettings, Task, default_model, find_encoder, read_settings
from phi3_aipc.errors import InvalidParameterError, ModelNotFoundError
from phi3_aipc.models import files, hub

IR_MARKER = "openvino_model.xml"
# What an encoder needs from a Hub repo: sentence-transformers repos also hold ONNX and OpenVINO variants
# (hundreds of MB) that the export never reads.
_HUB_PATTERNS = [
    # An OpenVINO IR at the repo's root is used as it is (OpenVINO/* repos); 'openvino/...' subfolders are not.
    "openvino_*.xml",
    "openvino_*.bin",
    "*.json",
    "*.txt",
    "*.model",
    "model.safetensors",
    "pytorch_model.bin",
    "1_Pooling/*",
]


@dataclass(frozen=True)
class EncoderArtifact:
    """An encoder on disk, ready for OpenVINO GenAI, and the settings it runs with."""

    path: Path
    #: The catalogue id, the Hub repo id, or the resolved local path.
    model_id: str
    task: Task
    settings: EncoderSettings


def resolve_encoder(model: str | Path | None, task: Task, *, revision: str | None = None) -> EncoderArtifact:
    """The IR folder and settings of ``model`` for ``task`` ('embed' or 'rerank'), exporting it once if needed."""
    text = _model_text(model, task)
    known = find_encoder(text)
    if known is not None and known.task != task:
        other = "an embedding model" if known.task == "embed" else "a reranker (cross-encoder)"
        raise InvalidParameterError(
            f"'{text}' is {other}, not {'an embedding model' if task == 'embed' else 'a reranker'}. "
            f"Use {default_model(task)} or another {task} model."
        )
    if known is not None:
        folder = _catalogue_folder(known.packaged, known.id, revision)
        model_id = known.id
    else:
        folder = files.local_path(text) or _fetch(text, revision)
        model_id = text if hub.is_repo_id(text) and not Path(text).exists() else str(folder)
    folder = _model_folder(folder)
    settings = known.settings if known is not None else read_settings(folder, task)
    if not (folder / IR_MARKER).is_file():
        from phi3_aipc.export.encoders import auto_export_encoder

        folder = auto_export_encoder(folder, task, model_arg=model_id)
    else:
        from phi3_aipc.export.openvino import ensure_openvino_tokenizer

        ensure_openvino_tokenizer(folder)
    return EncoderArtifact(folder, model_id, task, settings)


def _model_text(model: str | Path | None, task: Task) -> str:
    if model is None:
        return default_model(task)
    if isinstance(model, Path):
        return str(model)
    if not isinstance(model, str) or not model.strip():
        raise InvalidParameterError(
            f"model must be a model name, Hugging Face repo id or local folder (e.g. 'minilm', 'bge-small', "
            f"'./my-encoder'), got {model!r}. Leave it unset for the default, {default_model(task)}."
        )
    return model.strip()


def _catalogue_folder(packaged: object, repo: str, revision: str | None) -> Path:
    if packaged is not None and revision is None:
        try:
            return packaged()  # type: ignore[operator]
        except ModelNotFoundError:
            pass  # not installed: the Hub may still have it (the error below says both)
    return _fetch(repo, revision)


def _fetch(text: str, revision: str | None) -> Path:
    if not hub.is_repo_id(text):
        raise ModelNotFoundError(
            f"'{text}' is neither a local folder, a Hugging Face repo id (owner/name) nor an encoder phi3-aipc "
            f"knows (e.g. 'minilm', 'bge-small', 'ms-marco-minilm')."
        )
    from huggingface_hub import snapshot_download

    try:
        # The cache first, without the network, so a cached model works offline.
        return Path(
            snapshot_download(text, revision=revision, allow_patterns=_HUB_PATTERNS, local_files_only=True)
        )
    except Exception:  # noqa: BLE001 - any miss (not cached, offline, unknown revision) means: try the network
        pass
    try:
        return Path(snapshot_download(text, revision=revision, allow_patterns=_HUB_PATTERNS))
    except Exception as exc:
        raise ModelNotFoundError(
            f"Could not find the encoder '{text}' in the Hugging Face cache, and downloading it failed "
            f"({type(exc).__name__}: {exc}). Connect to the internet once, or `hf download {text}` and copy the "
            f"Hugging Face cache here, or pass a local folder instead."
        ) from exc


def _model_folder(path: Path) -> Path:
    if path.is_file() and path.name in (IR_MARKER, "config.json"):
        path = path.parent
    if path.is_dir() and ((path / IR_MARKER).is_file() or (path / "config.json").is_file()):
        return path
    raise ModelNotFoundError(
        f"'{path}' holds no OpenVINO encoder IR ({IR_MARKER}) and no Hugging Face checkpoint (config.json). Pass "
        f"a folder with one of them (an IR folder also needs {IR_MARKER.replace('model', 'tokenizer')} or the "
        f"Hugging Face tokenizer files)."
    )
