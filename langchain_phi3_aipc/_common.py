"""Fields and translations shared by ChatPhi3AIPC and Phi3AIPC. No backend logic: everything runs in phi3_aipc."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from phi3_aipc import DEFAULT_MODEL, Engine, GenerationParams, GenerationResult, get_engine
from phi3_aipc.context import TrimReport
from phi3_aipc.engine import aget_engine
from phi3_aipc.engine.load_options import with_speed_options
from phi3_aipc.errors import InvalidParameterError

#: Per-call keyword arguments that override a field for one call.
CALL_OVERRIDES = ("model", "temperature", "max_tokens", "top_p", "top_k", "seed", "repetition_penalty")


class Phi3AIPCFields(BaseModel):
    """The settings both LangChain classes share."""

    model_config = ConfigDict(protected_namespaces=())

    model: str = DEFAULT_MODEL
    """Model: a Hugging Face repo id or alias ('phi-3-mini'), a local OpenVINO / ONNX folder, a .gguf, or 'smollm2'."""

    device: str = "auto"
    """Device: 'auto', 'npu', 'gpu', 'cpu' (OpenVINO ids such as 'GPU.1' pass through)."""

    backend: str | None = None
    """Backend: 'openvino' (default), 'onnx', 'transformers', ...; None picks the default."""

    temperature: float | None = None
    """Sampling temperature; None or 0 decodes greedily."""

    max_tokens: int | None = None
    """Most tokens to generate (the engine's default, 512, when None)."""

    top_p: float | None = None
    """Nucleus sampling: keep the smallest set of tokens whose probability adds up to top_p."""

    top_k: int | None = None
    """Sample from the k most likely tokens only."""

    seed: int | None = None
    """Random seed for sampling, for repeatable output."""

    stop: list[str] | None = None
    """Stop sequences: the output is cut at the first one, at the exact character; the stop text is not returned."""

    streaming: bool = False
    """Stream tokens (and fire on_llm_new_token) even when invoked without .stream()."""

    repetition_penalty: float | None = None
    """Penalty above 1.0 discourages repeating tokens."""

    options: dict[str, Any] = Field(default_factory=dict)
    """Backend and device options, e.g. {'MAX_PROMPT_LEN': 2048, 'CACHE_DIR': '...'} for the NPU, or
    {'NPUW_DEVICES': 'CPU'} to run the NPU pipeline on the CPU. Part of the shared engine's identity."""

    constrained_decoding: bool = True
    """Constrain decoding for tool calls and structured output where the backend can (OpenVINO GenAI does)."""

    timeout: float | None = Field(default=None, gt=0)
    """Wall-clock limit on one generation, in seconds: generation stops there, finish_reason 'timeout'. Loading
    (minutes for a first NPU compile) is not counted."""

    max_retries: int | None = Field(default=None, ge=0)
    """Remote mode (base_url): retries of a failed connection or a 429/5xx reply (default 2). Unused locally."""

    api_key: SecretStr | None = None
    """Remote mode (base_url): the server's bearer token. A local model needs no key, so it is unused locally."""

    base_url: str | None = None
    """Remote mode: an OpenAI-compatible server, e.g. 'http://127.0.0.1:8000/v1' (``phi3-aipc serve``, OpenVINO
    Model Server, vLLM). The model runs there; tool calls, structured output, stops and parsing stay as locally.
    ``model`` names it (and its family); device, backend and options are the server's business."""

    prompt_lookup: bool | None = None
    """Prompt-lookup decoding (OpenVINO GenAI): draft tokens by copying from the prompt, so answers that quote their
    context (RAG, agents) decode faster, with the same greedy text. None: off (the default: at bf16 it changed greedy text); never on the NPU."""

    draft_model: str | None = None
    """Speculative decoding (OpenVINO GenAI): a small draft model sharing the model's tokenizer (path, repo id, or
    'auto' for the catalogue's, e.g. FastDraft for phi-3-mini). response_metadata['assisted_decoding'] reports it."""

    context_overflow: Literal["error", "trim"] = "error"
    """A chat that does not fit the window: 'error' refuses it; 'trim' drops the oldest turns, then shortens long
    tool results / retrieved context (response_metadata['context_trimmed'] says what went)."""

    # -- engine ------------------------------------------------------------------------------------------------------
    def _get_engine(self, model: str | None = None) -> Engine:
        """The shared engine: loaded on first use, cached per (model, device, backend, options) in the process."""
        if self.base_url is not None:
            return self._remote_engine(model)
        return get_engine(model or self.model, self.device, self.backend, self._engine_options())

    def _engine_options(self) -> dict[str, Any]:
        return with_speed_options(self.options, self.prompt_lookup, self.draft_model)

    async def _aget_engine(self, model: str | None = None) -> Engine:
        if self.base_url is not None:
            return self._remote_engine(model)
        # Loading takes seconds (minutes for a first NPU compile): never on the event loop.
        return await aget_engine(model or self.model, self.device, self.backend, self._engine_options())

    def _remote_engine(self, model: str | None) -> Any:
        from phi3_aipc.remote import get_remote_engine

        key = self.api_key.get_secret_value() if self.api_key is not None else None
        return get_remote_engine(
            self.base_url,
            model or self.model,
            api_key=key,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )

    def _params(self, stop: list[str] | None, overrides: dict[str, Any]) -> GenerationParams:
        values = {
            name: overrides.get(name, getattr(self, name)) for name in CALL_OVERRIDES if name != "model"
        }
        max_tokens = values.pop("max_tokens")
        kwargs = {k: v for k, v in values.items() if v is not None}
        if max_tokens is not None:
            kwargs["max_new_tokens"] = max_tokens
        if self.timeout is not None:
            kwargs["timeout_s"] = self.timeout
        return GenerationParams(stop=tuple(dict.fromkeys([*(self.stop or ()), *(stop or ())])), **kwargs)


def split_call_kwargs(
    kwargs: dict[str, Any], allowed: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(generation overrides, adapter kwargs); anything else is a mistake worth reporting."""
    overrides = {k: kwargs.pop(k) for k in CALL_OVERRIDES if k in kwargs}
    extra = {k: kwargs.pop(k) for k in allowed if k in kwargs}
    if kwargs:
        raise InvalidParameterError(
            f"Unknown keyword argument(s) {', '.join(sorted(kwargs))}. Accepted per call: "
            f"{', '.join((*CALL_OVERRIDES, 'stop', *allowed))}."
        )
    return overrides, extra


def response_metadata(
    result: GenerationResult,
    finish_reason: str | None = None,
    model_name: str | None = None,
    trimmed: TrimReport | None = None,
) -> dict[str, Any]:
    """``model_name`` is the model as the caller named it: engines are shared between an alias and its path."""
    timings = result.timings
    trim = {"context_trimmed": trimmed.as_dict()} if trimmed is not None else {}
    if (
        result.assisted is not None
    ):  # prompt lookup / draft model: draft tokens, accepted tokens, acceptance rate
        trim["assisted_decoding"] = result.assisted.as_dict()
    return {
        **trim,
        "model_name": model_name or result.model,
        "model_provider": "phi3_aipc",
        "device": result.device,
        "backend": result.backend,
        "finish_reason": finish_reason or result.finish_reason,
        "ttft_ms": timings.ttft_ms,
        "tpot_ms": timings.tpot_ms,
        "tokens_per_second": timings.tokens_per_second,
        # Time spent waiting for the engine (behind other requests or its warm-up), apart from ttft_ms.
        "queued_ms": timings.queued_ms,
        # What the engine changed to make the request fit (e.g. max_tokens lowered to the room left in the window).
        "notes": list(result.notes),
    }


def usage(result: GenerationResult) -> dict[str, Any]:
    counts: dict[str, Any] = {
        "input_tokens": result.prompt_tokens,
        "output_tokens": result.completion_tokens,
        "total_tokens": result.total_tokens,
    }
    if result.cached_prompt_tokens is not None:
        # Prompt tokens whose KV cache was reused from an earlier call (LangChain's name for them).
        counts["input_token_details"] = {"cache_read": result.cached_prompt_tokens}
    return counts
