"""Backend registry. Nothing here imports a backend's package: a backend loads only when it is chosen.

Adding a backend is one row in ``BACKENDS`` (plus its module), and its name in the ``backends`` of the device
kinds it serves in ``phi3_aipc.devices``.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from phi3_aipc import devices
from phi3_aipc.backends import openvino_assist
from phi3_aipc.backends import options as load_options
from phi3_aipc.backends.base import Backend
from phi3_aipc.errors import BackendNotInstalledError, UnknownBackendError

if TYPE_CHECKING:
    from phi3_aipc.models import Artifact

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendInfo:
    name: str
    module: str
    cls: str
    #: The import that must succeed, the pip package that provides it, and our extra that installs it.
    requires: str
    package: str
    extra: str
    #: A word on where it runs, for `phi3-aipc doctor`; which device kinds it serves is the device table's.
    note: str
    #: Artifact formats it runs, in order of preference; a checkpoint is exported to the first exportable one.
    formats: tuple[str, ...]
    #: The tokenizer files it reads from an OpenVINO IR folder: 'openvino' (tokenizer IR) or 'hf'.
    tokenizer: str = "hf"
    aliases: tuple[str, ...] = ()

    @property
    def devices(self) -> str:
        """The device kinds it serves (from ``phi3_aipc.devices``), with its note."""
        kinds = ", ".join(kind.name for kind in devices.DEVICE_KINDS.values() if self.name in kind.backends)
        return f"{kinds} ({self.note})" if self.note else kinds


BACKENDS: dict[str, BackendInfo] = {
    info.name: info
    for info in (
        BackendInfo(
            "openvino",
            "phi3_aipc.backends.openvino_genai",
            "OpenVINOGenAIBackend",
            "openvino_genai",
            "openvino-genai",
            "openvino",
            "Intel Arc / iGPU on the GPU",
            formats=("openvino-ir", "gguf"),
            tokenizer="openvino",
            aliases=("ov", "openvino-genai", "openvino_genai"),
        ),
        BackendInfo(
            "openvino-batching",
            "phi3_aipc.backends.openvino_batching",
            "BatchingBackend",
            "openvino_genai",
            "openvino-genai",
            "openvino",
            "continuous batching: concurrent calls decode together",
            formats=("openvino-ir", "gguf"),
            tokenizer="openvino",
            aliases=("batching", "openvino-cb"),
        ),
        BackendInfo(
            "transformers",
            "phi3_aipc.backends.transformers_backend",
            "TransformersBackend",
            "transformers",
            "transformers",
            "transformers",
            "the reference implementation",
            formats=("hf-checkpoint",),
            aliases=("hf", "torch"),
        ),
        BackendInfo(
            "onnx",
            "phi3_aipc.backends.onnx_genai",
            "OnnxGenAIBackend",
            "onnxruntime_genai",
            "onnxruntime-genai",
            "onnx",
            "GPU and DML: DirectML on Windows GPUs and iGPUs",
            formats=("onnx",),
            aliases=("ort", "onnxruntime-genai", "onnxruntime_genai"),
        ),
        BackendInfo(
            "optimum-intel",
            "phi3_aipc.backends.optimum_intel",
            "OptimumIntelBackend",
            "optimum.intel",
            "optimum-intel",
            "optimum-intel",
            "Intel Arc / iGPU, ids like GPU.0",
            formats=("openvino-ir",),
            aliases=("optimum", "optimum_intel"),
        ),
        BackendInfo(
            "openvino-vlm",
            "phi3_aipc.backends.openvino_vlm",
            "OpenVINOVLMBackend",
            "openvino_genai",
            "openvino-genai",
            "openvino",
            "vision models (VLMPipeline): text and images",
            formats=("openvino-vlm",),
            tokenizer="openvino",
            aliases=("vlm", "openvino-vision"),
        ),
        BackendInfo(
            "npu-lib",
            "phi3_aipc.backends.npu_lib",
            "NPULibraryBackend",
            # The library itself is imported in load(), after the deprecation warning and with a better hint.
            "transformers",
            "intel-npu-acceleration-library",
            "npu-lib",
            "end of life, unverified here; prefer openvino on the NPU",
            formats=("hf-checkpoint",),
            aliases=("npu_lib", "intel-npu-acceleration-library"),
        ),
    )
}
ALIASES = {alias: info.name for info in BACKENDS.values() for alias in info.aliases}
DEFAULT_BACKEND = devices.DEFAULT_BACKEND


def resolve_backend_name(backend: str | None, device: str | None = None) -> str:
    """The registry name of ``backend``; None means the default for ``device`` (see ``phi3_aipc.devices``)."""
    if backend is None:
        return devices.default_backend(device)
    name = str(backend).strip().lower()
    name = ALIASES.get(name, name)
    if name not in BACKENDS:
        raise UnknownBackendError(
            f"Unknown backend {backend!r}. Choose one of: {', '.join(sorted(BACKENDS))} (or leave it unset for "
            f"'{DEFAULT_BACKEND}')."
        )
    return name


def serving_backend(device: str | None, options: Mapping[str, Any] | None = None) -> str | None:
    """The backend ``phi3-aipc serve`` uses when none is named: the device kind's batching backend, so concurrent
    requests decode together, where it has one (CPU, GPU: ``phi3_aipc.devices``) and the options ask for nothing
    only the serialising pipeline does (prompt lookup, a draft model). None: the device's default backend."""
    requested = devices.normalise_device(device)
    if devices.default_backend(requested) != DEFAULT_BACKEND:
        return None
    if any(
        str(k).upper() in openvino_assist.OPTIONS and v not in (None, False)
        for k, v in (options or {}).items()
    ):
        return None
    target = requested
    if requested == devices.AUTO:  # where 'auto' lands decides it: the NPU serialises
        target = backend_class(DEFAULT_BACKEND).pick_device(requested, dict(options or {}))
    return devices.kind_info(target).batching_backend


