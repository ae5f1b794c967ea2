"""Model families: one row per family. A family decides the tool-call format and how a model is recognised.

Adding a family is one row in ``FAMILIES`` (and, if it brings a new tool format, one protocol in
``phi3_aipc.tools.protocols``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFamily:
    """What the engine must know about a family of models."""

    name: str
    #: The tool-call format its models were trained on (a key of ``phi3_aipc.tools.protocols.PROTOCOLS``).
    tool_format: str
    #: Lower-case substrings of a model's name or path that identify the family.
    name_markers: tuple[str, ...] = ()
    #: The ``model_type`` in a checkpoint's config.json that this family uses, and the vocabulary sizes that
    #: tell it apart from another family of the same architecture (Phi-4-mini reuses ``phi3`` with 200k tokens).
    model_type: str | None = None
    min_vocab: int = 0
    max_vocab: int | None = None
    #: Whether its models take images in messages (through ``backend="openvino-vlm"``, OpenVINO GenAI's VLMPipeline).
    takes_images: bool = False

    def matches_config(self, model_type: str | None, vocab_size: int | None) -> bool:
        if self.model_type is None or model_type != self.model_type:
            return False
        vocab = vocab_size or 0
        return vocab >= self.min_vocab and (self.max_vocab is None or vocab <= self.max_vocab)


# Order matters: the first family whose markers or config match wins ("phi-4" before "phi-3" is not needed for
# names, but the config test must see Phi-4's vocabulary bound first).
FAMILIES: dict[str, ModelFamily] = {
    family.name: family
    for family in (
        # Vision models first: their names also hold "phi-3" / "phi-4".
        ModelFamily(
            "phi3-vision",
            "json_tags",
            ("phi-3.5-vision", "phi-3-vision"),
            model_type="phi3_v",
            takes_images=True,
        ),
        ModelFamily("phi4-multimodal", "phi4", ("phi-4-multimodal",), model_type="phi4mm", takes_images=True),
        # Qwen2-VL: the offline test model's architecture (phi3_aipc.testing.tiny_qwen2_vl).
        ModelFamily("qwen2-vl", "json_tags", ("qwen2-vl",), model_type="qwen2_vl", takes_images=True),
        ModelFamily("phi4", "phi4", ("phi-4", "phi4"), model_type="phi3", min_vocab=100_001),
        ModelFamily("phi3", "json_tags", ("phi-3", "phi3"), model_type="phi3", max_vocab=100_000),
        # Any other model (SmolLM2, Llama, ...) gets the JSON-in-tags protocol described in the prompt.
        ModelFamily("other", "json_tags"),
    )
}
OTHER = FAMILIES["other"]


def family(name: str | ModelFamily | None) -> ModelFamily:
    """The family called ``name`` ('phi3', 'phi4', 'phi3-vision', ..., 'other'); unknown names are 'other'."""
    if isinstance(name, ModelFamily):
        return name
    return FAMILIES.get(str(name or "").lower(), OTHER)


def detect_family(model: str, model_type: str | None = None, vocab_size: int | None = None) -> ModelFamily:
    """The family of a model, from its name or path first, else from its config's architecture and vocabulary."""
    lowered = model.lower()
    for candidate in FAMILIES.values():
        if any(marker in lowered for marker in candidate.name_markers):
            return candidate
    for candidate in FAMILIES.values():
        if candidate.matches_config(model_type, vocab_size):
            return candidate
    return OTHER
