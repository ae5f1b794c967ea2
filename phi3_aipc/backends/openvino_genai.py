"""OpenVINO GenAI backend: the default for the NPU, the Intel GPU and the CPU."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import openvino_genai as ov_genai

from phi3_aipc import models
from phi3_aipc.backends.base import Backend, Message, TextCallback
from phi3_aipc.devices import device_kind, normalise_device, pick_device
from phi3_aipc.errors import DeviceNotFoundError, InvalidParameterError, ModelNotFoundError
from phi3_aipc.families import detect_family
from phi3_aipc.params import BackendOutput, Constraint, GenerationParams, Timings
from phi3_aipc.paths import compile_cache_dir

NPU_DEFAULTS = {"MAX_PROMPT_LEN": 1024, "MIN_RESPONSE_LEN": 128}
NPU_HINTS = ("FAST_COMPILE", "BEST_PERF")


def available_devices() -> list[str]:
    import openvino as ov

    return list(ov.Core().available_devices)


class OpenVINOGenAIBackend(Backend):
    name = "openvino"
    constraint_kinds = frozenset({"json_schema", "regex", "grammar", "structural_tags"})

    def __init__(self, pipeline: Any, model_name: str, device: str, model_path: Path, config: dict[str, Any]):
        super().__init__(model_name, device)
        self._pipe = pipeline
        self._tokenizer = pipeline.get_tokenizer()
        self._model_path = model_path
        self._config = config
        self._hf_config = _read_hf_config(model_path)
        # Read once: parsing a GGUF header takes seconds, and the engine asks before every generation.
        self._window = self._hf_config.get("max_position_embeddings") or _gguf_context_length(model_path)

    # -- loading ---------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, model: str | None, device: str | None, options: dict[str, Any]) -> OpenVINOGenAIBackend:
        config = {str(k).upper(): v for k, v in options.items()}
        target = _pick_target(normalise_device(device), config)
        path = resolve_model(model, target)
        config = _pipeline_config(target, config)
        started = time.perf_counter()
        pipeline = ov_genai.LLMPipeline(str(path), target, **config)
        backend = cls(pipeline, models.canonical_model_id(model), target, path, config)
        backend.load_ms = (time.perf_counter() - started) * 1000
        return backend

    # -- what the engine asks --------------------------------------------------------------------------------------
    @property
    def is_npu(self) -> bool:
        return device_kind(self.device) == "NPU"

    @property
    def max_prompt_tokens(self) -> int | None:
        return int(self._config["MAX_PROMPT_LEN"]) if self.is_npu else None

    @property
    def context_window(self) -> int | None:
        if self.is_npu:
            return int(self._config["MAX_PROMPT_LEN"]) + int(self._config["MIN_RESPONSE_LEN"])
        return self._window

    @property
    def model_family(self) -> str:
        config = self._hf_config
        return detect_family(self.model_name, config.get("model_type"), config.get("vocab_size")).name

    def apply_chat_template(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> str:
        return self._tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=True, tools=tools or None
        )

    def count_tokens(self, prompt: str) -> int:
        return int(self._tokenizer.encode(prompt).input_ids.shape[1])

    def generate(
        self,
        prompt: str,
        params: GenerationParams,
        on_text: TextCallback,
        constraint: Constraint | None = None,
    ) -> BackendOutput:
        config = self._generation_config(params, constraint)

        failures: list[BaseException] = []

        def streamer(delta: str) -> ov_genai.StreamingStatus:
            # OpenVINO GenAI prints an exception raised here, drops the delta and generates on to max_new_tokens:
            # stop instead, and raise it once generate() has returned (a Ctrl-C that lands here included).
            if failures:
                return ov_genai.StreamingStatus.STOP  # it may flush one last delta after being told to stop
            try:
                keep_going = on_text(delta)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                failures.append(exc)
                return ov_genai.StreamingStatus.STOP
            return ov_genai.StreamingStatus.RUNNING if keep_going else ov_genai.StreamingStatus.STOP

        result = self._pipe.generate([prompt], config, streamer=streamer)
        if failures:
            raise failures[0]
        return _output(result.perf_metrics)

    def _generation_config(self, params: GenerationParams, constraint: Constraint | None) -> Any:
        config = self._pipe.get_generation_config()
        # The engine formats prompts itself; letting the pipeline template them again would wrap them twice.
        config.apply_chat_template = False
        config.max_new_tokens = params.max_new_tokens
        config.ignore_eos = params.ignore_eos
        config.do_sample = params.sampling
        if params.sampling:
            config.temperature = params.temperature if params.temperature else 1.0
            config.top_p = params.top_p if params.top_p is not None else 1.0
            config.top_k = params.top_k if params.top_k else 0
            if params.seed is not None:
                config.rng_seed = params.seed
        if params.repetition_penalty is not None:
            config.repetition_penalty = params.repetition_penalty
        # Stop strings are cut by the engine at the exact character; OpenVINO's own cut only at token edges.
        config.stop_strings = set()
        config.structured_output_config = structured_output_config(constraint)
        return config


def structured_output_config(constraint: Constraint | None) -> Any:
    if constraint is None:
        return None
    if constraint.kind == "structural_tags":
        tags = ov_genai.StructuralTagsConfig(
            structural_tags=[
                ov_genai.StructuralTagItem(begin=t.begin, schema=t.schema, end=t.end) for t in constraint.tags
            ],
            triggers=list(constraint.triggers),
        )
        return ov_genai.StructuredOutputConfig(structural_tags_config=tags)
    return ov_genai.StructuredOutputConfig(**{constraint.kind: constraint.value})


def _output(metrics: Any) -> BackendOutput:
    generated = int(metrics.get_num_generated_tokens())
    tpot = float(metrics.get_tpot().mean) if generated > 1 else None
    return BackendOutput(
        prompt_tokens=int(metrics.get_num_input_tokens()),
        completion_tokens=generated,
        timings=Timings(
            ttft_ms=float(metrics.get_ttft().mean) if generated else None,
            tpot_ms=tpot,
            tokens_per_second=1000.0 / tpot if tpot else None,
            generate_ms=float(metrics.get_generate_duration().mean),
        ),
    )


# -- devices and configuration ---------------------------------------------------------------------------------
def _pick_target(requested: str, config: dict[str, Any]) -> str:
    available = available_devices()
    if requested in ("DML", "DIRECTML", "CUDA"):
        raise DeviceNotFoundError(
            f"OpenVINO cannot run on '{requested.lower()}'. Use backend='onnx' for DirectML or CUDA, or one of the "
            f"OpenVINO devices present here: {', '.join(available)}."
        )
    if device_kind(requested) == "NPU" and "NPUW_DEVICES" in config:
        # NPUW runs the NPU's static-shape pipeline on the devices it names (CI uses NPUW_DEVICES=CPU, no NPU).
        for sub in str(config["NPUW_DEVICES"]).split(","):
            pick_device(normalise_device(sub), available)
        return requested
    return pick_device(requested, available)


def _pipeline_config(device: str, config: dict[str, Any]) -> dict[str, Any]:
    config = dict(config)
    config.setdefault("CACHE_DIR", str(compile_cache_dir("openvino", device)))
    if device_kind(device) != "NPU":
        for key in ("MAX_PROMPT_LEN", "MIN_RESPONSE_LEN", "GENERATE_HINT"):
            if key in config:
                raise InvalidParameterError(
                    f"{key} applies to the NPU only; remove it for device '{device}'."
                )
        return config
    for key, default in NPU_DEFAULTS.items():
        value = config.setdefault(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidParameterError(f"{key} must be a positive integer, got {value!r}.")
    hint = config.get("GENERATE_HINT")
    if hint is not None and hint not in NPU_HINTS:
        raise InvalidParameterError(f"GENERATE_HINT must be one of {NPU_HINTS}, got {hint!r}.")
    return config


# -- model resolution ------------------------------------------------------------------------------------------
def resolve_model(model: str | None, device: str) -> Path:
    """A local path OpenVINO GenAI can load: an IR folder (with tokenizer IR) or a GGUF file."""
    model_id = models.canonical_model_id(model)
    if model_id.lower() == models.SMOLLM2_ALIAS:
        return models.smollm2_gguf()
    path = models.local_path(model_id)
    if path is not None:
        return _prepare_local(path, device)
    known = models.known_model(model_id)
    kind = device_kind(device).lower()
    if known is not None:
        repo = known.openvino.get(kind)
        if repo is None:
            raise ModelNotFoundError(
                f"There is no pre-converted OpenVINO model of {known.repo_id} for the {kind.upper()} that phi3-aipc "
                f"trusts. Export one: phi3-aipc export {known.repo_id} OUT --to openvino --for {kind}, then pass OUT."
            )
        return _prepare_local(models.fetch_from_hub(repo, what="the OpenVINO model"), device)
    if models.is_repo_id(model_id):
        return _prepare_local(models.fetch_from_hub(model_id, what="the OpenVINO model"), device)
    raise ModelNotFoundError(f"'{model_id}' is neither a local path nor a Hugging Face repo id.")


def _prepare_local(path: Path, device: str) -> Path:
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return path
        if path.name == "openvino_model.xml":
            return _prepare_local(path.parent, device)
        raise ModelNotFoundError(
            f"'{path}' is a file but not a GGUF; pass an OpenVINO IR folder or a .gguf file."
        )
    if (path / "openvino_model.xml").exists():
        from phi3_aipc.convert import ensure_openvino_tokenizer

        ensure_openvino_tokenizer(path)
        return path
    if (path / "config.json").exists():
        return _export_for(path, device)
    raise ModelNotFoundError(
        f"'{path}' holds no OpenVINO model (openvino_model.xml) and no Hugging Face checkpoint (config.json)."
    )


def _export_for(hf_dir: Path, device: str) -> Path:
    """A HF checkpoint folder is exported once with the device's preset into the user cache, then reused."""
    from phi3_aipc.export import auto_export

    return auto_export(hf_dir, device)


def _read_hf_config(path: Path) -> dict[str, Any]:
    config = path / "config.json" if path.is_dir() else None
    if config is None or not config.exists():
        return {}
    try:
        return json.loads(config.read_text())
    except (OSError, ValueError):
        return {}


def _gguf_context_length(path: Path) -> int | None:
    if path.suffix.lower() != ".gguf":
        return None
    try:
        from gguf import GGUFReader
    except ImportError:
        return None
    reader = GGUFReader(str(path))
    for name, field in reader.fields.items():
        if name.endswith(".context_length"):
            return int(field.parts[field.data[0]][0])
    return None
