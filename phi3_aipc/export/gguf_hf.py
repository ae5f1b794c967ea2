"""A GGUF that OpenVINO GenAI cannot read -> an OpenVINO IR, once, through transformers' GGUF loader.

OpenVINO GenAI's GGUF reader builds the graph itself and knows few weight types. Measured on openvino-genai
2026.4.1 (tests/export/tiny_gguf.py: a 2-layer qwen2 model whose matrices are all of one type, loaded and run):

| GGML type of the matrices | F16 | Q8_0 | Q4_0 | Q4_1 | Q4_K | Q6_K | F32 | BF16 | Q5_0 | Q5_1 | Q2_K | Q3_K | Q5_K |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| OpenVINO GenAI reads it | yes | yes | yes | yes | yes | yes | no | no | no | no | no | no | no |

(1-D tensors, norms and biases, are F32 in every GGUF and load.) Q4_K_M files, the Hub's most common, mix Q4_K and
Q6_K with Q5_0 or Q5_K layers and so fail ("gguf_tensor_to_f16 failed"). Such a GGUF is dequantised by
transformers (``from_pretrained(dir, gguf_file=name)``, tokenizer and chat template from its metadata), saved as a
temporary checkpoint and exported by the project's optimum-intel exporter into the export cache.

Weights of the IR: int8 channel-wise for the CPU and GPU (one IR serves both): the GGUF's 4-6-bit weights
dequantised and re-compressed to 8 bits lose almost nothing more, where int4 would quantise already-quantised
weights a second time; it is also the CPU export preset's default. The NPU gets symmetric channel-wise int4, the
only weights its pipeline takes (the NPU export preset).

The libraries print warnings, tracer notes and their own bars while they work; all of it goes to a log file next
to the export (the message names it), so the terminal shows one progress bar.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from phi3_aipc.errors import BackendNotInstalledError, ExportError, ModelNotFoundError, Phi3AIPCError
from phi3_aipc.export.build import move_into_place, progress_bar
from phi3_aipc.export.cache import export_cache_path, is_complete, writable_exports_dir, write_manifest
from phi3_aipc.export.gguf_staging import staging_folder
from phi3_aipc.export.plan import ExportPlan, plan_export
from phi3_aipc.models.files import ModelFacts, read_facts

log = logging.getLogger(__name__)

#: GGML types of weight matrices (2-D+ tensors) that OpenVINO GenAI 2026.4.1 reads itself (see the table above).
OPENVINO_GGUF_TYPES = frozenset({"F16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"})
#: Architectures whose GGUF OpenVINO GenAI was seen to run here; others go through transformers.
OPENVINO_GGUF_ARCHITECTURES = frozenset({"llama", "qwen2"})
# (module, package) the conversion imports: all in the `export` extra.
_NEEDED = (
    ("torch", "torch"),
    ("transformers", "transformers"),
    ("gguf", "gguf"),
    ("optimum.intel", "optimum-intel"),
    ("nncf", "nncf"),
)


class GGUFConversionNotInstalledError(BackendNotInstalledError):
    """A GGUF needs converting and the `export` extra that converts it is missing."""

    def __init__(self, gguf: Path, facts: ModelFacts, package: str, cause: BaseException) -> None:
        self.backend, self.package, self.extra = "openvino", package, "export"
        types = ", ".join(sorted(facts.matrix_types - OPENVINO_GGUF_TYPES)) or "none"
        Phi3AIPCError.__init__(
            self,
            f"'{gguf.name}' has weights OpenVINO GenAI cannot read ({types}), so it must be converted to an "
            f"OpenVINO IR once, which needs the '{package}' package ({cause}). Install the export extra: "
            f'`pip install "phi3-aipc[export]"`. Or use a GGUF whose weights are '
            f"{', '.join(sorted(OPENVINO_GGUF_TYPES))} (e.g. a Q4_0, Q4_1 or Q8_0 file), which loads directly.",
        )


def loads_directly(facts: ModelFacts) -> bool:
    """Whether OpenVINO GenAI itself reads a GGUF with these facts (architecture and weight types)."""
    return facts.model_type in OPENVINO_GGUF_ARCHITECTURES and facts.matrix_types <= OPENVINO_GGUF_TYPES


def gguf_hf_plan(device_preset: str) -> ExportPlan:
    """int8 for the CPU and GPU, symmetric channel-wise int4 for the NPU: each preset's default (see above)."""
    return plan_export("openvino", "npu" if device_preset == "npu" else "cpu")


def convert_gguf_hf(gguf: Path, device_preset: str, *, model_arg: str, progress: bool = True) -> Path:
    """The IR folder of ``gguf`` for ``device_preset`` in the export cache, converted through transformers once."""
    gguf = Path(gguf).resolve()
    plan = gguf_hf_plan(device_preset)
    target = export_cache_path(gguf, plan)
    if is_complete(target):
        return target
    facts = read_facts(gguf, "gguf")
    _check_installed(gguf, facts)
    _check_architecture(gguf, facts)
    writable_exports_dir(plan.to)
    log_path = target.parent / f"{target.name}.log"
    log.warning(
        "Converting %s to an OpenVINO IR (%s) once; later loads reuse %s. Library messages go to %s.",
        gguf.name,
        plan.describe(),
        target,
        log_path,
    )
    started = time.perf_counter()
    with (
        staging_folder(target.parent, f".{target.name}.partial-") as staging,
        staging_folder(target.parent, f".{target.name}.hf-") as checkpoint,
    ):
        _run_steps(gguf, checkpoint, staging, plan, log_path, progress)
        from phi3_aipc.export.openvino import weight_types

        weights = weight_types(staging, plan)
        write_manifest(staging, model_arg, gguf, plan, time.perf_counter() - started, weights)
        move_into_place(staging, target, replace=False)
    return target


