"""ONNX Runtime GenAI backend: DirectML (any DirectX 12 GPU on Windows), CPU, and CUDA.

Devices: "cpu" runs on the onnxruntime-genai CPU build; "cuda" needs onnxruntime-genai-cuda; "gpu" on Windows and
an explicit "dml"/"directml" run on DirectML (onnxruntime-genai-directml, Windows only). The three packages provide
the same ``onnxruntime_genai`` module, so only one can be installed at a time.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime_genai as og

from phi3_aipc.backends.base import Backend, Message, TextCallback, template_in_folder
from phi3_aipc.backends.options import parse_flag
from phi3_aipc.devices import DEVICE_KINDS, device_kind, refuse_kind
from phi3_aipc.errors import (
    DeviceNotFoundError,
    ExecutionProviderNotInstalledError,
    InvalidParameterError,
    UnsupportedFeatureError,
)
from phi3_aipc.models import Artifact
from phi3_aipc.params import BackendOutput, Constraint, GenerationParams, TaggedSchema, Timings

KNOWN_OPTIONS = {"precision", "provider_options", "prefix_reuse"}
#: A kept generator's KV cache holds at least this many tokens (its buffer is sized once, at creation).
REUSE_MIN_LENGTH = 1024

# Target -> (the package whose build has its execution provider, our pip extra, how users call it). The provider's
# own name comes from the device table (DeviceKind.onnx_provider).
PROVIDERS: dict[str, tuple[str, str, str]] = {
    "CPU": ("onnxruntime-genai", "onnx", "CPU"),
    "DML": ("onnxruntime-genai-directml", "directml", "DirectML"),
    "CUDA": ("onnxruntime-genai-cuda", "onnx-cuda", "CUDA"),
}
BUILD_PACKAGES = ("onnxruntime-genai", "onnxruntime-genai-directml", "onnxruntime-genai-cuda")
# Constraint kinds -> llguidance grammar types that GeneratorParams.set_guidance takes.
GUIDANCE_TYPES = {"json_schema": "json_schema", "regex": "regex", "grammar": "lark_grammar"}


def installed_builds() -> list[str]:
    """The onnxruntime-genai packages installed, as 'name version' (normally exactly one)."""
    found = []
    for package in BUILD_PACKAGES:
        try:
            found.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def is_windows() -> bool:
    return sys.platform == "win32"


def provider_available(target: str) -> bool:
    """Whether the installed build has the provider for ``target`` ('CPU', 'DML', 'CUDA')."""
    if target == "DML":
        return bool(og.is_dml_available())
    if target == "CUDA":
        return bool(og.is_cuda_available())
    return True


class OnnxGenAIBackend(Backend):
    name = "onnx"
    constraint_kinds = frozenset({"json_schema", "regex", "grammar", "structural_tags"})

    resolver_options = frozenset({"precision"})

    def __init__(self, model: Any, artifact: Artifact, device: str, prefix_reuse: bool = True):
        super().__init__(artifact, device)
        self._model = model
        self._tokenizer = og.Tokenizer(model)
        self._genai_config = _read_genai_config(artifact.path)
        self._eos = {int(t) for t in self._tokenizer.eos_token_ids}
        self._prefix_reuse = prefix_reuse
        #: The generator of the last greedy, unconstrained call, KV cache and all, with what it was made for.
        self._kept: _KeptGenerator | None = None

    # -- loading ---------------------------------------------------------------------------------------------------
    @classmethod
    def pick_device(cls, requested: str, options: Mapping[str, Any]) -> str:
        _check_options(options)
        return pick_target(requested)

    @classmethod
    def load(cls, artifact: Artifact, device: str, options: dict[str, Any]) -> OnnxGenAIBackend:
        _check_options(options)
        started = time.perf_counter()
        loaded = load_model(artifact.path, device, options.get("provider_options") or {})
        # Off unless asked for: resuming prefills the new tokens as a chunk of their own, and ONNX Runtime's CPU
        # kernels (int4 MatMulNBits) round a short chunk apart from a whole prompt, so greedy answers changed:
        # 10 of 12 ordinary prompts answered differently on a repeated call with it on, 0 of 12 with it off
        # (SmolLM2 int4, CPU; issue 23 item 14). Opt in with prefix_reuse=True where speed beats exactness.
        reuse = parse_flag("prefix_reuse", options.get("prefix_reuse", False))
        backend = cls(loaded, artifact, device, prefix_reuse=reuse)
        backend.load_ms = (time.perf_counter() - started) * 1000
        return backend

    @property
    def chat_template(self) -> str | None:
        # onnxruntime-genai's Tokenizer does not expose its template: read it from the folder's files.
        return template_in_folder(self.artifact.path)

    def apply_chat_template(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> str:
        try:
            messages_json = json.dumps([dict(m) for m in messages])
            tools_json = json.dumps(tools) if tools else None
        except TypeError as exc:
            raise InvalidParameterError(f"Messages and tools must be JSON-serialisable: {exc}") from exc
        return self._tokenizer.apply_chat_template(
            messages_json, tools=tools_json, add_generation_prompt=True
        )

    def count_tokens(self, prompt: str) -> int:
        return len(self._tokenizer.encode(prompt))

    def generate(
        self,
        prompt: str,
        params: GenerationParams,
        on_text: TextCallback,
        constraint: Constraint | None = None,
    ) -> BackendOutput:
        # Timed like OpenVINO GenAI's PerfMetrics: from the start of generate(), tokenization included.
        started = time.perf_counter()
        input_ids = self._tokenizer.encode(prompt)
        try:
            if self._reusable(params, constraint):
                generator, cached = self._resume(input_ids, params)
            else:
                generator, cached = self._fresh_generator(input_ids, params, constraint), 0
            token_times = self._decode_loop(generator, on_text, params.max_new_tokens)
        except BaseException as exc:
            self._kept = None  # its KV cache may be half-written: never resume from it
            if isinstance(exc, RuntimeError):
                self._raise_decoding_error(exc, constraint)
            raise
        return BackendOutput(
            prompt_tokens=len(input_ids),
            completion_tokens=len(token_times),
            timings=_timings(started, token_times),
            cached_prompt_tokens=cached,
        )

    # -- prefix reuse ------------------------------------------------------------------------------------------------
    def _reusable(self, params: GenerationParams, constraint: Constraint | None) -> bool:
        """Only greedy, unconstrained calls resume a kept generator: a sampled one would continue its random
        state (not the seed's), a constrained one its grammar state, so both would change the output."""
        return self._prefix_reuse and constraint is None and not params.sampling and not params.ignore_eos

    def _resume(self, input_ids: Any, params: GenerationParams) -> tuple[Any, int]:
        """The kept generator rewound to the prompt's common prefix with what it holds, fed the rest.

        Returns it and how many prompt tokens it already held. The last token it holds is never reused: after a
        generation the newest token is in the sequence but not yet in the KV cache.
        """
        ids = [int(t) for t in input_ids]
        needed = len(ids) + params.max_new_tokens
        kept = self._kept
        if kept is None or kept.repetition_penalty != params.repetition_penalty or needed > kept.max_length:
            kept = self._kept = self._new_kept_generator(needed, params)
        held = [int(t) for t in kept.generator.get_sequence(0)] if kept.generator.token_count() else []
        common = _common_prefix(held, ids, limit=min(len(held) - 1, len(ids) - 1))
        if kept.generator.token_count() > common:
            try:
                kept.generator.rewind_to(common)
            except RuntimeError:
                # A model or provider that cannot rewind (checked on the CPU only): start this one afresh.
                kept = self._kept = self._new_kept_generator(needed, params)
                common = 0
        kept.generator.append_tokens(ids[common:])
        return kept.generator, common

    def _new_kept_generator(self, needed: int, params: GenerationParams) -> _KeptGenerator:
        # The KV buffer is allocated for max_length up front: room to grow, but not the whole window of a
        # 128k-context model. A conversation that outgrows it gets a new, larger generator (one full prefill).
        max_length = max(needed * 2, REUSE_MIN_LENGTH)
        window = self.context_window
        if window is not None:
            max_length = min(max_length, window)
        options = self._search_options(params, 0)
        options["max_length"] = max_length
        generator_params = og.GeneratorParams(self._model)
        generator_params.set_search_options(**options)
        generator = og.Generator(self._model, generator_params)
        return _KeptGenerator(generator, max_length, params.repetition_penalty)

    def _fresh_generator(
        self, input_ids: Any, params: GenerationParams, constraint: Constraint | None
    ) -> Any:
        generator_params = og.GeneratorParams(self._model)
        generator_params.set_search_options(**self._search_options(params, len(input_ids)))
        if constraint is not None:
            generator_params.set_guidance(*guidance(constraint))
        generator = og.Generator(self._model, generator_params)
        generator.append_tokens(input_ids)
        return generator

    def _raise_decoding_error(self, exc: RuntimeError, constraint: Constraint | None) -> None:
        if constraint is not None and "satisfy the grammar" in str(exc):
            raise UnsupportedFeatureError(
                "ONNX Runtime GenAI's constrained decoder (llguidance) failed on a token it had allowed. "
                "onnxruntime-genai 0.18 does this with some characters of three or more UTF-8 bytes in "
                "byte-level tokenizers (e.g. CJK text). Use backend='openvino' for this constraint, or keep "
                f"the constrained output to ASCII. Detail: {str(exc).splitlines()[0]}"
            ) from exc

    def _decode_loop(self, generator: Any, on_text: TextCallback, max_new_tokens: int) -> list[float]:
        # TokenizerStream holds back bytes of a character split across tokens, so no delta is ever mangled UTF-8.
        stream = self._tokenizer.create_stream()
        token_times: list[float] = []
        # A kept generator's max_length is its buffer, not this call's limit: count the new tokens here.
        while len(token_times) < max_new_tokens and not generator.is_done():
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            token_times.append(time.perf_counter())
            if token in self._eos:
                continue  # counted like OpenVINO GenAI counts it, never shown
            delta = stream.decode(token)
            if delta and not on_text(delta):
                break
        return token_times

    def _search_options(self, params: GenerationParams, prompt_tokens: int) -> dict[str, Any]:
        # ORT's max_length counts the prompt too. The engine has already refused prompts that fill the context.
        max_length = prompt_tokens + params.max_new_tokens
        window = self.context_window
        if window is not None:
            max_length = min(max_length, window)
        options: dict[str, Any] = {"max_length": max_length, "do_sample": params.sampling}
        if params.ignore_eos:
            # min_length masks the end-of-sequence tokens until max_length: a fixed output length for benchmarks.
            options["min_length"] = max_length
        if params.sampling:
            options["temperature"] = params.temperature if params.temperature else 1.0
            options["top_p"] = params.top_p if params.top_p is not None else 1.0
            # top_k 0/None means no top-k filter, as in the other backends; ORT's own default is 50.
            vocab = int(self._genai_config.get("model", {}).get("vocab_size", 0)) or 1 << 30
            # Above the vocabulary, top_k keeps every token anyway; ORT refuses such values, so clamp.
            options["top_k"] = min(params.top_k, vocab) if params.top_k else vocab
            if params.seed is not None:
                options["random_seed"] = params.seed
        if params.repetition_penalty is not None:
            options["repetition_penalty"] = params.repetition_penalty
        return options

    def close(self) -> None:
        self._kept = None
        self._tokenizer = None
        self._model = None


@dataclass
class _KeptGenerator:
    generator: Any
    #: The longest sequence (prompt plus answer) its KV buffer holds.
    max_length: int
    repetition_penalty: float | None


def _common_prefix(held: list[int], ids: list[int], limit: int) -> int:
    """How many leading tokens ``held`` and ``ids`` share, at most ``limit`` (and never below 0)."""
    count = 0
    for a, b in zip(held[: max(limit, 0)], ids, strict=False):
        if a != b:
            break
        count += 1
    return count


def _check_options(options: Mapping[str, Any]) -> None:
    unknown = set(options) - KNOWN_OPTIONS
    if unknown:
        raise InvalidParameterError(
            f"Unknown option(s) for the onnx backend: {sorted(unknown)}; it accepts {sorted(KNOWN_OPTIONS)} "
            f"(precision: int4|fp16|fp32 for exports of a Hugging Face checkpoint; provider_options: a dict "
            f"passed to the execution provider, e.g. {{'device_id': '1'}} for a second DirectML adapter; "
            f"prefix_reuse: false to prefill every prompt from scratch) and 'revision' for the Hub download."
        )
    provider_options = options.get("provider_options")
    if provider_options is not None and not isinstance(provider_options, Mapping):
        raise InvalidParameterError(
            f"provider_options must be a mapping of provider option names to values, got {provider_options!r}."
        )


def _timings(started: float, token_times: list[float]) -> Timings:
    total = (time.perf_counter() - started) * 1000
    if not token_times:
        return Timings(generate_ms=total)
    ttft = (token_times[0] - started) * 1000
    gaps = len(token_times) - 1
    tpot = (token_times[-1] - token_times[0]) * 1000 / gaps if gaps else None
    return Timings(
        ttft_ms=ttft, tpot_ms=tpot, tokens_per_second=1000.0 / tpot if tpot else None, generate_ms=total
    )


# -- constrained decoding ----------------------------------------------------------------------------------------
def guidance(constraint: Constraint) -> tuple[str, str]:
    """(type, data) for ``GeneratorParams.set_guidance``; structural tags become a Lark grammar."""
    if constraint.kind == "structural_tags":
        return "lark_grammar", structural_tags_lark(constraint)
    if constraint.kind == "json_schema":
        return "json_schema", _schema_json(constraint.value)
    return GUIDANCE_TYPES[constraint.kind], constraint.value


def structural_tags_lark(constraint: Constraint) -> str:
    """Free text; once the model writes a trigger, it must finish one tag that begins with it (JSON inside).

    Each segment up to a trigger is a lazy lexeme, which ends at the trigger's first occurrence; the tail after
    the last tag is free text that cannot contain a trigger. (A free-text lexeme followed by a literal trigger
    does not work: llguidance would have to split a token such as " Paris" across the two lexemes after the fact.)
    """
    if constraint.at_least_one:
        return _tags_only_lark(constraint)
    lines = []
    segments = []
    for i, trigger in enumerate(constraint.triggers):
        tags = [t for t in constraint.tags if t.begin.startswith(trigger)]
        if not tags:
            raise InvalidParameterError(
                f"Structural-tags trigger {trigger!r} starts none of the tags' begin strings."
            )
        segments.append(f"pre_{i} tag_{i}")
        lines.append(f"pre_{i}[lazy]: /{_ANY}*{_regex_literal(trigger)}/")
        alternatives = [
            f"{_lark_string(t.begin[len(trigger) :])} %json {_schema_json(t.schema)} {_lark_string(t.end)}"
            for t in tags
        ]
        lines.append(f"tag_{i}: " + " | ".join(alternatives))
    any_trigger = "|".join(_regex_literal(t) for t in constraint.triggers)
    lines.append(f"TAIL: /{_ANY}*/ & ~/{_ANY}*({any_trigger}){_ANY}*/")
    if constraint.end_after_tags and constraint.separator and not constraint.stop_after_first:
        # After the first tag only more tags, each after the separator; then the end, one more separator, or
        # the close of a code fence opened before the calls (as the OpenVINO backend builds it).
        sep = _lark_string(constraint.separator)
        lines.append("more: " + " | ".join(_whole_tag(t) for t in constraint.tags))
        start = f'start: TAIL | ({" | ".join(segments)}) ({sep} more)* ({sep} | {sep} "```")?'
        return "\n".join([start, *lines]) + "\n"
    repeat = "?" if constraint.stop_after_first else "*"
    return "\n".join([f"start: ({' | '.join(segments)}){repeat} TAIL", *lines]) + "\n"


def _whole_tag(tag: TaggedSchema) -> str:
    return f"{_lark_string(tag.begin)} %json {_schema_json(tag.schema)} {_lark_string(tag.end)}"


def _tags_only_lark(constraint: Constraint) -> str:
    """Nothing but tags (a forced call): one, or with parallel calls one or more joined by the separator."""
    alternatives = [_whole_tag(t) for t in constraint.tags]
    start = (
        "start: tag"
        if constraint.stop_after_first
        else f"start: tag ({_lark_string(constraint.separator)} tag)*"
    )
    return f"{start}\ntag: " + " | ".join(alternatives) + "\n"


_ANY = r"(.|\n)"
_REGEX_SPECIAL = set("\\.+*?()|[]{}^$#&-~/")


def _regex_literal(text: str) -> str:
    """``text`` as a literal inside a Lark /regex/ (Rust regex syntax; '/' ends the regex)."""
    escaped = []
    for char in text:
        if char == "\n":
            escaped.append(r"\n")
        elif char == "\t":
            escaped.append(r"\t")
        elif char in _REGEX_SPECIAL:
            escaped.append("\\" + char)
        else:
            escaped.append(char)
    return "".join(escaped)


def _lark_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False) if text else '""'