def backend_info(name: str) -> BackendInfo:
    return BACKENDS[resolve_backend_name(name)]


def backend_class(name: str) -> type[Backend]:
    """Import the backend's module, turning a missing dependency into an error that names the pip extra."""
    info = backend_info(name)
    try:
        importlib.import_module(info.requires)
    except ImportError as exc:
        raise BackendNotInstalledError(info.name, info.package, info.extra, exc) from exc
    module = importlib.import_module(info.module)
    return getattr(module, info.cls)


@dataclass(frozen=True)
class LoadRequest:
    """Everything resolved before a load: the backend, the concrete device, the artifact, the backend's options."""

    backend: type[Backend]
    device: str
    artifact: Artifact
    options: dict[str, Any]
    #: What was changed on the caller's behalf (e.g. NPU options left out when 'auto' picked the CPU).
    notes: tuple[str, ...] = ()

    def load(self) -> Backend:
        return self.backend.load(self.artifact, self.device, dict(self.options))


def prepare(
    name: str | None, model: Any, device: str | None, options: Mapping[str, Any] | None = None
) -> LoadRequest:
    """Resolve the backend, the device and the model (exporting it once if needed), without loading it."""
    from phi3_aipc.models import resolve

    opts = load_options.check_options(options)
    requested = devices.normalise_device(device)
    cls = backend_class(resolve_backend_name(name, requested))
    resolver_keys = load_options.RESOLVER_OPTIONS | cls.resolver_options
    opts = load_options.canonical(opts, cls.name, resolver_keys)
    target = cls.pick_device(requested, opts)
    notes: tuple[str, ...] = ()
    if requested == devices.AUTO:
        # Portable code: options for a device 'auto' did not pick are left out with a notice, not an error.
        opts, dropped = load_options.route(opts, cls.name, devices.device_kind(target))
        if dropped:
            notes = (load_options.dropped_notice(dropped, cls.name, target),)
            _warn_once(notes[0])
    artifact = resolve(
        model,
        devices.device_kind(target),
        cls.name,
        revision=load_options.revision(opts),
        precision=opts.get("precision") if "precision" in cls.resolver_options else None,
    )
    backend_opts = {k: v for k, v in opts.items() if k not in resolver_keys}
    if cls.name == "openvino":
        backend_opts = _with_draft_resolved(backend_opts, model, devices.device_kind(target), cls.name)
    return LoadRequest(cls, target, artifact, backend_opts, notes)


def _with_draft_resolved(options: dict[str, Any], model: Any, kind: str, backend: str) -> dict[str, Any]:
    """A ``draft_model`` option (a catalogue name, 'auto', a path or a Hub repo id) as the folder of the draft's
    build for its device, resolved like any model (so it is downloaded or converted once, here, not by the backend).
    """
    from phi3_aipc.models import resolve
    from phi3_aipc.models.catalogue import draft_for

    key = next((k for k in options if k.lower() == "draft_model"), None)
    if key is None:
        return options
    draft = options[key]
    if draft is None:
        return {k: v for k, v in options.items() if k != key}
    if isinstance(draft, str) and draft.strip().lower() == "auto":
        draft = draft_for(model)
    device = next((v for k, v in options.items() if k.lower() == "draft_device"), None)
    draft_kind = devices.device_kind(devices.normalise_device(device)) if device is not None else kind
    return {**options, key: str(resolve(draft, draft_kind, backend).path)}


@functools.cache
def _warn_once(notice: str) -> None:
    log.warning("%s", notice)


def load_backend(
    name: str | None, model: Any, device: str | None, options: Mapping[str, Any] | None = None
) -> Backend:
    """Resolve and load, without the shared engine cache (``phi3_aipc.get_engine`` is the cached way)."""
    return prepare(name, model, device, options).load()
