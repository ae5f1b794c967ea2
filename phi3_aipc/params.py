"""Generation parameters, results and constraints shared by every backend."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from phi3_aipc.errors import InvalidParameterError

FinishReason = Literal["stop", "length", "stop_string", "cancelled"]
ConstraintKind = Literal["json_schema", "regex", "grammar", "structural_tags"]

DEFAULT_MAX_NEW_TOKENS = 512


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
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameterError(f"{name} must be an integer, got {value!r}.")
    if value < minimum:
        raise InvalidParameterError(f"{name} must be at least {minimum}, got {value}.")


def _check_float(
    name: str, value: Any, *, minimum: float, maximum: float | None = None, open_low: bool = False
) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidParameterError(f"{name} must be a number, got {value!r}.")
    too_low = value <= minimum if open_low else value < minimum
    if too_low or (maximum is not None and value > maximum):
        low = f"above {minimum}" if open_low else f"at least {minimum}"
        high = f" and at most {maximum}" if maximum is not None else ""
        raise InvalidParameterError(f"{name} must be {low}{high}, got {value}.")


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
      answers stay free.
    """

    kind: ConstraintKind
    value: str = ""
    tags: tuple[TaggedSchema, ...] = ()
    triggers: tuple[str, ...] = ()

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


@dataclass
class BackendOutput:
    """What a backend reports after one generation."""

    prompt_tokens: int
    completion_tokens: int
    timings: Timings = field(default_factory=Timings)


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

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
