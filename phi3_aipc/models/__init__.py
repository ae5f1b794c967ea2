"""Models: what a caller may name, and the one resolver that turns it into an artifact a backend runs.

- ``catalogue``: the models known by name (aliases, pre-converted builds per device, the packaged demo model).
- ``hub``: fetching from the Hugging Face Hub into its cache, at a revision.
- ``files``: what a local model is (format, validity, context window, architecture).
- ``resolve``: ``resolve(model, device_kind, backend) -> Artifact``, auto-export included.
"""

from phi3_aipc.models.catalogue import (
    DEFAULT_MODEL,
    MODELS,
    SMOLLM2_ALIAS,
    KnownModel,
    canonical_model_id,
    smollm2_gguf,
)
from phi3_aipc.models.files import ArtifactFormat, local_path
from phi3_aipc.models.hub import fetch as fetch_from_hub
from phi3_aipc.models.hub import is_repo_id
from phi3_aipc.models.resolve import Artifact, model_text, resolve, resolve_checkpoint

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "SMOLLM2_ALIAS",
    "Artifact",
    "ArtifactFormat",
    "KnownModel",
    "canonical_model_id",
    "fetch_from_hub",
    "is_repo_id",
    "local_path",
    "model_text",
    "resolve",
    "resolve_checkpoint",
    "smollm2_gguf",
]
