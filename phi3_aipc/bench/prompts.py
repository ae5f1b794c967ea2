"""Prompts of an exact token length, counted with the engine's own tokenizer, different on every run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from phi3_aipc.errors import InvalidParameterError

# Filler the prompts are made of: short common words, mostly one token each in any BPE vocabulary.
_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "small",
    "birds",
    "sing",
    "in",
    "tall",
    "green",
    "trees",
    "near",
    "the",
    "old",
    "stone",
    "bridge",
    "and",
    "children",
    "play",
    "by",
    "the",
    "river",
    "on",
    "a",
    "warm",
    "summer",
    "day",
]
# Tokens added one at a time after the binary search, to land on the exact length.
_MAX_TOP_UP = 8


def exact_prompt(engine: Any, tokens: int, variant: int = 0) -> str:
    """A raw prompt (no chat template, as Intel's llm_bench feeds it) of exactly ``tokens`` tokens for ``engine``.

    ``variant`` rotates the filler so that each run's prompt differs from its first words on (prefix caching
    would otherwise make repeated prompts look fast).
    """
    return _exact(engine.count_tokens, tokens, variant)


def exact_chat(engine: Any, tokens: int, variant: int = 0) -> list[dict[str, str]]:
    """One user message whose chat-formatted prompt is exactly ``tokens`` tokens, or the template's length plus
    a few words when the template alone is longer (SmolLM2's adds a 30-token system prompt)."""

    def messages(text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": text}]

    def length(text: str) -> int:
        return engine.count_tokens(engine.format_chat(messages(text)))

    floor = length(_filler(variant, 8))
    return messages(_exact(length, max(tokens, floor), variant))


def effective_input_tokens(engine: Any, wanted: int, output_tokens: int) -> int:
    """``wanted``, capped by the NPU's MAX_PROMPT_LEN and by the context window minus the output."""
    limits = [wanted]
    if engine.max_prompt_tokens is not None:
        limits.append(int(engine.max_prompt_tokens))
    if engine.context_window is not None:
        limits.append(int(engine.context_window) - output_tokens)
    return min(limits)


def _filler(variant: int, count: int, tail: int = 0) -> str:
    shift = variant % len(_WORDS)
    words = _WORDS[shift:] + _WORDS[:shift]
    body = " ".join(words[i % len(words)] for i in range(count))
    return f"Run {variant}: {body}" + " the" * tail


def _exact(length: Callable[[str], int], tokens: int, variant: int) -> str:
    if length(_filler(variant, 0)) > tokens:
        raise InvalidParameterError(
            f"Cannot build a prompt as short as {tokens} tokens; ask for a longer one."
        )
    low, high = 0, max(tokens, 1)
    while low < high:  # the most filler words that still fit
        mid = (low + high + 1) // 2
        if length(_filler(variant, mid)) <= tokens:
            low = mid
        else:
            high = mid - 1
    for tail in range(_MAX_TOP_UP):  # top up one token at a time
        text = _filler(variant, low, tail)
        got = length(text)
        if got == tokens:
            return text
        if got > tokens:
            break
    raise InvalidParameterError(f"Could not build a prompt of exactly {tokens} tokens with this tokenizer.")
