"""Assisted decoding on OpenVINO GenAI: prompt lookup, and speculative decoding with a draft model.

Both draft a few tokens ahead and let the model verify them in one step, keeping the ones it would have produced
itself: greedy output is the model's own, only faster when drafts are accepted. Prompt lookup drafts by copying what
followed the last few tokens earlier in the prompt or the answer (RAG and agent answers copy long spans of their
context); a draft model is a small model sharing the main model's tokenizer (FastDraft for Phi-3-mini).

Load options of the ``openvino`` backend (any case):

- ``prompt_lookup``: True, False, or None/absent (the default: off for now, see ``PROMPT_LOOKUP_AUTO_KINDS``;
  True drafts 5). Off on the NPU,
  whose static pipeline OpenVINO does not document it for: a result note says so when it was asked for.
- ``draft_model``: a draft model (path, Hub repo id, catalogue name, or 'auto' for the catalogue's pairing), resolved
  by ``phi3_aipc.backends.prepare``; ``draft_device``: its device (default: the model's).
- ``num_assistant_tokens`` (draft tokens a step) and ``max_ngram_size`` (the longest n-gram prompt lookup matches,
  default 3).

It is a property of the pipeline: OpenVINO builds a different pipeline for it, and every request on a prompt-lookup
pipeline must ask for it, so it is chosen at load time, not per call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from phi3_aipc.backends.options import parse_flag
from phi3_aipc.devices import device_kind, normalise_device
from phi3_aipc.errors import InvalidParameterError, UnsupportedFeatureError
from phi3_aipc.params import AssistedDecoding

log = logging.getLogger(__name__)

PROMPT_LOOKUP = "PROMPT_LOOKUP"
DRAFT_MODEL = "DRAFT_MODEL"
DRAFT_DEVICE = "DRAFT_DEVICE"
NUM_ASSISTANT_TOKENS = "NUM_ASSISTANT_TOKENS"
MAX_NGRAM_SIZE = "MAX_NGRAM_SIZE"
#: Every assisted-decoding option: only the serialising pipeline takes them (see ``phi3_aipc.backends.serving_backend``).
OPTIONS = frozenset({PROMPT_LOOKUP, DRAFT_MODEL, DRAFT_DEVICE, NUM_ASSISTANT_TOKENS, MAX_NGRAM_SIZE})
#: prompt_lookup=True drafts 5 tokens a step (OpenVINO GenAI's samples' setting) from n-grams of up to 3 tokens.
DEFAULT_ASSISTANT_TOKENS = 5
DEFAULT_NGRAM_SIZE = 3
#: Where prompt_lookup=None (the default) turns it on, and with how many draft tokens a step. Measured on the CPU
#: (benchmarks/RESULTS.md, "Prompt lookup", `phi3-aipc bench --scenario rag`): every step verifies its drafts even
#: when the text holds no match, and on Qwen2.5-Coder-0.5B verifying 3-5 drafts cost an answer that copies nothing
#: ~30% of its decode speed, while 1 draft a step cost nothing measurable and still made a RAG answer ~1.7x faster.
#: But at the CPU's default precision (bf16 on AVX-512 BF16 / AMX CPUs, dynamic quantization of activations) the
#: verifying step rounds apart from one-token steps, so greedy text changed with it on (SmolLM2's "three rivers"
#: answer: 121 tokens off, 220-256 on), and the demo's decode speed showed no clear gain. Prompt lookup promises the
#: model's own greedy text, so None leaves it off everywhere until it is exact at the default precision: add "CPU"
#: / "GPU" here to turn the measured 1-draft default on. True (5 drafts) is for apps that know their answers copy.
PROMPT_LOOKUP_AUTO_KINDS: frozenset[str] = frozenset()
AUTO_ASSISTANT_TOKENS = 1
NPU_NOTE = (
    "prompt_lookup is off on the NPU: OpenVINO GenAI's NPU pipeline does not support it. Speculative decoding "
    "with a draft model (draft_model=...) is the NPU's speed-up."
)

Method = Literal["prompt_lookup", "draft_model"]
#: The oldest openvino-genai that assisted decoding was verified on. On 2025.4 (the openvino extra's floor) a prompt-
#: lookup or draft-model pipeline failed on SmolLM2 with "PagedAttentionExtension ... m_dims=[54,576,]
#: expect_dims=[54,560,]", so older versions are refused rather than left to fail inside generate().
ASSISTED_MIN_GENAI = (2026, 4)


def genai_version() -> tuple[int, int]:
    """openvino-genai's (major, minor), e.g. (2026, 4) for '2026.4.1.0-3408-...'."""
    import openvino_genai as ov_genai

    major, minor = ov_genai.__version__.split(".")[:2]
    return int(major), int(minor)


def check_genai_version(method: str) -> None:
    """Refuse assisted decoding on an openvino-genai older than it was verified on, naming the upgrade."""
    have = genai_version()
    if have < ASSISTED_MIN_GENAI:
        need = ".".join(map(str, ASSISTED_MIN_GENAI))
        raise UnsupportedFeatureError(
            f"{method} needs openvino-genai >= {need} (installed: {have[0]}.{have[1]}; on 2025.4 it failed inside "
            f"generate()). Upgrade with: pip install -U 'openvino-genai>={need}' 'openvino-tokenizers>={need}', "
            f"or turn {method} off."
        )


