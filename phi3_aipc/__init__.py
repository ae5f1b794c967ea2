"""phi3-aipc: Phi-3 family models on AI PCs (Intel NPU, Arc iGPU, CPU, DirectML), framework-free engine.

Importing this package loads no backend and no torch; a backend is imported when an engine using it is loaded.
"""

from phi3_aipc.engine import Engine, GenerationStream, clear_engines, get_engine, release_engine
from phi3_aipc.errors import (
    BackendNotInstalledError,
    DeviceNotFoundError,
    InvalidParameterError,
    ModelNotFoundError,
    Phi3AIPCError,
    PromptTooLongError,
    UnknownBackendError,
    UnsupportedFeatureError,
)
from phi3_aipc.models import DEFAULT_MODEL
from phi3_aipc.params import Constraint, GenerationParams, GenerationResult, Timings

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "BackendNotInstalledError",
    "Constraint",
    "DeviceNotFoundError",
    "Engine",
    "GenerationParams",
    "GenerationResult",
    "GenerationStream",
    "InvalidParameterError",
    "ModelNotFoundError",
    "Phi3AIPCError",
    "PromptTooLongError",
    "Timings",
    "UnknownBackendError",
    "UnsupportedFeatureError",
    "clear_engines",
    "get_engine",
    "release_engine",
]
