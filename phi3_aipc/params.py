"""Generation parameters, results and constraints shared by every backend."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from phi3_aipc.errors import InvalidParameterError

FinishReason = Literal["stop", "length", "stop_string", "cancelled", "timeout"]
ConstraintKind = Literal["json_schema", "regex", "grammar", "structural_tags"]

DEFAULT_MAX_NEW_TOKENS = 512
# ONNX Runtime GenAI takes max_length, top_k and random_seed as 32-bit ints (OpenVINO GenAI takes size_t, and
# transformers' set_seed needs a seed below 2**32): one bound that every backend accepts.
MAX_INT_PARAM = 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class GenerationParams:
    """What to generate. Sampling is off unless ``do_sample`` is set or a temperature above 0 is given."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    do_sample: bool | None = None
    seed: int | None = None
    repetition_penalty: float | None = None
    stop: tuple[str, ...] = ()
    # Benchmarks force a fixed output length; users never need this.
    ignore_eos: bool = False
    # A wall-clock deadline in seconds for the whole call (for a stream: from its first iteration), waiting for the
    # engine included. It is checked while waiting and at every token (a prompt's prefill runs to its end); when it
    # passes, generation stops, finish_reason is "timeout", and the text so far is kept.
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", _normalise_stop(self.stop))
        _check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        if self.temperature is not None:
            _check_float("temperature", self.temperature, minimum=0.0)
        if self.top_p is not None:
            _check_float("top_p", self.top_p, minimum=0.0, maximum=1.0, open_low=True)
        if self.top_k is not None:
            _check_int("top_k", self.top_k, minimum=0)
        if self.seed is not None:
            _check_int("seed", self.seed, minimum=0)
        if self.repetition_penalty is not None:
            _check_float("repetition_penalty", self.repetition_penalty, minimum=0.0, open_low=True)
        if self.do_sample is not None:
            _check_bool("do_sample", self.do_sample)
        _check_bool("ignore_eos", self.ignore_eos)
        if self.timeout_s is not None:
            _check_float("timeout_s", self.timeout_s, minimum=0.0, open_low=True)

    @property
    def sampling(self) -> bool:
        """Whether tokens are sampled (True) or picked greedily (False)."""
        if self.do_sample is not None:
            return self.do_sample
        return bool(self.temperature)

    def with_stop(self, extra: tuple[str, ...] | list[str] | None) -> GenerationParams:
        """A copy whose stop strings also include ``extra``."""
        if not extra:
            return self
        return replace(self, stop=tuple(dict.fromkeys((*self.stop, *extra))))


