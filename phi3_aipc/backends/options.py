"""Load options shared by every backend, parsed in one place."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from phi3_aipc.errors import InvalidParameterError

#: Options the model resolver reads for every backend (the rest go to the backend).
RESOLVER_OPTIONS = frozenset({"revision"})

_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})


def check_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` as a plain dict with text keys; anything that is not a mapping is refused."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidParameterError(
            f"options must be a mapping of option names to values, e.g. {{'MAX_PROMPT_LEN': 2048}}, "
            f"got {type(options).__name__}: {options!r}."
        )
    for key in options:
        if not isinstance(key, str) or not key.strip():
            raise InvalidParameterError(f"Option names must be non-empty strings, got {key!r}.")
    return dict(options)


def parse_flag(name: str, value: Any) -> bool:
    """A real bool, or one of true/false, yes/no, 1/0, on/off in any case; anything else is an error."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise InvalidParameterError(
        f"Option {name} must be true or false (a bool, or one of true/false, yes/no, 1/0, on/off), got {value!r}."
    )


def trust_remote_code(options: Mapping[str, Any]) -> bool:
    """Whether the caller allowed running a model folder's own Python code (never by default)."""
    return parse_flag("trust_remote_code", options.get("trust_remote_code", False))


def revision(options: Mapping[str, Any]) -> str | None:
    """The Hub revision (branch, tag or commit) the caller pinned, if any."""
    value = options.get("revision")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidParameterError(f"Option revision must be a branch, tag or commit id, got {value!r}.")
    return value.strip()


# -- which options belong to which backend and device ------------------------------------------------------------
#: Options only OpenVINO GenAI's NPU pipeline takes (a name ending in '_' is a prefix); any other device refuses them.
NPU_ONLY_OPTIONS = ("NPUW_", "MAX_PROMPT_LEN", "MIN_RESPONSE_LEN", "GENERATE_HINT")
#: The backends that take OpenVINO properties (upper-case option names such as PERFORMANCE_HINT).
OPENVINO_PROPERTY_BACKENDS = ("openvino", "optimum-intel", "openvino-vlm")
#: The backends whose NPU pipeline takes the NPU-only options.
NPU_PIPELINE_BACKENDS = ("openvino", "openvino-vlm")


#: Backends that read every option name in any case (OpenVINO properties and their own switches): their keys are
#: upper-cased once here, so 'num_streams' and 'NUM_STREAMS' are one option (and one cached engine).
ANY_CASE_BACKENDS = ("openvino", "openvino-batching")


def canonical(options: Mapping[str, Any], backend: str, keep: frozenset[str]) -> dict[str, Any]:
    """One spelling per option for ``backend``: upper-case keys where its names are case-blind (``keep``, the
    resolver's lower-case names, stay as they are), and an OpenVINO property's whole-number float (1.0) as an int.

    Without this, NUM_STREAMS 1, 1.0 and num_streams=1 mean the same to OpenVINO but load three engines.
    """
    result: dict[str, Any] = {}
    for key, value in options.items():
        name = key.upper() if backend in ANY_CASE_BACKENDS and key not in keep else key
        if name in result and result[name] != _whole(value):
            raise InvalidParameterError(
                f"Option {name} is given twice with different values ({result[name]!r} and {value!r}), spelt "
                f"differently; pass it once."
            )
        result[name] = _whole(value) if is_openvino_property(name) else value
    return result


def _whole(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def is_npu_only(key: str) -> bool:
    name = str(key).upper()
    return any(name.startswith(o) if o.endswith("_") else name == o for o in NPU_ONLY_OPTIONS)


def is_openvino_property(key: str) -> bool:
    return str(key).isupper()


def applies(key: str, backend: str, device_kind: str) -> bool:
    """Whether option ``key`` means anything to ``backend`` on a device of ``device_kind`` ('NPU', 'CPU', ...).

    NPU pipeline options belong to OpenVINO GenAI on the NPU; other OpenVINO properties to the OpenVINO backends;
    lower-case options (revision, trust_remote_code, dtype...) are each backend's own to accept or refuse.
    """
    if is_npu_only(key):
        return backend in NPU_PIPELINE_BACKENDS and device_kind == "NPU"
    if is_openvino_property(key):
        return backend in OPENVINO_PROPERTY_BACKENDS
    return True


def route(options: Mapping[str, Any], backend: str, device_kind: str) -> tuple[dict[str, Any], list[str]]:
    """(the options that apply to ``backend`` on ``device_kind``, the names of those that do not)."""
    kept = {k: v for k, v in options.items() if applies(k, backend, device_kind)}
    return kept, [k for k in options if k not in kept]


def dropped_notice(dropped: list[str], backend: str, device: str) -> str:
    """The one line that says which options device='auto' left out, and why."""
    return (
        f"device='auto' picked {device} ({backend}), so the option(s) {', '.join(sorted(dropped))} for another "
        f"device or backend were ignored. Name the device to make them an error instead."
    )
