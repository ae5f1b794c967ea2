"""Reading JSON out of model text, with bounds: model output is data, never code, and never crashes a parser.

A model can write anything: 1,000 levels of nesting (``json`` then raises RecursionError), NaN or Infinity (not
JSON), or thousands of calls. Every reader here returns None or a reason instead of raising.
"""

from __future__ import annotations

import json
import re
from typing import Any

#: Deeper nesting than any tool argument needs; beyond it the text is refused before ``json`` recurses.
MAX_DEPTH = 64
#: Most characters of JSON parsed from one answer (a generous bound on what max_new_tokens can produce).
MAX_CHARS = 200_000


class JsonRefused(ValueError):
    """The text is JSON-like but outside the bounds, or not strict JSON (NaN, Infinity)."""


def _refuse_constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not a JSON number")


def nesting_depth(text: str) -> int:
    """The deepest bracket nesting outside strings, counted without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def loads_bounded(text: str) -> Any:
    """``json.loads`` that refuses NaN/Infinity, over-deep nesting and over-long text with JsonRefused."""
    if len(text) > MAX_CHARS:
        raise JsonRefused(f"the JSON is longer than {MAX_CHARS} characters")
    if nesting_depth(text) > MAX_DEPTH:
        raise JsonRefused(f"the JSON nests deeper than {MAX_DEPTH} levels")
    return json.loads(text, parse_constant=_refuse_constant)


def bare_json(text: str) -> Any | None:
    """The JSON object or array that is the whole of ``text`` (whitespace aside), or None."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        return loads_bounded(stripped)
    except ValueError:
        return None


def guess_name(body: str) -> str | None:
    """The "name" a broken call seems to have, so an invalid call can still say which tool it meant."""
    match = re.search(r'"name"\s*:\s*"([^"]{1,64})"', body[:2000])
    return match.group(1) if match else None
