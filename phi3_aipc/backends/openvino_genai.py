"""OpenVINO GenAI backend: the default for the NPU, the Intel GPU and the CPU."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import openvino_genai as ov_genai

from phi3_aipc.backends import openvino_assist
from phi3_aipc.backends.base import Backend, Message, TextCallback
from phi3_aipc.backends.options import is_npu_only, parse_flag
from phi3_aipc.devices import (
    DEVICE_KINDS,
    device_kind,
    normalise_device,
    openvino_devices,
    pick_device,
    refuse_kind,
)
from phi3_aipc.errors import InvalidModelFileError, InvalidParameterError
from phi3_aipc.models import Artifact
from phi3_aipc.params import BackendOutput, Constraint, GenerationParams, Timings
from phi3_aipc.paths import compile_cache_dir

log = logging.getLogger(__name__)

NPU_DEFAULTS = {"MAX_PROMPT_LEN": 1024, "MIN_RESPONSE_LEN": 128}
NPU_HINTS = ("FAST_COMPILE", "BEST_PERF")
#: Prefix reuse on the NPU (OpenVINO 2026.4's NPUW plugin): a hash-based cache of the KV blocks of earlier prompts,
#: restored for a new prompt that starts the same way. It works on chunked prefill; the chunk is the block size, so
#: a smaller chunk reuses more of a shared prefix. Set by the user, these keys win.
NPU_PREFIX_REUSE = {"NPUW_LLM_ENABLE_PREFIX_CACHING": "YES", "NPUW_LLM_PREFILL_CHUNK_SIZE": 128}
#: Our own load option (any case): False turns prefix reuse off (for measuring what it saves).
PREFIX_REUSE_OPTION = "PREFIX_REUSE"


def available_devices() -> list[str]:
    return list(openvino_devices())


class OpenVINOGenAIBackend(Backend):
    name = "openvino"
    constraint_kinds = frozenset({"json_schema", "regex", "grammar", "structural_tags"})
    #: Prompt lookup or a draft model, as the pipeline was built (``phi3_aipc.backends.openvino_assist``).
    assist = openvino_assist.Assist(None)

    def __init__(self, pipeline: Any, artifact: Artifact, device: str, config: dict[str, Any]):
        super().__init__(artifact, device)
        self._pipe = pipeline
        self._tokenizer = pipeline.get_tokenizer()
        self._config = config

    # -- loading ---------------------------------------------------------------------------------------------------
    @classmethod
    def pick_device(cls, requested: str, options: Mapping[str, Any]) -> str:
        return _pick_target(requested, _upper_keys(options))

    @classmethod
    def load(cls, artifact: Artifact, device: str, options: dict[str, Any]) -> OpenVINOGenAIBackend:
        upper = _upper_keys(options)
        reuse = parse_flag("prefix_reuse", upper.pop(PREFIX_REUSE_OPTION, True))
        assist = openvino_assist.take_assist_options(upper, device)
        plain = _pipeline_config(device, upper)
        config = _with_prefix_reuse(device, plain, reuse)
        started = time.perf_counter()
        extra = openvino_assist.pipeline_options(assist, device, plain)
        pipeline, config = _make_npu_aware_pipeline(artifact, device, {**config, **extra}, {**plain, **extra})
        backend = cls(pipeline, artifact, device, config)
        backend.assist = assist
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
        return self.artifact.context_window

    def apply_chat_template(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> str:
        return self._tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=True, tools=tools or None
        )

    @property
    def chat_template(self) -> str | None:
        """The template the tokenizer IR carries (rt_info 'chat_template'), which says whether it renders tools."""
        return getattr(self._tokenizer, "chat_template", None) or None

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
        openvino_assist.configure(config, self.assist)

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

        try:
            result = self._pipe.generate([prompt], config, streamer=streamer)
        except RuntimeError as exc:
            if constraint is not None and "xgrammar" in str(exc):
                raise _grammar_error(constraint, exc) from exc
            raise
        if failures:
            raise failures[0]
        output = _output(result.perf_metrics)
        output.assisted = openvino_assist.figures(self.assist, result, params.max_new_tokens)
        output.notes = self.assist.notes
        return output

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
        return ov_genai.StructuredOutputConfig(structural_tags_config=_structural_tags(constraint))
    return ov_genai.StructuredOutputConfig(**{constraint.kind: constraint.value})


def _structural_tags(constraint: Constraint) -> Any:
    """xgrammar's structural-tag formats (OpenVINO GenAI 2026): triggered tags amid free text, or tags only."""
    config = ov_genai.StructuredOutputConfig
    tags = [config.Tag(t.begin, config.JSONSchema(t.schema), t.end) for t in constraint.tags]
    if constraint.at_least_one:
        return config.TagsWithSeparator(
            tags, constraint.separator, at_least_one=True, stop_after_first=constraint.stop_after_first
        )
    if constraint.end_after_tags and not constraint.stop_after_first and all(t.end for t in constraint.tags):
        return _tags_then_end(constraint)
    return config.TriggeredTags(
        list(constraint.triggers), tags, at_least_one=False, stop_after_first=constraint.stop_after_first
    )


