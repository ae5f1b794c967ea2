"""A packaged GGUF -> an OpenVINO IR folder, once, so later loads skip OpenVINO GenAI's GGUF graph build.

OpenVINO GenAI rebuilds a GGUF's graph on every ``LLMPipeline`` (seconds per process) and first compiles it while
answering; an IR loads from disk and its compiled blob is cached. The conversion is OpenVINO GenAI's own
(``enable_save_ov_model``: it writes the IR and the tokenizer IRs next to the GGUF it loads, so it loads a link to
the GGUF from the staging folder). Two repairs follow, because the graph it builds (2026.4) trips the NPU
pipeline:

- every KV-cache state's variable id ends in ``present.N.key``, the value's included, so the NPU pipeline's
  stateless conversion names two outputs alike ("Duplicate generate output tensor name");
- for the NPU only: the grouped-query ``repeat_kv`` broadcasts to a sequence length of 0 (the static-shape
  pipeline refuses it), the LM head shares the embedding's weights (the NPU partitioner cannot place it), and the
  GGUF's 32-wide quantisation groups are not the 64-multiples the NPU pipeline unpacks: the weights are
  decompressed to fp16 (135M parameters: about 270 MB).

Only packaged models are converted (see ``phi3_aipc.models.catalogue``): the repairs were checked on SmolLM2.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from phi3_aipc.errors import ExportError
from phi3_aipc.export.build import move_into_place, progress_bar
from phi3_aipc.export.cache import export_cache_path, is_complete, writable_exports_dir, write_manifest
from phi3_aipc.export.gguf_staging import staging_folder
from phi3_aipc.export.openvino import OV_DETOKENIZER, OV_TOKENIZER, import_backend_module
from phi3_aipc.export.plan import ExportPlan
from phi3_aipc.models.files import read_facts, save_facts

log = logging.getLogger(__name__)

_MODEL_XML = "openvino_model.xml"
# 'past_key_values.3.valuepresent.3.key' -> '...valuepresent.3.value' (the builder writes 'key' for both states).
_VALUE_STATE_ID = re.compile(r"(past_key_values\.\d+\.valuepresent\.\d+\.)key\b")


def gguf_plan(device_preset: str) -> ExportPlan:
    """The conversion's plan: the GGUF's own weights for the CPU (and GPU), fp16 for the NPU pipeline."""
    npu = device_preset == "npu"
    return ExportPlan("openvino", device_preset, "fp16" if npu else "gguf")


def convert_gguf(gguf: Path, device_preset: str, *, model_arg: str, progress: bool = True) -> Path:
    """The IR folder of ``gguf`` for ``device_preset`` ('cpu' or 'npu') in the user cache, built on first use.

    The GGUF is validated (``phi3_aipc.models.files``) before OpenVINO reads it: a broken one crashes OpenVINO.
    """
    gguf = Path(gguf).resolve()
    plan = gguf_plan(device_preset)
    target = export_cache_path(gguf, plan)
    if is_complete(target):
        return target
    facts = read_facts(gguf, "gguf")
    writable_exports_dir(plan.to)
    log.warning("Converting %s to an OpenVINO IR once; later loads reuse %s.", gguf.name, target)
    started = time.perf_counter()
    with staging_folder(target.parent, f".{target.name}.partial-") as staging:
        steps = [("OpenVINO GenAI reads the GGUF", _save_ir), ("repair the KV-cache ids", _fix_state_ids)]
        if plan.device == "npu":
            cpu_ir = export_cache_path(gguf, gguf_plan("cpu"))
            if is_complete(cpu_ir):
                # The CPU's IR is the same graph before the NPU's repairs: start from it, not from the GGUF.
                steps = [("copy the CPU's IR", lambda _, staging: _copy_ir(cpu_ir, staging))]
            steps.append(("reshape for the NPU pipeline", _fit_npu_pipeline))
        with progress_bar(len(steps), f"Converting {gguf.name} to OpenVINO IR", progress) as bar:
            for label, step in steps:
                bar.set_postfix_str(label)
                step(gguf, staging)
                bar.update(1)
        save_facts(staging, facts)
        write_manifest(staging, model_arg, gguf, plan, time.perf_counter() - started, {})
        move_into_place(staging, target, replace=False)
    return target


def _save_ir(gguf: Path, staging: Path) -> None:
    ov_genai = import_backend_module("openvino_genai", "openvino-genai", "openvino")
    link = staging / gguf.name
    try:
        os.symlink(gguf, link)
    except OSError:
        # Windows allows symlinks only in developer mode: copy instead (the copy is removed below).
        shutil.copyfile(gguf, link)
    try:
        ov_genai.LLMPipeline(str(link), "CPU", enable_save_ov_model=True)
    finally:
        link.unlink()
    missing = [name for name in (_MODEL_XML, OV_TOKENIZER, OV_DETOKENIZER) if not (staging / name).is_file()]
    if missing:
        raise ExportError(
            f"OpenVINO GenAI loaded '{gguf}' but did not write {', '.join(missing)}; the installed openvino-genai "
            f"may not support enable_save_ov_model. Load the GGUF path directly instead."
        )


def _copy_ir(source: Path, staging: Path) -> None:
    for path in source.glob("openvino_*"):
        shutil.copyfile(path, staging / path.name)


def _fix_state_ids(_: Path, staging: Path) -> None:
    xml = staging / _MODEL_XML
    xml.write_text(_VALUE_STATE_ID.sub(r"\1value", xml.read_text()))


def _fit_npu_pipeline(_: Path, staging: Path) -> None:
    ov = import_backend_module("openvino", "openvino", "openvino")
    model = ov.Core().read_model(str(staging / _MODEL_XML))
    _broadcast_kv_over_sequence(ov, model)
    _untie_lm_head(ov, model)
    _decompress_weights(model)
    model.validate_nodes_and_infer_types()
    out = staging / ".npu"
    out.mkdir()
    ov.save_model(model, str(out / _MODEL_XML), compress_to_fp16=True)
    del model
    for name in (_MODEL_XML, "openvino_model.bin"):
        os.replace(out / name, staging / name)
    out.rmdir()


def _broadcast_kv_over_sequence(ov: Any, model: Any) -> None:
    """repeat_kv's Broadcast target [batch, heads, groups, 0, dim]: 1 keeps the sequence length (bidirectional)."""
    import numpy as np

    for node in model.get_ordered_ops():
        if node.get_type_name() != "Broadcast" or node.get_output_partial_shape(0).rank.get_length() != 5:
            continue
        shape = node.input(1).get_source_output().get_node()
        if shape.get_type_name() != "Concat":
            continue
        for item in shape.inputs():
            source = item.get_source_output().get_node()
            if source.get_type_name() == "Constant" and source.get_data().tolist() == [0]:
                one = ov.opset13.constant(np.array([1], dtype=source.get_data().dtype))
                item.replace_source_output(one.output(0))


