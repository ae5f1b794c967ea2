"""Load options the adapters' fields add: framework-free, and free of any backend (adapters import it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from phi3_aipc.errors import InvalidParameterError


def with_speed_options(
    options: Mapping[str, Any], prompt_lookup: bool | None = None, draft_model: str | None = None
) -> dict[str, Any]:
    """``options`` plus the adapters' ``prompt_lookup`` / ``draft_model`` fields, where set (None leaves the option
    alone: the engine's default, or what ``options`` says). A field and an option that disagree are an error."""
    merged = dict(options)
    for name, value in (("prompt_lookup", prompt_lookup), ("draft_model", draft_model)):
        if value is None:
            continue
        given = next((v for k, v in merged.items() if k.lower() == name), None)
        if given is not None and given != value:
            raise InvalidParameterError(
                f"{name}={value!r} and options['{name}']={given!r} disagree: set it in one place."
            )
        merged[name] = value
    return merged
