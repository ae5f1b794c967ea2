"""The small protocol every backend implements. No framework imports here or in any backend."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from phi3_aipc.params import BackendOutput, Constraint, GenerationParams

if TYPE_CHECKING:
    from phi3_aipc.models import Artifact

# Called with each decoded text delta as soon as it exists; returns False to stop generation.
TextCallback = Callable[[str], bool]

Message = Mapping[str, Any]


class Backend(ABC):
    """One loaded model on one device. The engine serialises calls, so a backend need not be thread-safe.

    A backend never finds or converts models: ``phi3_aipc.models.resolve`` hands it an artifact in a format it
    declared (``BackendInfo.formats``), and it only runs it.
    """

    name: str = ""
    #: Constraint kinds this backend can enforce while decoding.
    constraint_kinds: frozenset[str] = frozenset()
    #: This backend's options that are meant for the model resolver (besides 'revision'), e.g. export precision.
    resolver_options: frozenset[str] = frozenset()

    def __init__(self, artifact: Artifact, device: str):
        self.artifact = artifact
        self.model_name = artifact.model_id
        self.device = device
        self.load_ms: float | None = None

    @classmethod
    @abstractmethod
    def pick_device(cls, requested: str, options: Mapping[str, Any]) -> str:
        """The concrete device this backend runs ``requested`` on ('AUTO' resolved, presence checked)."""

    @classmethod
    @abstractmethod
    def load(cls, artifact: Artifact, device: str, options: dict[str, Any]) -> Backend:
        """Load a resolved artifact on a device ``pick_device`` returned. Raises phi3_aipc errors for bad input."""

    @property
    def context_window(self) -> int | None:
        """Prompt plus output tokens the model (or device) accepts, from the model's metadata."""
        return self.artifact.context_window

    @property
    def max_prompt_tokens(self) -> int | None:
        """A hard prompt-length limit, e.g. the NPU's MAX_PROMPT_LEN; None when only the context bounds it."""
        return None

    @property
    def special_tokens(self) -> frozenset[str]:
        """The tokenizer's control tokens as text (e.g. '<|end|>'), so message content can be kept from forging them."""
        return self.artifact.special_tokens

    @property
    def model_family(self) -> str:
        """'phi3', 'phi4', or 'other': picks the tool-call format."""
        return self.artifact.family.name

    @property
    def chat_template(self) -> str | None:
        """The model's chat template source, when the backend can read it (it picks the tool-call format)."""
        return None

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


def template_in_folder(folder: Path) -> str | None:
    """A Hugging Face-style folder's chat template: chat_template.jinja, else tokenizer_config.json's field."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        try:
            template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        except ValueError:
            return None
        return template if isinstance(template, str) else None
    return None
