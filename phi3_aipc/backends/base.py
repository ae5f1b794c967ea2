"""The small protocol every backend implements. No framework imports here or in any backend."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

from phi3_aipc.params import BackendOutput, Constraint, GenerationParams

# Called with each decoded text delta as soon as it exists; returns False to stop generation.
TextCallback = Callable[[str], bool]

Message = Mapping[str, Any]


class Backend(ABC):
    """One loaded model on one device. The engine serialises calls, so a backend need not be thread-safe."""

    name: str = ""
    #: Constraint kinds this backend can enforce while decoding.
    constraint_kinds: frozenset[str] = frozenset()

    def __init__(self, model_name: str, device: str):
        self.model_name = model_name
        self.device = device
        self.load_ms: float | None = None

    @classmethod
    @abstractmethod
    def load(cls, model: str | None, device: str | None, options: dict[str, Any]) -> Backend:
        """Resolve ``model`` for ``device`` and load it. Raises phi3_aipc errors for bad input."""

    @property
    def context_window(self) -> int | None:
        """Prompt plus output tokens the model (or device) accepts, when known."""
        return None

    @property
    def max_prompt_tokens(self) -> int | None:
        """A hard prompt-length limit, e.g. the NPU's MAX_PROMPT_LEN; None when only the context bounds it."""
        return None

    @property
    def special_tokens(self) -> frozenset[str]:
        """The tokenizer's control tokens as text (e.g. '<|end|>'), so message content can be kept from forging them."""
        return frozenset()

    @property
    def model_family(self) -> str:
        """'phi3', 'phi4', or 'other': picks the tool-call format."""
        return "other"

    @abstractmethod
    def apply_chat_template(self, messages: list[Message], tools: list[dict[str, Any]] | None = None) -> str:
        """Format messages with the model's own chat template, generation prompt included."""

    @abstractmethod
    def count_tokens(self, prompt: str) -> int:
        """Tokens ``prompt`` becomes when given to ``generate`` (special tokens parsed)."""

    @abstractmethod
    def generate(
        self,
        prompt: str,
        params: GenerationParams,
        on_text: TextCallback,
        constraint: Constraint | None = None,
    ) -> BackendOutput:
        """Generate from an already formatted prompt, calling ``on_text`` with every delta."""

    def close(self) -> None:  # noqa: B027 - optional hook, not abstract
        """Release the model. The default relies on garbage collection."""