def _tags_then_end(constraint: Constraint) -> Any:
    """Free text until a trigger; from the first tag on, only more tags, each after the separator, then the end.

    xgrammar takes an open-ended part (the further tags) only inside a tag with a non-empty end string, so the
    first tag holds the rest and its end is the last character of a tag's own end: the output may stop right
    after its last tag, after one more separator, or there close a code fence the model opened before its calls.
    """
    config = ov_genai.StructuredOutputConfig
    sep = constraint.separator
    first = []
    for tag in constraint.tags:
        head, last = tag.end[:-1], tag.end[-1:]
        more = [
            config.Tag(last + sep + t.begin, config.JSONSchema(t.schema), t.end[:-1]) for t in constraint.tags
        ]
        rest = config.TagsWithSeparator(more, "", at_least_one=False, stop_after_first=False)
        parts = [config.JSONSchema(tag.schema), *([config.ConstString(head)] if head else []), rest]
        for end in (last, last + sep, last + sep + "```"):
            first.append(config.Tag(tag.begin, config.Concat(*parts), end))
    return config.TriggeredTags(list(constraint.triggers), first, at_least_one=False, stop_after_first=True)


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
def _upper_keys(options: Mapping[str, Any]) -> dict[str, Any]:
    # OpenVINO property names are upper case; '-o max_prompt_len=2048' means the same as MAX_PROMPT_LEN.
    return {str(k).upper(): v for k, v in options.items()}


def _pick_target(requested: str, config: dict[str, Any]) -> str:
    if requested != "AUTO" and "openvino" not in DEVICE_KINDS[device_kind(requested)].backends:
        raise refuse_kind(requested, "openvino")
    available = available_devices()
    if device_kind(requested) == "NPU" and "NPUW_DEVICES" in config:
        # NPUW runs the NPU's static-shape pipeline on the devices it names (CI uses NPUW_DEVICES=CPU, no NPU).
        for sub in str(config["NPUW_DEVICES"]).split(","):
            pick_device(normalise_device(sub), available)
        return requested
    return pick_device(requested, available)