def _normalise_stop(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = (stop,)
    try:
        items = tuple(stop)
    except TypeError:
        raise InvalidParameterError(
            f"stop must be a string or a list of strings, got {type(stop).__name__}."
        ) from None
    for item in items:
        if not isinstance(item, str) or not item:
            raise InvalidParameterError(f"Every stop sequence must be a non-empty string, got {item!r}.")
    return items


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    # bool is an int subclass: max_new_tokens=True would otherwise pass as 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameterError(f"{name} must be an integer, got {value!r}.")
    if value < minimum:
        raise InvalidParameterError(f"{name} must be at least {minimum}, got {_shown(value)}.")
    if value > MAX_INT_PARAM:
        raise InvalidParameterError(
            f"{name} must be at most {MAX_INT_PARAM} (2**31 - 1, the largest every backend accepts), "
            f"got {_shown(value)}."
        )


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise InvalidParameterError(f"{name} must be True or False, got {value!r}.")


def _check_float(
    name: str, value: Any, *, minimum: float, maximum: float | None = None, open_low: bool = False
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidParameterError(f"{name} must be a number, got {value!r}.")
    # The backends compute in 32-bit floats: NaN, infinity and anything beyond float32 reach them as NaN/inf.
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
        raise InvalidParameterError(f"{name} must be a finite number, got {_shown(value)}.")
    too_low = value <= minimum if open_low else value < minimum
    if too_low or (maximum is not None and value > maximum):
        low = f"above {minimum}" if open_low else f"at least {minimum}"
        high = f" and at most {maximum}" if maximum is not None else ""
        raise InvalidParameterError(f"{name} must be {low}{high}, got {_shown(value)}.")


def _shown(value: Any) -> str:
    """``repr(value)``, shortened: a 400-digit integer does not belong in an error message."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:24]}... ({len(text)} characters)"


@dataclass(frozen=True)
class TaggedSchema:
    """A structure the model may open with ``begin``: JSON matching ``schema`` follows, then ``end``."""

    begin: str
    schema: str
    end: str


@dataclass(frozen=True)
class Constraint:
    """Constrained decoding, in backend-neutral terms.

    - ``json_schema``: ``value`` is a JSON schema (as a string); the whole output matches it.
    - ``regex``: ``value`` is a regular expression the whole output matches.
    - ``grammar``: ``value`` is a grammar in the backend's own dialect (OpenVINO GenAI: EBNF; ONNX Runtime GenAI:
      Lark). Not portable; prefer the other kinds.
    - ``structural_tags``: free text, except that once the model writes one of ``triggers`` it must complete
      one of ``tags`` (begin, JSON matching the schema, end). This is how tool calls are constrained while plain
      answers stay free. With ``at_least_one`` the output is nothing but tags: one or more, joined by
      ``separator`` (a forced call); with ``stop_after_first`` at most one tag is written (no parallel calls).
      With ``end_after_tags`` the first tag starts the output's last part: after it come only more tags, each
      after ``separator``, then the end (no text after calls; the tool parser drops such text anyway).
      After the tags the model's own end-of-turn token stays allowed.
    """

    kind: ConstraintKind
    value: str = ""
    tags: tuple[TaggedSchema, ...] = ()
    triggers: tuple[str, ...] = ()
    at_least_one: bool = False
    stop_after_first: bool = False
    separator: str = "\n"
    end_after_tags: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("json_schema", "regex", "grammar", "structural_tags"):
            raise InvalidParameterError(
                f"Unknown constraint kind {self.kind!r}; use 'json_schema', 'regex', 'grammar' or 'structural_tags'."
            )
        if self.kind == "structural_tags":
            if not self.tags or not self.triggers:
                raise InvalidParameterError(
                    "A structural_tags constraint needs at least one tag and one trigger."
                )
        elif not self.value:
            raise InvalidParameterError(f"A {self.kind} constraint needs a value.")
        schemas = [t.schema for t in self.tags] if self.kind == "structural_tags" else []
        if self.kind == "json_schema":
            schemas.append(self.value)
        for schema in schemas:
            _check_json_schema(schema)


def _check_json_schema(schema: str) -> None:
    try:
        parsed = json.loads(schema)
    except ValueError as exc:
        raise InvalidParameterError(
            f"The JSON schema is not valid JSON ({exc}); pass json.dumps(schema)."
        ) from None
    if not isinstance(parsed, (dict, bool)):
        raise InvalidParameterError(f"A JSON schema must be an object, got {type(parsed).__name__}.")


@dataclass
class Timings:
    """Timings as OpenVINO GenAI's PerfMetrics defines them, in milliseconds (tokens/s for the rate).

    ttft_ms counts from the start of generation (tokenization included) to the first token; tpot_ms is the
    mean gap between tokens, the first excluded; tokens_per_second is 1000 / tpot_ms.
    """

    load_ms: float | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    tokens_per_second: float | None = None
    generate_ms: float | None = None
    #: How long the request waited for its turn before it started: behind other requests, or behind the engine's
    #: warm-up (see ``Engine.warm_up``). Not part of ttft_ms, which starts when generation does.
    queued_ms: float | None = None


@dataclass(frozen=True)
class AssistedDecoding:
    """What assisted decoding did in one generation: the draft tokens the model checked, and those it kept.

    ``method`` is 'prompt_lookup' (drafts copied from the prompt and the answer so far) or 'draft_model' (drafts
    from a small model). Greedy output is the model's own either way: assistance changes the speed, not the text.
    """

    method: Literal["prompt_lookup", "draft_model"]
    #: Draft tokens the model verified (prompt lookup verifies a fixed number a step, found in the text or not).
    draft_tokens: int
    #: Draft tokens the model accepted: each one is a decode step saved.
    accepted_tokens: int

    @property
    def acceptance_rate(self) -> float | None:
        """accepted / draft tokens (None when no draft was checked)."""
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "draft_tokens": self.draft_tokens,
            "accepted_tokens": self.accepted_tokens,
            "acceptance_rate": self.acceptance_rate,
        }


@dataclass
class BackendOutput:
    """What a backend reports after one generation."""

    prompt_tokens: int
    completion_tokens: int
    timings: Timings = field(default_factory=Timings)
    #: Prompt tokens whose KV cache came from an earlier call (None: the backend does not say).
    cached_prompt_tokens: int | None = None
    #: Prompt lookup / draft model figures, where the backend decoded with assistance.
    assisted: AssistedDecoding | None = None
    #: What the backend changed on its own (e.g. prompt lookup left off on the NPU), for people to read.
    notes: tuple[str, ...] = ()


@dataclass
class GenerationResult:
    """The outcome of one generation: the text, why it ended, usage and timings."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    timings: Timings
    stop_string: str | None = None
    model: str = ""
    device: str = ""
    backend: str = ""
    # What the engine changed on its own, for people to read (e.g. max_new_tokens clamped to the context window).
    notes: tuple[str, ...] = ()
    #: Prompt tokens not prefilled again because their KV cache was kept from an earlier call on this engine
    #: (None: the backend does not report it; OpenVINO GenAI reuses prefixes without saying how many).
    cached_prompt_tokens: int | None = None
    #: Prompt lookup / draft model figures (draft tokens, accepted tokens, acceptance rate); None without them.
    assisted: AssistedDecoding | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