def _run_steps(
    gguf: Path, checkpoint: Path, staging: Path, plan: ExportPlan, log_path: Path, progress: bool
) -> None:
    from phi3_aipc.export.openvino import check_tokenizer, run_export

    steps = [
        ("transformers reads the GGUF", lambda: _save_checkpoint(gguf, checkpoint)),
        (f"optimum-intel export ({plan.precision})", lambda: run_export(checkpoint, staging, plan)),
        ("check tokenizer IR", lambda: check_tokenizer(gguf, staging, plan)),
    ]
    with (
        _output_to(log_path) as terminal,
        _bar(len(steps), f"Converting {gguf.name} to OpenVINO IR", progress, terminal) as bar,
    ):
        for label, step in steps:
            bar.set_postfix_str(label)
            try:
                step()
            except Phi3AIPCError:
                raise  # already says what to do
            except Exception as exc:
                raise ExportError(
                    f"Converting '{gguf}' to an OpenVINO IR failed at '{label}' ({type(exc).__name__}: {exc}). "
                    f"The libraries' messages are in {log_path}."
                ) from exc
            bar.update(1)


def _bar(total: int, desc: str, enabled: bool, terminal: IO[str]) -> Any:
    if not enabled:
        return progress_bar(total, desc, enabled)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=terminal)


def _save_checkpoint(gguf: Path, out: Path) -> None:
    """Dequantise the GGUF into a float32 checkpoint, with its tokenizer, chat template and stop tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    template = _gguf_chat_template(gguf)
    if template is not None:
        # The GGUF's own template (tools and all) is the one the model was trained on: never another.
        tokenizer.chat_template = template
    tokenizer.save_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    _set_stop_tokens(model, gguf)
    model.save_pretrained(out)
    del model
    gc.collect()


def _set_stop_tokens(model: Any, gguf: Path) -> None:
    """generation_config.json's eos/bos/pad are the GGUF's: OpenVINO GenAI stops on its eos_token_id."""
    ids = _gguf_token_ids(gguf)
    config = model.generation_config
    for name, value in ids.items():
        if value is not None:
            setattr(config, name, value)
            setattr(model.config, name, value)


def _gguf_token_ids(gguf: Path) -> dict[str, int | None]:
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf))

    def value(key: str) -> int | None:
        field = reader.fields.get(key)
        return int(field.contents()) if field is not None else None

    return {
        "eos_token_id": value("tokenizer.ggml.eos_token_id"),
        "bos_token_id": value("tokenizer.ggml.bos_token_id"),
        "pad_token_id": value("tokenizer.ggml.padding_token_id"),
    }


def _gguf_chat_template(gguf: Path) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.chat_template")
    return str(field.contents()) if field is not None else None


def _check_installed(gguf: Path, facts: ModelFacts) -> None:
    for module, package in _NEEDED:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise GGUFConversionNotInstalledError(gguf, facts, package, exc) from exc


def _check_architecture(gguf: Path, facts: ModelFacts) -> None:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    known = sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))
    if facts.model_type not in known:
        raise ModelNotFoundError(
            f"'{gguf.name}' is a '{facts.model_type}' model, an architecture neither OpenVINO GenAI's GGUF reader "
            f"({', '.join(sorted(OPENVINO_GGUF_ARCHITECTURES))}) nor transformers' GGUF loader ({', '.join(known)}) "
            f"knows, so phi3-aipc cannot load or convert it. Pass the model's Hugging Face checkpoint or an "
            f"OpenVINO IR of it instead."
        )


@contextlib.contextmanager
def _output_to(log_path: Path) -> Iterator[IO[str]]:
    """Send this process's output to ``log_path`` and yield the terminal (a copy of stderr) for the one bar.

    Native code writes to fds 1 and 2, Python code to ``sys.stdout``/``sys.stderr``, and logging handlers (NNCF's)
    to the stream they were given at import: all three are redirected, and restored afterwards.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    terminal = os.fdopen(os.dup(sys.stderr.fileno() if _has_fd(sys.stderr) else 2), "w", buffering=1)
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    with open(log_path, "a", encoding="utf-8", buffering=1) as sink:
        sink.write(json.dumps({"started": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
        handlers = _stream_handlers()
        try:
            for fd in (1, 2):
                os.dup2(sink.fileno(), fd)
            for handler in handlers:
                handler.setStream(sink)
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), _warnings_to_stderr():
                yield terminal
        finally:
            for handler, stream in handlers.items():
                handler.setStream(stream)
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            terminal.close()


def _has_fd(stream: IO[str]) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def _stream_handlers() -> dict[logging.StreamHandler[Any], Any]:
    """Logging handlers that write to the process's stdout or stderr, with the stream each writes to."""
    consoles = {id(s) for s in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__) if s is not None}
    loggers = [
        logging.getLogger(),
        *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    return {
        handler: handler.stream
        for logger in loggers
        for handler in logger.handlers
        if type(handler) is logging.StreamHandler and id(handler.stream) in consoles
    }


@contextlib.contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Every library warning once, in the log (stderr is the log here): tracer warnings would repeat per layer."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        yield