def _schema_json(schema: str) -> str:
    """The schema with llguidance told to write compact JSON, unless the schema says otherwise.

    With free whitespace, small models loop on newlines and spaces inside the object until max_new_tokens
    (SmolLM2 did, every time); OpenVINO GenAI's tool-call output is compact too.
    """
    try:
        parsed = json.loads(schema)
    except ValueError as exc:
        raise InvalidParameterError(f"The JSON schema is not valid JSON: {exc}") from exc
    if isinstance(parsed, dict) and "x-guidance" not in parsed:
        parsed = {**parsed, "x-guidance": {"whitespace_flexible": False}}
    return json.dumps(parsed)


# -- devices -----------------------------------------------------------------------------------------------------
def pick_target(requested: str) -> str:
    """'AUTO'/'CPU'/'GPU'/'DML'/'CUDA' (normalised) -> 'CPU', 'DML' or 'CUDA', checked against the installed build."""
    kind = device_kind(requested)
    if kind == "AUTO":
        if is_windows() and provider_available("DML"):
            return "DML"
        return "CUDA" if provider_available("CUDA") else "CPU"
    if DEVICE_KINDS[kind].onnx_provider is None:
        raise refuse_kind(requested, "onnx")
    if kind == "CPU":
        return "CPU"
    if kind == "DML":
        if not is_windows():
            raise DeviceNotFoundError(
                "DirectML runs only on Windows (it is a DirectX 12 API), and onnxruntime-genai-directml installs only "
                "there. Use device='cpu' here, device='cuda' on an NVIDIA GPU, or backend='openvino' for an Intel GPU."
            )
        return _require_provider("DML")
    if kind == "GPU":
        if is_windows():
            return _require_provider("DML")
        if provider_available("CUDA"):
            return "CUDA"
        raise DeviceNotFoundError(
            "For the onnx backend 'gpu' means DirectML on Windows and CUDA elsewhere; this is not Windows and the "
            f"installed build ({', '.join(installed_builds()) or 'none'}) has no CUDA. Use device='cpu', install "
            "onnxruntime-genai-cuda for an NVIDIA GPU, or use backend='openvino' for an Intel GPU."
        )
    return _require_provider("CUDA")