def _pipeline_config(device: str, config: dict[str, Any]) -> dict[str, Any]:
    config = dict(config)
    if "CACHE_DIR" not in config:
        cache = compile_cache_dir("openvino", device)
        if cache is not None:
            config["CACHE_DIR"] = str(cache)
    if device_kind(device) != "NPU":
        for key in filter(is_npu_only, config):
            # device='auto' has already left these out (phi3_aipc.backends.prepare): this device was named.
            raise InvalidParameterError(
                f"{key} applies to the NPU only; remove it for device '{device}', or pass device='auto' to "
                f"have it ignored wherever the NPU is not picked."
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


def _with_prefix_reuse(device: str, config: dict[str, Any], reuse: bool) -> dict[str, Any]:
    """Keep the KV cache of a shared prefix across generate() calls (on unless ``reuse`` is False).

    CPU/GPU: LLMPipeline runs on OpenVINO GenAI's paged-attention scheduler, whose prefix caching is on by default;
    only turning it off needs a SchedulerConfig. NPU: the stateful pipeline re-prefills every prompt (its chat mode
    too: on the NPU it resends the whole history), so reuse comes from the NPUW plugin's prefix cache.
    """
    if device_kind(device) == "NPU":
        if reuse:
            return {**NPU_PREFIX_REUSE, **config}
        return {**config, "NPUW_LLM_ENABLE_PREFIX_CACHING": "NO"}
    if reuse:
        return config
    scheduler = ov_genai.SchedulerConfig()
    scheduler.enable_prefix_caching = False
    return {**config, "scheduler_config": scheduler}


def _make_npu_aware_pipeline(
    artifact: Artifact, device: str, config: dict[str, Any], plain: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """The pipeline, and the config it was built with. The NPU prefix-cache keys are ours, and checked only with the
    NPU pipeline on the CPU: should a real NPU's plugin refuse them, load without them (reuse off) rather than fail."""
    try:
        return _make_pipeline(artifact, device, config), config
    except (RuntimeError, InvalidParameterError) as exc:
        if device_kind(device) != "NPU" or config == plain or isinstance(exc, InvalidModelFileError):
            raise
        log.warning("The NPU prefix cache could not be turned on (%s); loading without KV reuse.", exc)
        return _make_pipeline(artifact, device, plain), plain


def _grammar_error(constraint: Constraint, exc: RuntimeError) -> InvalidParameterError:
    """xgrammar's refusal of a schema (e.g. maxProperties below the number of required properties), said plainly."""
    reason = str(exc).strip().splitlines()[0].rsplit(": ", 1)[-1][:300]
    return InvalidParameterError(
        f"OpenVINO GenAI cannot build a decoding grammar from this {constraint.kind.replace('_', ' ')} ({reason}). "
        f"Fix it (a tool's parameters, the structured-output schema, or your own constraint), or pass "
        f"constrained_decoding=False to rely on the prompt and validation alone."
    )


# What OpenVINO says when an IR's .xml or .bin is damaged (a truncated copy, a failed download, a text file).
_BROKEN_IR_SIGNS = ("Unable to read the model", "is_valid_weights_range", "Incorrect weights in bin file")


def _make_pipeline(artifact: Artifact, device: str, config: dict[str, Any]) -> Any:
    """``LLMPipeline``, with OpenVINO's "Unsupported property" turned into an error naming the option."""
    npu = "; on the NPU: MAX_PROMPT_LEN, MIN_RESPONSE_LEN, GENERATE_HINT, NPUW_DEVICES"
    return open_pipeline(
        ov_genai.LLMPipeline,
        artifact,
        device,
        config,
        broken=f"OpenVINO could not read the model in '{artifact.path}' ({{first}}). Its IR files "
        f"(openvino_model.xml / .bin) look broken or incomplete: export the model again (`phi3-aipc export`) "
        f"or download it again.",
        unknown=f"OpenVINO on {device} does not know the option(s) {{names}}. Pass OpenVINO properties "
        f"the device supports (e.g. PERFORMANCE_HINT, NUM_STREAMS, INFERENCE_PRECISION_HINT, CACHE_DIR"
        f"{npu if device_kind(device) == 'NPU' else ''}), "
        f"or 'revision' for the Hub download. `phi3-aipc doctor` lists the devices.",
    )


def open_pipeline(
    make: Callable[..., Any],
    artifact: Artifact,
    device: str,
    config: dict[str, Any],
    *,
    broken: str,
    unknown: str,
) -> Any:
    """``make(path, device, **config)`` (an OpenVINO GenAI pipeline class), with a damaged IR and an option the
    device does not know turned into typed errors: ``broken`` and ``unknown`` are their messages, formatted with
    ``first`` (OpenVINO's last line) and ``names`` (the options)."""
    try:
        return make(str(artifact.path), device, **config)
    except RuntimeError as exc:
        if any(sign in str(exc) for sign in _BROKEN_IR_SIGNS):
            first = str(exc).strip().splitlines()[-1][:300]
            raise InvalidModelFileError(broken.format(first=first)) from exc
        names = [key for key in config if f"Unsupported property {key} " in str(exc)]
        if not names:
            raise
        raise InvalidParameterError(unknown.format(names=", ".join(names))) from exc
