"""transformers backend: the reference implementation and parity oracle (CPU, or CUDA where present)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import transformers

from phi3_aipc import models
from phi3_aipc.backends.base import Backend, Message, TextCallback
from phi3_aipc.devices import normalise_device
from phi3_aipc.errors import DeviceNotFoundError, InvalidParameterError, ModelNotFoundError
from phi3_aipc.params import BackendOutput, Constraint, GenerationParams, Timings

KNOWN_OPTIONS = {"trust_remote_code", "dtype"}


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any, model_name: str, device: str):
        super().__init__(model_name, device)
        self._model = model
        self._tokenizer = tokenizer

    @classmethod
    def load(cls, model: str | None, device: str | None, options: dict[str, Any]) -> TransformersBackend:
        unknown = set(options) - KNOWN_OPTIONS
        if unknown:
            raise InvalidParameterError(
                f"Unknown option(s) for the transformers backend: {sorted(unknown)}; it accepts {sorted(KNOWN_OPTIONS)}."
            )
        target = _pick_device(normalise_device(device))
        path = resolve_model(model)
        # Remote code runs arbitrary Python from the model repo: only when the caller asks for it.
        trust = bool(options.get("trust_remote_code", False))
        started = time.perf_counter()
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(
            path, dtype=options.get("dtype", "auto"), trust_remote_code=trust
        )
        loaded.to(target.lower()).eval()
        backend = cls(loaded, tokenizer, models.canonical_model_id(model), target)
        backend.load_ms = (time.perf_counter() - started) * 1000
        return backend

    @property
    def context_window(self) -> int | None:
        return getattr(self._model.config, "max_position_embeddings", None)

    @property
    def model_family(self) -> str:
        family = models.guess_family(self.model_name)
        if family == "other" and self._model.config.model_type == "phi3":
            family = "phi4" if self._model.config.vocab_size > 100_000 else "phi3"
        return family

    def apply_chat_template(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> str:
        return self._tokenizer.apply_chat_template(
            [dict(m) for m in messages], tools=tools or None, tokenize=False, add_generation_prompt=True
        )

    def count_tokens(self, prompt: str) -> int:
        return len(self._encode(prompt)[0])

    def _encode(self, prompt: str) -> torch.Tensor:
        # Same convention as OpenVINO GenAI's generate(str): special tokens in the text are parsed, and the
        # tokenizer's own special tokens (a BOS, if it has one) are added.
        return self._tokenizer(prompt, return_tensors="pt", add_special_tokens=True).input_ids

    def generate(
        self,
        prompt: str,
        params: GenerationParams,
        on_text: TextCallback,
        constraint: Constraint | None = None,
    ) -> BackendOutput:
        started = time.perf_counter()
        input_ids = self._encode(prompt).to(self._model.device)
        streamer = _CallbackStreamer(self._tokenizer, on_text)
        kwargs = _generate_kwargs(params)
        if params.sampling and params.seed is not None:
            transformers.set_seed(params.seed)
        with torch.inference_mode():
            self._model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                streamer=streamer,
                stopping_criteria=transformers.StoppingCriteriaList([streamer]),
                pad_token_id=self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
                **kwargs,
            )
        return BackendOutput(
            prompt_tokens=int(input_ids.shape[1]),
            completion_tokens=len(streamer.token_times),
            timings=_timings(started, streamer.token_times),
        )


def _generate_kwargs(params: GenerationParams) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "do_sample": params.sampling}
    if params.sampling:
        kwargs.update(
            temperature=params.temperature or 1.0, top_p=params.top_p or 1.0, top_k=params.top_k or 0
        )
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if params.repetition_penalty is not None:
        kwargs["repetition_penalty"] = params.repetition_penalty
    if params.ignore_eos:
        kwargs["min_new_tokens"] = params.max_new_tokens
    return kwargs


def _timings(started: float, token_times: list[float]) -> Timings:
    if not token_times:
        return Timings()
    ttft = (token_times[0] - started) * 1000
    tpot = (
        (token_times[-1] - token_times[0]) * 1000 / (len(token_times) - 1) if len(token_times) > 1 else None
    )
    return Timings(ttft_ms=ttft, tpot_ms=tpot, tokens_per_second=1000 / tpot if tpot else None)


class _CallbackStreamer(transformers.generation.streamers.BaseStreamer, transformers.StoppingCriteria):
    """Decodes each new token as it arrives and hands the new text to the engine, which may ask to stop.

    It re-decodes the whole answer each time so multi-token characters come out whole, and holds back text
    that ends in an incomplete UTF-8 sequence.
    """

    def __init__(self, tokenizer: Any, on_text: TextCallback):
        self._tokenizer = tokenizer
        self._on_text = on_text
        self._ids: list[int] = []
        self._emitted = ""
        self._seen_prompt = False
        self._stop = False
        self.token_times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        self.token_times.append(time.perf_counter())
        self._ids.extend(int(t) for t in value.reshape(-1).tolist())
        text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return
        delta, self._emitted = text[len(self._emitted) :], text
        if delta and not self._on_text(delta):
            self._stop = True

    def end(self) -> None:
        text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        if len(text) > len(self._emitted) and not self._stop:
            self._on_text(text[len(self._emitted) :])

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self._stop, dtype=torch.bool, device=input_ids.device)


def _pick_device(requested: str) -> str:
    cuda = torch.cuda.is_available()
    if requested == "AUTO":
        return "CUDA" if cuda else "CPU"
    if requested == "CPU" or (requested.split(":")[0] == "CUDA" and cuda):
        return requested
    present = "CPU, CUDA" if cuda else "CPU"
    raise DeviceNotFoundError(
        f"The transformers backend cannot run on '{requested.lower()}' here; devices present: {present}. "
        f"For the NPU or an Intel GPU use backend='openvino'."
    )


def resolve_model(model: str | None) -> Path:
    model_id = models.canonical_model_id(model)
    if model_id.lower() == models.SMOLLM2_ALIAS:
        raise ModelNotFoundError(
            "The packaged SmolLM2 is a GGUF file, which the transformers backend does not load. "
            "Use backend='openvino', or pass a Hugging Face checkpoint folder."
        )
    path = models.local_path(model_id)
    if path is None:
        return models.fetch_from_hub(model_id, what="the Hugging Face checkpoint")
    if not (path / "config.json").exists():
        raise ModelNotFoundError(
            f"'{path}' is not a Hugging Face checkpoint folder (no config.json). The transformers backend needs one."
        )
    return path
