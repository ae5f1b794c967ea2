"""transformers backend: the reference implementation and parity oracle (CPU, or CUDA where present)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
import transformers

from phi3_aipc.backends._hf_streaming import stream_generate
from phi3_aipc.backends.base import Backend, Message, TextCallback
from phi3_aipc.backends.options import trust_remote_code
from phi3_aipc.devices import DEVICE_KINDS, device_kind, refuse_kind
from phi3_aipc.errors import DeviceNotFoundError, InvalidParameterError
from phi3_aipc.models import Artifact
from phi3_aipc.models.files import load_checkpoint_config
from phi3_aipc.params import BackendOutput, Constraint, GenerationParams

KNOWN_OPTIONS = {"trust_remote_code", "dtype"}


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any, artifact: Artifact, device: str):
        super().__init__(artifact, device)
        self._model = model
        self._tokenizer = tokenizer

    @classmethod
    def pick_device(cls, requested: str, options: Mapping[str, Any]) -> str:
        return _pick_device(requested)

    @classmethod
    def load(cls, artifact: Artifact, device: str, options: dict[str, Any]) -> TransformersBackend:
        unknown = set(options) - KNOWN_OPTIONS
        if unknown:
            raise InvalidParameterError(
                f"Unknown option(s) for the transformers backend: {sorted(unknown)}; it accepts "
                f"{sorted(KNOWN_OPTIONS)} and 'revision'."
            )
        # Remote code runs arbitrary Python from the model repo: only when the caller asks for it.
        trust = trust_remote_code(options)
        started = time.perf_counter()
        config = load_checkpoint_config(artifact.path, trust_remote_code=trust)
        tokenizer = transformers.AutoTokenizer.from_pretrained(artifact.path, trust_remote_code=trust)
        loaded = transformers.AutoModelForCausalLM.from_pretrained(
            artifact.path, config=config, dtype=options.get("dtype", "auto"), trust_remote_code=trust
        )
        loaded.to(device.lower()).eval()
        backend = cls(loaded, tokenizer, artifact, device)
        backend.load_ms = (time.perf_counter() - started) * 1000
        return backend

    @property
    def special_tokens(self) -> frozenset[str]:
        # The loaded tokenizer knows its specials even when the folder's files list them in other ways.
        added = self._tokenizer.added_tokens_decoder.values()
        return frozenset(self._tokenizer.all_special_tokens) | {t.content for t in added if t.special}

    @property
    def chat_template(self) -> str | None:
        template = getattr(self._tokenizer, "chat_template", None)
        return template if isinstance(template, str) else None

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
    kind = device_kind(requested)
    if "transformers" not in DEVICE_KINDS[kind].backends:
        raise refuse_kind(requested, "transformers")
    if kind == "CPU" or (kind == "CUDA" and cuda):
        return requested
    present = "CPU, CUDA" if cuda else "CPU"
    raise DeviceNotFoundError(
        f"The transformers backend cannot run on '{requested.lower()}' here; devices present: {present}. "
        f"For the NPU or an Intel GPU use backend='openvino'."
    )