@dataclass(frozen=True)
class Assist:
    """The assisted decoding one pipeline was built for (``method`` None: plain decoding)."""

    method: Method | None
    num_assistant_tokens: int = DEFAULT_ASSISTANT_TOKENS
    max_ngram_size: int = DEFAULT_NGRAM_SIZE
    draft_path: str | None = None
    draft_device: str | None = None
    notes: tuple[str, ...] = ()


def take_assist_options(upper: dict[str, Any], device: str) -> Assist:
    """Remove our assisted-decoding options from ``upper`` (upper-case keys) and say what the pipeline should do."""
    lookup = upper.pop(PROMPT_LOOKUP, None)
    draft = upper.pop(DRAFT_MODEL, None)
    draft_device = upper.pop(DRAFT_DEVICE, None)
    given_tokens = upper.pop(NUM_ASSISTANT_TOKENS, None)
    tokens = _positive(
        "num_assistant_tokens", DEFAULT_ASSISTANT_TOKENS if given_tokens is None else given_tokens
    )
    ngram = _positive("max_ngram_size", upper.pop(MAX_NGRAM_SIZE, DEFAULT_NGRAM_SIZE))
    lookup = None if lookup is None else parse_flag("prompt_lookup", lookup)
    if draft is not None:
        if lookup:
            raise InvalidParameterError(
                "Pass either prompt_lookup=True or draft_model=..., not both: OpenVINO GenAI runs one kind of "
                "assisted decoding at a time."
            )
        target = normalise_device(draft_device) if draft_device is not None else device
        return Assist("draft_model", tokens, ngram, draft_path=str(draft), draft_device=target)
    if draft_device is not None:
        raise InvalidParameterError("draft_device needs a draft_model: pass the draft model too, or drop it.")
    if lookup is None and given_tokens is None:
        tokens = AUTO_ASSISTANT_TOKENS
    return _prompt_lookup(lookup, device, tokens, ngram)


def _prompt_lookup(asked: bool | None, device: str, tokens: int, ngram: int) -> Assist:
    """Prompt lookup where it was asked for (None: where ``PROMPT_LOOKUP_AUTO_KINDS`` says), never on the NPU."""
    kind = device_kind(device)
    if kind == "NPU":
        if asked:
            log.warning("%s", NPU_NOTE)
            return Assist(None, tokens, ngram, notes=(NPU_NOTE,))
        return Assist(None, tokens, ngram)
    on = kind in PROMPT_LOOKUP_AUTO_KINDS if asked is None else asked
    return Assist("prompt_lookup" if on else None, tokens, ngram)


def pipeline_options(assist: Assist, device: str, plain: Mapping[str, Any]) -> dict[str, Any]:
    """The LLMPipeline keyword arguments for ``assist``. A draft on the model's kind of device gets the model's
    device properties (precision, compile cache; on the NPU its prompt sizes); on another kind, the cache only."""
    if assist.method is None:
        return {}
    check_genai_version(assist.method)
    if assist.method == "prompt_lookup":
        return {"prompt_lookup": True}
    import openvino_genai as ov_genai

    draft_device = assist.draft_device or device
    if device_kind(draft_device) == device_kind(device):
        properties = {k: v for k, v in plain.items() if k != "scheduler_config"}
    else:
        properties = {k: v for k, v in plain.items() if k == "CACHE_DIR"}
    return {"draft_model": ov_genai.draft_model(assist.draft_path, draft_device, **properties)}


def configure(config: Any, assist: Assist) -> None:
    """Ask this generation for the pipeline's assisted decoding (a prompt-lookup pipeline refuses a request that
    does not)."""
    if assist.method is None:
        return
    config.num_assistant_tokens = assist.num_assistant_tokens
    if assist.method == "prompt_lookup":
        config.max_ngram_size = assist.max_ngram_size


def figures(assist: Assist, result: Any, max_new_tokens: int) -> AssistedDecoding | None:
    """Draft tokens checked and accepted in one generation, from OpenVINO GenAI's metrics."""
    if assist.method == "draft_model":
        metrics = getattr(result, "extended_perf_metrics", None)
        if metrics is None or not hasattr(metrics, "get_num_accepted_tokens"):
            return None
        return AssistedDecoding(
            "draft_model", int(metrics.get_num_draft_tokens()), int(metrics.get_num_accepted_tokens())
        )
    if assist.method == "prompt_lookup":
        return _lookup_figures(assist, result.perf_metrics, max_new_tokens)
    return None


def _lookup_figures(assist: Assist, metrics: Any, max_new_tokens: int) -> AssistedDecoding | None:
    """Prompt lookup reports no counts of its own; its per-step token counts give them exactly.

    Every step after the first verifies ``num_assistant_tokens`` drafts (padded when the text holds no match; fewer
    near ``max_new_tokens``) and yields one token plus the drafts it accepted.
    """
    steps = [int(n) for n in metrics.raw_metrics.m_batch_sizes]
    generated = int(metrics.get_num_generated_tokens())
    if not steps or sum(steps) != generated:
        return None  # not the step pattern this reading relies on: report nothing rather than a wrong figure
    drafted, made = 0, steps[0]
    for produced in steps[1:]:
        drafted += max(0, min(assist.num_assistant_tokens, max_new_tokens - made - 1))
        made += produced
    return AssistedDecoding("prompt_lookup", drafted, generated - len(steps))


def _positive(name: str, value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidParameterError(f"Option {name} must be a positive integer, got {value!r}.")
    return value
