"""Generation helpers shared by the backends that decode through transformers' ``generate``.

transformers, optimum-intel's OVModelForCausalLM and the NPU Acceleration Library all run the same
``GenerationMixin.generate``, so one streamer serves them all: it hands every token to the engine as it comes,
with no queue and no timeout (a first GPU/NPU compile can take minutes).
"""

from __future__ import annotations

import time
from typing import Any

import torch
import transformers

from phi3_aipc.backends.base import TextCallback
from phi3_aipc.params import BackendOutput, GenerationParams, Timings


def generate_kwargs(params: GenerationParams) -> dict[str, Any]:
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


def timings_from(started: float, token_times: list[float]) -> Timings:
    if not token_times:
        return Timings()
    ttft = (token_times[0] - started) * 1000
    tpot = (
        (token_times[-1] - token_times[0]) * 1000 / (len(token_times) - 1) if len(token_times) > 1 else None
    )
    return Timings(ttft_ms=ttft, tpot_ms=tpot, tokens_per_second=1000 / tpot if tpot else None)


class CallbackStreamer(transformers.generation.streamers.BaseStreamer, transformers.StoppingCriteria):
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


def stream_generate(
    model: Any, tokenizer: Any, input_ids: torch.Tensor, params: GenerationParams, on_text: TextCallback
) -> BackendOutput:
    """Run ``model.generate`` greedily or sampling, streaming every token to ``on_text``; usage and timings."""
    started = time.perf_counter()
    streamer = CallbackStreamer(tokenizer, on_text)
    if params.sampling and params.seed is not None:
        transformers.set_seed(params.seed)
    with torch.inference_mode():
        model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            streamer=streamer,
            stopping_criteria=transformers.StoppingCriteriaList([streamer]),
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            **generate_kwargs(params),
        )
    return BackendOutput(
        prompt_tokens=int(input_ids.shape[1]),
        completion_tokens=len(streamer.token_times),
        timings=timings_from(started, streamer.token_times),
    )