def _untie_lm_head(ov: Any, model: Any) -> None:
    """Give the LM head its own copy of the embedding's weight subgraph."""
    head = model.get_results()[0].input(0).get_source_output().get_node()
    if head.get_type_name() != "MatMul":
        return
    weights = head.input(1).get_source_output()
    if len(weights.get_target_inputs()) > 1:
        head.input(1).replace_source_output(_copy_subgraph(ov, weights))


def _copy_subgraph(ov: Any, output: Any) -> Any:
    """A copy of a weight-decompression subgraph (Constant, Convert, Subtract, Multiply, Reshape)."""
    ops = ov.opset13
    node = output.get_node()
    kind = node.get_type_name()
    if kind == "Constant":
        view = node.get_tensor_view()
        tensor = ov.Tensor(view.element_type, view.shape)
        view.copy_to(tensor)
        return ov.op.Constant(tensor).output(0)
    inputs = [_copy_subgraph(ov, item.get_source_output()) for item in node.inputs()]
    if kind == "Convert":
        return ops.convert(inputs[0], node.get_output_element_type(0)).output(0)
    if kind == "Subtract":
        return ops.subtract(*inputs).output(0)
    if kind == "Multiply":
        return ops.multiply(*inputs).output(0)
    if kind == "Reshape":
        return ops.reshape(inputs[0], inputs[1], node.get_attributes()["special_zero"]).output(0)
    raise ExportError(
        f"Unexpected {kind} in the LM head's weights; this GGUF cannot be prepared for the NPU."
    )


def _decompress_weights(model: Any) -> None:
    """Fold every weight-decompression subgraph into plain constants (saved as fp16)."""
    from openvino.passes import ConstantFolding, Manager

    for node in model.get_ordered_ops():
        info = node.get_rt_info()
        for key in ("decompression", "disable_const_folding", "keep_const_precision", "KeepConstPrecision"):
            if key in info:
                del info[key]
    manager = Manager()
    manager.register_pass(ConstantFolding())
    manager.run_passes(model)
