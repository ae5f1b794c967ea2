"""HF checkpoint folder -> OpenVINO IR (optimum-intel + NNCF), and the tokenizer IR OpenVINO GenAI needs.

Heavy libraries are imported inside the functions so that ``import phi3_aipc`` never pulls in OpenVINO,
torch or transformers.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from phi3_aipc.errors import (
    BackendNotInstalledError,
    ExportError,
    InvalidModelFileError,
    InvalidParameterError,
)

if TYPE_CHECKING:
    from phi3_aipc.export.plan import ExportPlan

__all__ = [
    "HF_TOKENIZER_FILES",
    "OV_DETOKENIZER",
    "OV_TOKENIZER",
    "WeightFormat",
    "ensure_openvino_tokenizer",
    "export_openvino",
]

log = logging.getLogger(__name__)

OV_TOKENIZER = "openvino_tokenizer.xml"
OV_DETOKENIZER = "openvino_detokenizer.xml"
WeightFormat = Literal["fp32", "fp16", "int8", "int4"]
#: Any one of these means the folder has a Hugging Face tokenizer the tokenizer IR can be converted from.
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")

# Files an engine reads next to the weights: tokenizer, chat template, and stop ids (generation_config.json).
_SIDECAR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "generation_config.json",
)


def import_backend_module(module: str, package: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendNotInstalledError(backend="openvino", package=package, extra=extra, cause=exc) from exc


def ensure_openvino_tokenizer(model_dir: Path) -> None:
    """Write ``openvino_tokenizer.xml``/``openvino_detokenizer.xml`` from the HF tokenizer in ``model_dir``.

    Does nothing when both exist. optimum-intel skips this step silently when conversion fails (it only logs at
    DEBUG), and without these files ``LLMPipeline.generate(str)`` cannot tokenize.
    """
    model_dir = Path(model_dir)
    if (model_dir / OV_TOKENIZER).is_file() and (model_dir / OV_DETOKENIZER).is_file():
        return
    ov = import_backend_module("openvino", "openvino", "openvino")
    ov_tokenizers = import_backend_module("openvino_tokenizers", "openvino-tokenizers", "openvino")
    transformers = import_backend_module("transformers", "transformers", "openvino")
    if not any((model_dir / name).is_file() for name in HF_TOKENIZER_FILES):
        raise InvalidModelFileError(
            f"The OpenVINO model in '{model_dir}' has no tokenizer: neither {OV_TOKENIZER} nor Hugging Face "
            f"tokenizer files ({', '.join(HF_TOKENIZER_FILES)}) to convert one from. Copy the original "
            f"checkpoint's tokenizer files into the folder, or re-export it with `phi3-aipc export`."
        )
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    tokenizer, detokenizer = ov_tokenizers.convert_tokenizer(hf_tokenizer, with_detokenizer=True)
    _keep_chat_template(tokenizer, hf_tokenizer)
    try:
        # The detokenizer goes first: the tokenizer's presence is what the check above trusts.
        for model, name in ((detokenizer, OV_DETOKENIZER), (tokenizer, OV_TOKENIZER)):
            _save_atomically(ov, model, model_dir / name)
    except OSError as exc:
        raise InvalidModelFileError(
            f"The OpenVINO model in '{model_dir}' has no tokenizer IR ({OV_TOKENIZER}), and it cannot be written "
            f"there ({exc.strerror or exc}). Make the folder writable once, or copy it somewhere writable, or "
            f"re-export it with `phi3-aipc export`."
        ) from exc


def _save_atomically(ov: Any, model: Any, xml_path: Path) -> None:
    """Save into a fresh temporary folder beside the target and rename: never a predictable name, and a crash
    cannot leave an IR that looks complete but is not."""
    staging = Path(tempfile.mkdtemp(prefix=".phi3-aipc-", dir=xml_path.parent))
    try:
        ov.save_model(model, staging / xml_path.name)
        os.replace(staging / xml_path.with_suffix(".bin").name, xml_path.with_suffix(".bin"))
        os.replace(staging / xml_path.name, xml_path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _keep_chat_template(tokenizer: Any, hf_tokenizer: Any) -> None:
    """OpenVINO GenAI's apply_chat_template reads the template from the tokenizer IR's rt_info."""
    template = getattr(hf_tokenizer, "chat_template", None)
    if isinstance(template, str) and not tokenizer.has_rt_info("chat_template"):
        tokenizer.set_rt_info(template, "chat_template")


def export_openvino(
    hf_dir: Path,
    out_dir: Path,
    *,
    weight_format: WeightFormat = "fp32",
    sym: bool = False,
    group_size: int | None = None,
    ratio: float | None = None,
    group_size_fallback: str | None = None,
) -> Path:
    """Export a local HF checkpoint folder to an OpenVINO GenAI-ready folder (IR + tokenizer IR + sidecars).

    int8/int4 use NNCF weight-only compression; ``sym``, ``group_size`` (-1 = channel-wise) and ``ratio`` are its
    options. The NPU needs ``weight_format="int4", sym=True`` with ``group_size`` 128 or -1.
    ``group_size_fallback`` ("error", "ignore", "adjust") says what NNCF does with layers the group size does not divide.
    """
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    if weight_format not in ("fp32", "fp16", "int8", "int4"):
        raise ValueError(f"weight_format must be fp32, fp16, int8 or int4, not {weight_format!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if weight_format in ("fp32", "fp16"):
        _export_float(hf_dir, out_dir, weight_format)
    else:
        _export_compressed(
            hf_dir,
            out_dir,
            weight_format,
            sym=sym,
            group_size=group_size,
            ratio=ratio,
            fallback=group_size_fallback,
        )
    _copy_sidecars(hf_dir, out_dir)
    ensure_openvino_tokenizer(out_dir)
    if not (out_dir / OV_TOKENIZER).is_file():
        raise ExportError(
            f"Exported {hf_dir} to {out_dir}, but {OV_TOKENIZER} is missing: OpenVINO GenAI could not tokenize. "
            "Check that the folder's HF tokenizer loads with transformers.AutoTokenizer."
        )
    return out_dir


def _export_float(hf_dir: Path, out_dir: Path, weight_format: str) -> None:
    exporters = import_backend_module("optimum.exporters.openvino", "optimum-intel", "export")
    intel = import_backend_module("optimum.intel", "optimum-intel", "export")
    # An explicit OVConfig also stops optimum's automatic int8 compression of models over 1B parameters.
    exporters.main_export(
        model_name_or_path=str(hf_dir),
        output=out_dir,
        task="text-generation-with-past",
        ov_config=intel.OVConfig(dtype=weight_format),
        # The tokenizer IR comes from ensure_openvino_tokenizer, one code path for every weight format.
        convert_tokenizer=False,
        library_name="transformers",
        local_files_only=True,
    )


def _export_compressed(
    hf_dir: Path,
    out_dir: Path,
    weight_format: str,
    *,
    sym: bool,
    group_size: int | None,
    ratio: float | None,
    fallback: str | None = None,
) -> None:
    intel = import_backend_module("optimum.intel", "optimum-intel", "export")
    import_backend_module("nncf", "nncf", "export")
    bits = 8 if weight_format == "int8" else 4
    options: dict[str, Any] = {"bits": bits, "sym": sym}
    if bits == 8:
        # int8 is always channel-wise over every layer; group_size/ratio only mean something for int4.
        options["group_size"] = -1
    else:
        options.update(
            {
                k: v
                for k, v in (("group_size", group_size), ("ratio", ratio), ("group_size_fallback", fallback))
                if v is not None
            }
        )
    model = intel.OVModelForCausalLM.from_pretrained(
        hf_dir,
        export=True,
        compile=False,
        quantization_config=intel.OVWeightQuantizationConfig(**options),
        local_files_only=True,
    )
    model.save_pretrained(out_dir)


def _copy_sidecars(hf_dir: Path, out_dir: Path) -> None:
    for name in _SIDECAR_FILES:
        if (hf_dir / name).is_file():
            shutil.copy2(hf_dir / name, out_dir / name)


# -- steps of an export (see phi3_aipc.export.build) -----------------------------------------------------------
def run_export(source: Path, staging: Path, plan: ExportPlan) -> None:
    try:
        export_openvino(
            source,
            staging,
            weight_format=plan.precision,  # type: ignore[arg-type]
            sym=bool(plan.sym),
            group_size=plan.group_size,
            ratio=plan.ratio,
            group_size_fallback=plan.group_size_fallback,
        )
    except Exception as exc:
        if type(exc).__name__ != "InvalidGroupSizeError":  # nncf.errors, without importing nncf here
            raise
        first_line = str(exc).splitlines()[0]
        raise InvalidParameterError(
            f"{first_line} Some of this model's layer sizes are not multiples of {plan.group_size}. "
            + (
                "For the NPU use channel-wise int4: --group-size -1 (the NPU preset's default)."
                if plan.device == "npu"
                else "Use --group-size -1 (channel-wise) or a group size that divides the layer sizes."
            )
        ) from exc


def check_tokenizer(source: Path, staging: Path, plan: ExportPlan) -> None:
    """The tokenizer IR must exist and round-trip a sample; without it OpenVINO GenAI cannot take text."""
    missing = [name for name in (OV_TOKENIZER, OV_DETOKENIZER) if not (staging / name).is_file()]
    if missing:
        raise ExportError(
            f"The export of '{source}' has no {' or '.join(missing)}, so OpenVINO GenAI could not tokenize text. "
            "Check that the folder's tokenizer loads with transformers.AutoTokenizer and that openvino-tokenizers "
            "matches the installed openvino version."
        )
    # Plain OpenVINO + openvino_tokenizers (both needed to export anyway), so no openvino-genai is required.
    import openvino as ov
    import openvino_tokenizers  # noqa: F401 - registers the tokenizer operations with OpenVINO

    core = ov.Core()
    sample = "Hello, AI PC!"
    ids = core.compile_model(staging / OV_TOKENIZER, "CPU")([sample])["input_ids"]
    decoded = str(core.compile_model(staging / OV_DETOKENIZER, "CPU")(ids)[0][0]) if ids.size else ""
    if not decoded.strip():
        raise ExportError(
            f"The tokenizer IR written for '{source}' turns {sample!r} into {ids} and back into {decoded!r}: "
            "OpenVINO GenAI would produce no text. Report this with the model's tokenizer files."
        )
    if decoded.strip() != sample:
        # Some tokenizers normalise text (lower-casing, Unicode forms): worth a note, not a failed export.
        log.warning("The tokenizer IR decodes %r as %r.", sample, decoded)


def weight_types(folder: Path, plan: ExportPlan) -> dict[str, int]:
    """How many 2-D+ constants (weights, scales) the IR stores per element type: what compression really did."""
    import openvino as ov

    model = ov.Core().read_model(folder / "openvino_model.xml")
    counts: dict[str, int] = {}
    for op in model.get_ops():
        shape = op.get_output_partial_shape(0) if op.get_type_name() == "Constant" else None
        if shape is not None and shape.rank.is_static and shape.rank.get_length() >= 2:
            name = op.get_output_element_type(0).get_type_name()
            counts[name] = counts.get(name, 0) + 1
    if plan.precision == "int4" and not counts.get("i4") and not counts.get("u4"):
        # NNCF leaves layers whose input size is not a multiple of the group size at the backup precision.
        log.warning(
            "No layer was compressed to int4 (group size %s does not divide this model's layer sizes); the "
            "weights are int8. Try --group-size -1 (channel-wise) or a group size that divides the hidden size.",
            plan.group_size,
        )
    return dict(sorted(counts.items()))
