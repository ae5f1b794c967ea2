"""Errors raised by phi3-aipc. Each message says what was wrong and what to do about it."""

from __future__ import annotations


def install_hint(extra: str) -> str:
    """How to install one of phi3-aipc's extras today: from the source tree (the package is not on PyPI yet)."""
    return (
        f'`pip install -e ".[{extra}]"` in a clone of the phi3-aipc repository (phi3-aipc is not on PyPI yet)'
    )


class Phi3AIPCError(Exception):
    """Base class for every error phi3-aipc raises on purpose."""


class InvalidParameterError(Phi3AIPCError, ValueError):
    """A generation or constructor parameter is out of range or of the wrong type."""


class InvalidImageError(InvalidParameterError):
    """An image in a message is not one the model can take: not decodable, too large, too many, or a URL."""


class ModelNotFoundError(Phi3AIPCError, FileNotFoundError):
    """The model could not be found locally and could not be downloaded."""


class DeviceNotFoundError(Phi3AIPCError, RuntimeError):
    """The requested device is not present on this machine."""


class BackendNotInstalledError(Phi3AIPCError, ImportError):
    """The chosen backend's Python package is not installed."""

    def __init__(self, backend: str, package: str, extra: str, cause: BaseException | None = None):
        self.backend = backend
        self.package = package
        self.extra = extra
        detail = f" ({cause})" if cause else ""
        super().__init__(
            f"The '{backend}' backend needs the '{package}' package, which is not installed{detail}. "
            f"Install it with {install_hint(extra)}, or `pip install {package}` into this environment."
        )


class UnknownBackendError(Phi3AIPCError, ValueError):
    """The backend name is not one phi3-aipc knows."""


class PromptTooLongError(Phi3AIPCError, ValueError):
    """The prompt does not fit the device's or model's prompt limit."""

    def __init__(self, prompt_tokens: int, limit: int, what: str, hint: str):
        self.prompt_tokens = prompt_tokens
        self.limit = limit
        super().__init__(
            f"The prompt is {prompt_tokens} tokens long, over the {what} of {limit} tokens. {hint}"
        )


class UnsupportedFeatureError(Phi3AIPCError, NotImplementedError):
    """The chosen backend or device cannot do what was asked."""


class ExecutionProviderNotInstalledError(BackendNotInstalledError):
    """The installed ONNX Runtime GenAI build lacks the execution provider asked for (DirectML or CUDA)."""

    def __init__(
        self, provider: str, package: str, extra: str, installed: str, cause: BaseException | None = None
    ):
        self.backend = "onnx"
        self.package = package
        self.extra = extra
        self.provider = provider
        detail = f" ({cause})" if cause else ""
        # Skip BackendNotInstalledError's message: this one must say which build is there and how to swap it.
        Phi3AIPCError.__init__(
            self,
            f"The installed ONNX Runtime GenAI build ({installed}) has no {provider} support{detail}. "
            f"{provider} needs the '{package}' package. The onnxruntime-genai packages (CPU, DirectML, CUDA) all "
            f"provide the same 'onnxruntime_genai' module and cannot be installed side by side: run "
            f"`pip uninstall -y {installed.split(' ')[0]}` first, then `pip install {package}` "
            f"(or {install_hint(extra)}). The {provider} package also runs models on the CPU.",
        )


class OnnxExportError(Phi3AIPCError, RuntimeError):
    """The ONNX Runtime GenAI model builder failed to export a checkpoint."""


class InvalidModelFileError(ModelNotFoundError):
    """A model file or folder exists but is broken or incomplete (e.g. a truncated GGUF, an IR without tokenizer)."""


class CacheNotWritableError(Phi3AIPCError, PermissionError):
    """phi3-aipc's cache directory (PHI3_AIPC_CACHE) cannot be written."""


class ExportError(Phi3AIPCError, RuntimeError):
    """An export ran but its result is unusable (e.g. the tokenizer IR is missing)."""


class FrameworkNotInstalledError(Phi3AIPCError, ModuleNotFoundError):
    """An adapter package was imported without its framework (langchain-core, llama-index-core) installed."""

    def __init__(self, adapter: str, package: str, extra: str, cause: ModuleNotFoundError):
        self.adapter = adapter
        self.package = package
        self.extra = extra
        super().__init__(
            f"{adapter} needs the '{package}' package, which is not installed ({cause}). "
            f"Install it with {install_hint(extra)}, or `pip install {package}` into this environment.",
            name=cause.name,
        )
