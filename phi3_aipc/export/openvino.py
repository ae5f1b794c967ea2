"""Model conversion: HF checkpoint folder -> OpenVINO IR, and the tokenizer IR OpenVINO GenAI needs.

Heavy libraries are imported inside the functions so that ``import phi3_aipc`` never pulls in OpenVINO,
torch or transformers.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path
from typing import Any, Literal

from phi3_aipc.errors import BackendNotInstalledError

__all__ = ["OV_DETOKENIZER", "OV_TOKENIZER", "WeightFormat", "ensure_openvino_tokenizer", "export_openvino"]

OV_TOKENIZER = "openvino_tokenizer.xml"
OV_DETOKENIZER = "openvino_detokenizer.xml"
WeightFormat = Literal["fp32", "fp16", "int8", "int4"]

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


def _import(module: str, package: str, extra: str) -> Any:
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
    ov = _import("openvino", "openvino", "openvino")
    ov_tokenizers = _import("openvino_tokenizers", "openvino-tokenizers", "openvino")
    transformers = _import("transformers", "transformers", "openvino")
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    tokenizer, detokenizer = ov_tokenizers.convert_tokenizer(hf_tokenizer, with_detokenizer=True)
    _keep_chat_template(tokenizer, hf_tokenizer)
    for model, name in ((detokenizer, OV_DETOKENIZER), (tokenizer, OV_TOKENIZER)):
        _save_atomically(ov, model, model_dir / name)


def _save_atomically(ov: Any, model: Any, xml_path: Path) -> None:
    """Save under a temporary name and rename: a crash must not leave an IR that looks complete but is not."""
    tmp_xml = xml_path.with_name(f".tmp-{xml_path.name}")
    ov.save_model(model, tmp_xml)
    # The .bin goes first: the .xml's presence is what ensure_openvino_tokenizer trusts.
    tmp_xml.with_suffix(".bin").replace(xml_path.with_suffix(".bin"))
    tmp_xml.replace(xml_path)


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
        raise RuntimeError(
            f"Exported {hf_dir} to {out_dir}, but {OV_TOKENIZER} is missing: OpenVINO GenAI could not tokenize. "
            "Check that the folder's HF tokenizer loads with transformers.AutoTokenizer."
        )
    return out_dir


def _export_float(hf_dir: Path, out_dir: Path, weight_format: str) -> None:
    exporters = _import("optimum.exporters.openvino", "optimum-intel", "export")
    intel = _import("optimum.intel", "optimum-intel", "export")
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
    intel = _import("optimum.intel", "optimum-intel", "export")
    _import("nncf", "nncf", "export")
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
