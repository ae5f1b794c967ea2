"""Intel NPU Acceleration Library backend: the Phi-3 AI PC guide's first recipe, kept for existing users.

The library is end of life (Intel archived it in April 2025 and points to OpenVINO GenAI), and its last release
does not install on most systems. Choosing this backend warns and points to ``backend="openvino", device="npu"``.
It is not verified on an NPU by this project: its tests run the adapter against a test double of the library.

Recipe: ``NPUModelForCausalLM.from_pretrained(model, use_cache=True, config=CompilerConfig(dtype=int4|int8|
torch.float16), attn_implementation="sdpa").eval()``, then transformers' ``generate`` with a streamer. Note that
the library caches the compiled model under ``./cache/models`` in the working directory.
"""

from __future__ import annotations

import importlib
import time
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import transformers

from phi3_aipc.backends.options import trust_remote_code
from phi3_aipc.backends.transformers_backend import TransformersBackend
from phi3_aipc.devices import device_kind, refuse_kind
from phi3_aipc.errors import BackendNotInstalledError, InvalidParameterError
from phi3_aipc.models import Artifact

LIBRARY = "intel_npu_acceleration_library"
DTYPES = ("int4", "int8", "fp16")
KNOWN_OPTIONS = {"dtype", "trust_remote_code"}
DEPRECATION = (
    "backend='npu-lib' uses the Intel NPU Acceleration Library, which Intel archived in April 2025 (end of life, "
    "no fixes, no new NPU drivers). Use OpenVINO GenAI's NPU pipeline instead: backend='openvino', device='npu', "
    "with a symmetric INT4 model (`phi3-aipc export MODEL OUT --for npu`)."
)


class LibraryNotInstalledError(BackendNotInstalledError):
    """The generic install hint alone would mislead: the last release builds only on Ubuntu with OpenVINO 2024."""

    def __init__(self, cause: BaseException):
        super().__init__("npu-lib", "intel-npu-acceleration-library", "npu-lib", cause)
        # ImportError's str() is its ``msg``; keep it and ``args`` in step.
        self.msg = (
            f"{self.msg} The library is end of life and does not install on most systems; prefer "
            "backend='openvino', device='npu'."
        )
        self.args = (self.msg,)


class NPULibraryBackend(TransformersBackend):
    """The transformers generate path over a model the NPU library compiled; only ``load`` differs."""

    name = "npu-lib"
    dtype: str = "int4"

    @classmethod
    def pick_device(cls, requested: str, options: Mapping[str, Any]) -> str:
        # FutureWarning, not DeprecationWarning: Python hides the latter outside __main__, and users must see it.
        warnings.warn(DEPRECATION, FutureWarning, stacklevel=2)
        _parse_options(options)
        if requested == "AUTO" or device_kind(requested) == "NPU":
            return "NPU"
        raise refuse_kind(requested, "npu-lib")

    @classmethod
    def load(cls, artifact: Artifact, device: str, options: dict[str, Any]) -> NPULibraryBackend:
        dtype_name, trust = _parse_options(options)
        library, compiler = _import_library()
        path = artifact.path
        started = time.perf_counter()
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
        kwargs: dict[str, Any] = {"use_cache": True, "attn_implementation": "sdpa"}
        if trust:
            # The library refuses to cache (pickle) a model built from remote code.
            kwargs.update(trust_remote_code=True, export=False)
        loaded = library.NPUModelForCausalLM.from_pretrained(
            str(path), config=compiler.CompilerConfig(dtype=_library_dtype(library, dtype_name)), **kwargs
        ).eval()
        backend = cls(loaded, tokenizer, artifact, device)
        backend.dtype = dtype_name
        backend.load_ms = (time.perf_counter() - started) * 1000
        return backend


def _parse_options(options: Mapping[str, Any]) -> tuple[str, bool]:
    unknown = set(options) - KNOWN_OPTIONS
    if unknown:
        raise InvalidParameterError(
            f"Unknown option(s) for the npu-lib backend: {sorted(unknown)}; it accepts {sorted(KNOWN_OPTIONS)}."
        )
    dtype = str(options.get("dtype", "int4")).lower().replace("float16", "fp16")
    if dtype not in DTYPES:
        raise InvalidParameterError(
            f"npu-lib dtype must be one of {', '.join(DTYPES)}, got {options['dtype']!r}."
        )
    return dtype, trust_remote_code(options)


def _import_library() -> tuple[Any, Any]:
    try:
        library = importlib.import_module(LIBRARY)
        compiler = importlib.import_module(f"{LIBRARY}.compiler")
    except ImportError as exc:
        raise LibraryNotInstalledError(exc) from exc
    return library, compiler


def _library_dtype(library: Any, name: str) -> Any:
    # The recipe passes the library's int4/int8 objects and torch.float16 for half precision.
    return torch.float16 if name == "fp16" else getattr(library, name)
