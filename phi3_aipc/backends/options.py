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