def _require_provider(target: str) -> str:
    if not provider_available(target):
        raise _provider_error(target)
    return target


def _provider_error(target: str, cause: BaseException | None = None) -> ExecutionProviderNotInstalledError:
    package, extra, label = PROVIDERS[target]
    installed = ", ".join(installed_builds()) or "onnxruntime-genai (version unknown)"
    return ExecutionProviderNotInstalledError(label, package, extra, installed, cause)


def load_model(path: Path, target: str, provider_options: dict[str, Any]) -> Any:
    """``og.Model`` for ``path`` with the providers chosen through ``Config.clear_providers``/``append_provider``."""
    config = og.Config(str(path))
    # Start from no providers: a model exported for DirectML or CUDA names its provider in genai_config.json.
    config.clear_providers()
    # The CPU is ORT's built-in provider: nothing to append.
    provider = None if target == "CPU" else DEVICE_KINDS[target].onnx_provider
    if provider is not None:
        config.append_provider(provider)
        for key, value in provider_options.items():
            config.set_provider_option(provider, str(key), str(value))
    elif provider_options:
        raise InvalidParameterError("provider_options apply to DirectML and CUDA only, not to the CPU.")
    try:
        return og.Model(config)
    except (
        Exception
    ) as exc:  # og raises plain RuntimeError/OrtException; keep the ones that mean "no provider"
        # "...has not been built with DML support" / "Cuda interface not available: Failed to load library".
        message = str(exc).lower()
        if provider is not None and ("built with" in message or "interface not available" in message):
            raise _provider_error(target, exc) from exc
        raise


def _read_genai_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / "genai_config.json").read_text())
    except (OSError, ValueError):
        return {}
