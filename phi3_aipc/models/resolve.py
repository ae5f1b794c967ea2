"""The one model resolver: whatever the caller wrote -> an ``Artifact`` the chosen backend can run as it is.

alias / catalogue id -> pre-converted build for the device (or the packaged file), else a local path, else a Hub
repo; then the artifact is checked (a GGUF is validated, an IR gets its tokenizer IR), a packaged GGUF becomes an
OpenVINO IR once (``phi3_aipc.export.gguf``), so does a GGUF OpenVINO GenAI cannot read (``phi3_aipc.export.gguf_hf``),
and a Hugging Face checkpoint is exported once into the cache when the
backend needs another format.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from phi3_aipc import devices
from phi3_aipc.errors import CacheNotWritableError, InvalidParameterError, ModelNotFoundError
from phi3_aipc.families import ModelFamily, detect_family
from phi3_aipc.models import catalogue, files, hub
from phi3_aipc.models.catalogue import DEFAULT_MODEL, KnownModel
from phi3_aipc.models.files import ArtifactFormat

log = logging.getLogger(__name__)

# Formats a Hugging Face checkpoint can be exported to, and the exporter (``phi3_aipc.export`` target) for each.
_EXPORT_TARGETS: dict[str, str] = {"openvino-ir": "openvino", "onnx": "onnx"}


@dataclass(frozen=True)
class Artifact:
    """A model on disk, ready for a backend: what to load, in which format, and what it is."""

    path: Path
    format: ArtifactFormat
    #: The catalogue id, the Hub repo id, or the resolved local path: the same model always gets the same id.
    model_id: str
    family: ModelFamily
    #: Prompt plus output tokens the model accepts, from its own metadata (GGUF, config.json, genai_config.json).
    context_window: int | None = None
    #: The tokenizer's control and added special tokens as text (e.g. '<|end|>', '<|im_start|>').
    special_tokens: frozenset[str] = frozenset()
    revision: str | None = None


def model_text(model: str | Path | None) -> str:
    """The model argument as text: None is the default model; empty or blank is refused (it meant the cwd)."""
    if model is None:
        return DEFAULT_MODEL
    if isinstance(model, Path):
        return str(model)
    if not isinstance(model, str) or not model.strip():
        raise InvalidParameterError(
            f"model must be a model name, Hugging Face repo id or local path (e.g. 'phi-3-mini', 'smollm2', "
            f"'./my-model'), got {model!r}. Leave it unset for the default, {DEFAULT_MODEL}."
        )
    return model.strip()


def resolve(
    model: str | Path | None,
    device_kind: str,
    backend: str,
    *,
    revision: str | None = None,
    precision: str | None = None,
) -> Artifact:
    """The artifact of ``model`` that ``backend`` runs on a device of ``device_kind`` ('NPU', 'GPU', 'CPU', ...).

    ``revision`` pins a Hub download (branch, tag or commit); ``precision`` is the weights of an auto-export.
    """
    from phi3_aipc.backends import backend_info

    info = backend_info(backend)
    text = model_text(model)
    kind = devices.device_kind(device_kind)
    known = catalogue.find(text)
    if known is not None:
        path, fmt = _from_catalogue(known, kind, info.formats, info.name, revision)
        model_id = known.id
    else:
        path, fmt, model_id = _from_path_or_hub(text, revision)
    if fmt == "hf-checkpoint":
        files.check_checkpoint_config(path)
    if fmt == "gguf" and "openvino-ir" in info.formats:
        path, fmt = _gguf_as_ir(path, kind, model_id)
    if fmt not in info.formats:
        path, fmt = _convert(path, fmt, kind, info.name, info.formats, precision, model_id)
    _check_tokenizer(path, fmt, info.tokenizer)
    facts = files.read_facts(path, fmt)
    return Artifact(
        path=path,
        format=fmt,
        model_id=model_id,
        family=detect_family(model_id, facts.model_type, facts.vocab_size),
        context_window=facts.context_window,
        special_tokens=facts.special_tokens,
        revision=revision,
    )


def resolve_checkpoint(model: str | Path | None, *, revision: str | None = None) -> Path:
    """A local Hugging Face checkpoint folder for ``model`` (for export and the transformers backend)."""
    text = model_text(model)
    known = catalogue.find(text)
    if known is not None:
        if known.checkpoint is None:
            raise ModelNotFoundError(
                f"{known.id} has no Hugging Face checkpoint phi3-aipc knows of. {known.hint}"
            )
        path = hub.fetch(known.checkpoint, revision=revision, what="the Hugging Face checkpoint")
    else:
        path = files.local_path(text) or _fetch_repo(text, revision, "the Hugging Face checkpoint")
    if not (path.is_dir() and (path / "config.json").is_file()):
        raise ModelNotFoundError(
            f"'{path}' is not a Hugging Face checkpoint folder (no config.json). Export needs the original "
            "checkpoint: a folder with config.json, the weights and the tokenizer files, or its Hub repo id."
        )
    files.check_checkpoint_config(path)
    return path


# -- where the model comes from ----------------------------------------------------------------------------------
def _from_catalogue(
    known: KnownModel, kind: str, formats: tuple[str, ...], backend: str, revision: str | None
) -> tuple[Path, ArtifactFormat]:
    for fmt in formats:
        build = known.builds.get((fmt, kind))
        if build is not None:
            repo, subfolder = build
            path = hub.fetch(repo, subfolder=subfolder, revision=revision, what=f"the {fmt} build")
            return path, fmt  # type: ignore[return-value]
        if known.packaged is not None and known.packaged[0] == fmt:
            return known.packaged[1](), fmt  # type: ignore[return-value]
        if fmt == "hf-checkpoint" and known.checkpoint is not None:
            return hub.fetch(known.checkpoint, revision=revision, what="the Hugging Face checkpoint"), fmt
    wanted = " or ".join(formats)
    to = next((_EXPORT_TARGETS[f] for f in formats if f in _EXPORT_TARGETS), "openvino")
    hint = known.hint.format(checkpoint=known.checkpoint or known.id, to=to, preset=_preset(kind))
    raise ModelNotFoundError(
        f"There is no pre-converted {wanted} build of {known.id} for the {kind} that phi3-aipc trusts, so the "
        f"{backend} backend cannot run it there. {hint}"
    )


def _from_path_or_hub(text: str, revision: str | None) -> tuple[Path, ArtifactFormat, str]:
    local = files.local_path(text)
    if local is not None:
        path, fmt = files.detect_format(local)
        packaged = catalogue.find_packaged(path) if fmt == "gguf" else None
        return path, fmt, packaged.id if packaged else str(path)
    path, fmt = files.detect_format(_fetch_repo(text, revision, "the model"))
    return path, fmt, text


def _fetch_repo(text: str, revision: str | None, what: str) -> Path:
    if not hub.is_repo_id(text):
        raise ModelNotFoundError(
            f"'{text}' is neither a local path, a Hugging Face repo id (owner/name) nor a model phi3-aipc knows "
            f"({', '.join(m.id for m in catalogue.MODELS)})."
        )
    return hub.fetch(text, revision=revision, what=what)


# -- making it fit the backend -----------------------------------------------------------------------------------
def _convert(
    path: Path,
    fmt: ArtifactFormat,
    kind: str,
    backend: str,
    formats: tuple[str, ...],
    precision: str | None,
    model_id: str,
) -> tuple[Path, ArtifactFormat]:
    """A checkpoint is exported once (cached) into the first format the backend takes; anything else is refused."""
    target = next((f for f in formats if f in _EXPORT_TARGETS), None)
    if fmt != "hf-checkpoint" or target is None:
        known = catalogue.find(model_id)
        # A packaged catalogue model (SmolLM2's GGUF) has its own explanation of what to do instead.
        hint = known.hint if known is not None and known.packaged else _other_backends_hint(fmt)
        raise ModelNotFoundError(
            f"'{path}' is {_describe(fmt)}, which the {backend} backend does not load: it loads "
            f"{' or '.join(_describe(f) for f in formats)}. {hint}"
        )
    from phi3_aipc.export import auto_export, export_cache_path, plan_export
    from phi3_aipc.export.cache import is_complete

    to = _EXPORT_TARGETS[target]
    provider = devices.DEVICE_KINDS[kind].onnx_provider if to == "onnx" else None
    plan = plan_export(to, _preset(kind), precision, provider=provider)
    if not is_complete(export_cache_path(path.resolve(), plan)) and not _has_own_code(path):
        # The exporters' own readers report a broken config.json as a bare OSError; an export still to run
        # pays for transformers anyway, so read the config first. (Custom-code configs are read once trusted.)
        files.load_checkpoint_config(path)
    return auto_export(path, plan, model_arg=model_id), target  # type: ignore[return-value]


def _has_own_code(folder: Path) -> bool:
    try:
        return "auto_map" in json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False


def _gguf_as_ir(path: Path, kind: str, model_id: str) -> tuple[Path, ArtifactFormat]:
    """A GGUF as OpenVINO GenAI runs it on ``kind``.

    - a packaged GGUF becomes an OpenVINO IR in the cache on first use (OpenVINO GenAI's own reader writes it;
      later loads skip the GGUF graph build, and the NPU pipeline can run it);
    - a GGUF OpenVINO GenAI cannot read (K-quants such as Q4_K_M, Q5_0, ...), or any GGUF for the NPU, is
      converted once through transformers (``phi3_aipc.export.gguf_hf``, the `export` extra);
    - any other GGUF is loaded as it is.
    """
    from phi3_aipc.export.gguf_hf import convert_gguf_hf, loads_directly

    known = catalogue.find(model_id)
    preset = "npu" if kind == "NPU" else "cpu"  # the CPU and GPU share one IR
    if known is not None and known.packaged is not None:
        from phi3_aipc.export.gguf import convert_gguf

        try:
            return convert_gguf(path, preset, model_arg=model_id), "openvino-ir"
        except CacheNotWritableError as exc:
            if kind == "NPU":
                raise
            # The CPU and GPU can still load the GGUF itself, only more slowly: the model must not fail for that.
            log.warning("%s Loading the GGUF itself (slower) instead of its IR.", exc)
            return path, "gguf"
    if kind == "NPU" or not loads_directly(files.read_facts(path, "gguf")):
        # The NPU pipeline cannot run a GGUF at all: it gets the symmetric int4 IR it needs.
        return convert_gguf_hf(path, preset, model_arg=model_id), "openvino-ir"
    return path, "gguf"


def _check_tokenizer(path: Path, fmt: ArtifactFormat, tokenizer: str) -> None:
    """The tokenizer files the backend reads must be there (OpenVINO GenAI: the tokenizer IR, written if needed)."""
    if fmt != "openvino-ir":
        return
    from phi3_aipc.export.openvino import HF_TOKENIZER_FILES, ensure_openvino_tokenizer

    if tokenizer == "openvino":
        ensure_openvino_tokenizer(path)
    elif tokenizer == "hf" and not any((path / name).is_file() for name in HF_TOKENIZER_FILES):
        raise ModelNotFoundError(
            f"'{path}' has no Hugging Face tokenizer files ({', '.join(HF_TOKENIZER_FILES)}), which the "
            "optimum-intel backend tokenizes with. Copy them from the original checkpoint, or use backend='openvino'."
        )


def _preset(kind: str) -> str:
    return devices.DEVICE_KINDS[kind].export_preset


_DESCRIPTIONS = {
    "openvino-ir": "an OpenVINO IR folder",
    "openvino-vlm": "an OpenVINO vision-model IR folder (openvino_language_model.xml)",
    "gguf": "a GGUF file",
    "onnx": "an ONNX Runtime GenAI folder (genai_config.json)",
    "hf-checkpoint": "a Hugging Face checkpoint folder",
}


def _describe(fmt: str) -> str:
    return _DESCRIPTIONS.get(fmt, fmt)


def _other_backends_hint(fmt: str) -> str:
    from phi3_aipc.backends import BACKENDS

    fits = [f"backend='{b.name}'" for b in BACKENDS.values() if fmt in b.formats]
    return (
        f"Use {' or '.join(fits)} for it, or pass the original Hugging Face checkpoint folder."
        if fits
        else ""
    )
