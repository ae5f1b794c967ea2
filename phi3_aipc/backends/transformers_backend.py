"""transformers backend: the reference implementation and parity oracle (CPU, or CUDA where present)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import transformers

from phi3_aipc import models
from phi3_aipc.backends._hf_streaming import stream_generate
from phi3_aipc.backends.base import Backend, Message, TextCallback
from phi3_aipc.devices import normalise_device
from phi3_aipc.errors import DeviceNotFoundError, InvalidParameterError, ModelNotFoundError
from phi3_aipc.families import detect_family
from phi3_aipc.params import BackendOutput, Constraint, GenerationParams

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
        config = self._model.config
        return detect_family(self.model_name, config.model_type, config.vocab_size).name

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
        input_ids = self._encode(prompt).to(self._model.device)
        return stream_generate(self._model, self._tokenizer, input_ids, params, on_text)


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
