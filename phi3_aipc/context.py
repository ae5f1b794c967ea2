"""Fitting a conversation into the window: the ``context_overflow`` policy of a chat turn.

``"error"`` (the default) leaves the messages alone; a prompt that does not fit raises PromptTooLongError.
``"trim"`` makes it fit, in this order, until the rendered prompt plus the answer's reserved tokens fit:

1. system messages and the last user turn (the last user message and whatever follows it: the current agent
   step's tool calls and results) always stay;
2. the oldest earlier turns are dropped whole (a user message with the answers, tool calls and tool results after
   it), so a tool result never loses its call;
3. then the longest remaining contents (tool results, retrieved context in a system or user message) are shortened
   from the middle, where a mark says how much was cut: ``[… 212 tokens cut …]``.

Tokens are counted on the prompt exactly as the engine renders it (chat template, tool definitions and all), with
the engine's own tokenizer. The report (:class:`TrimReport`) says what was dropped and cut.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from phi3_aipc.errors import InvalidParameterError, PromptTooLongError

ContextOverflow = Literal["error", "trim"]
POLICIES: tuple[str, ...] = ("error", "trim")

#: The mark left where a content was shortened (``{}``: the number of tokens cut).
CUT_MARK = "\n[… {} tokens cut …]\n"
#: A shortened content keeps at least this many tokens of its head and tail together.
MIN_KEPT_TOKENS = 32
#: Contents that may be shortened: tool results and the messages retrieved context is put in.
SHORTENABLE_ROLES = ("tool", "system", "user")

Messages = list[dict[str, Any]]


def check_policy(policy: Any) -> ContextOverflow:
    """``policy`` if it is 'error' or 'trim'; anything else is an InvalidParameterError."""
    if policy not in POLICIES:
        raise InvalidParameterError(
            f"context_overflow must be 'error' (refuse a prompt that does not fit) or 'trim' (drop the oldest "
            f"turns, then shorten long tool results and retrieved context), got {policy!r}."
        )
    return policy  # type: ignore[return-value]


@dataclass(frozen=True)
class TrimReport:
    """What ``context_overflow="trim"`` removed to make the prompt fit ``budget`` tokens."""

    budget: int
    prompt_tokens_before: int
    prompt_tokens_after: int
    #: Whole messages dropped (the oldest turns), and the prompt tokens that saved.
    dropped_messages: int = 0
    dropped_tokens: int = 0
    #: Messages shortened from the middle, and the prompt tokens that saved.
    shortened_messages: int = 0
    cut_tokens: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.dropped_messages or self.shortened_messages)

    def as_dict(self) -> dict[str, int]:
        return {
            "budget": self.budget,
            "prompt_tokens_before": self.prompt_tokens_before,
            "prompt_tokens_after": self.prompt_tokens_after,
            "dropped_messages": self.dropped_messages,
            "dropped_tokens": self.dropped_tokens,
            "shortened_messages": self.shortened_messages,
            "cut_tokens": self.cut_tokens,
        }


def prompt_budget(engine: Any, max_new_tokens: int) -> int | None:
    """Most prompt tokens allowed: the NPU's MAX_PROMPT_LEN, and the context window less the answer's tokens."""
    limits = []
    if engine.max_prompt_tokens is not None:
        limits.append(engine.max_prompt_tokens)
    if engine.context_window is not None:
        limits.append(engine.context_window - max_new_tokens)
    return min(limits) if limits else None


def budget_hint(engine: Any, max_new_tokens: int) -> str:
    """What the budget is made of, for error messages."""
    parts = []
    if engine.max_prompt_tokens is not None:
        parts.append(f"the {engine.device} prompt limit (MAX_PROMPT_LEN={engine.max_prompt_tokens})")
    if engine.context_window is not None:
        parts.append(
            f"the {engine.context_window}-token context window less max_new_tokens={max_new_tokens} for the answer"
        )
    return " and ".join(parts) or "no limit"


def fit_messages(
    messages: Messages,
    count: Callable[[Messages], int],
    budget: int,
    count_text: Callable[[str], int] | None = None,
) -> tuple[Messages, TrimReport]:
    """``messages`` made to fit ``budget`` prompt tokens (``count`` renders and counts a message list;
    ``count_text`` counts a piece of text, for the cut marks: without it they give an estimate).

    Raises PromptTooLongError when even the system messages and the last user turn, shortened as far as allowed,
    do not fit.
    """
    before = count(messages)
    if before <= budget:
        return messages, TrimReport(budget, before, before)
    kept, dropped = _drop_oldest_turns(messages, count, budget)
    after_drop = count(kept)
    kept, shortened = _shorten_longest(kept, count, budget, after_drop, count_text)
    after = count(kept)
    report = TrimReport(
        budget,
        before,
        after,
        dropped_messages=dropped,
        dropped_tokens=before - after_drop,
        shortened_messages=shortened,
        cut_tokens=after_drop - after,
    )
    if after > budget:
        raise PromptTooLongError(
            after,
            budget,
            "prompt budget, even with context_overflow='trim',",
            f"Dropping {dropped} older message(s) and shortening {shortened} long content(s) was not enough: the "
            f"system messages, the tool definitions and the last user turn must fit on their own. Shorten them, ask "
            f"for fewer max_new_tokens, or load the model with a larger window.",
        )
    return kept, report


# -- step 1: drop the oldest turns ---------------------------------------------------------------------------------
def _turns(messages: Messages) -> tuple[list[int], list[list[int]], list[int]]:
    """(system message indices, earlier turns as index lists, the last user turn's indices).

    A turn starts at a user message and runs to the next one, so tool calls and their results stay together.
    """
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=len(messages))
    system = [i for i, m in enumerate(messages) if m["role"] == "system"]
    turns: list[list[int]] = []
    for i, message in enumerate(messages[:last_user]):
        if message["role"] == "system":
            continue
        if message["role"] == "user" or not turns:
            turns.append([])
        turns[-1].append(i)
    last = [i for i in range(last_user, len(messages)) if messages[i]["role"] != "system"]
    return system, turns, last


def _drop_oldest_turns(
    messages: Messages, count: Callable[[Messages], int], budget: int
) -> tuple[Messages, int]:
    system, turns, last = _turns(messages)
    dropped: set[int] = set()
    kept = messages
    for turn in turns:
        if count(kept) <= budget:
            break
        dropped.update(turn)
        kept = [m for i, m in enumerate(messages) if i not in dropped]
    return kept, len(dropped)


# -- step 2: shorten the longest contents from the middle --------------------------------------------------------
def _shorten_longest(
    messages: Messages,
    count: Callable[[Messages], int],
    budget: int,
    tokens: int,
    count_text: Callable[[str], int] | None,
) -> tuple[Messages, int]:
    messages = [dict(m) for m in messages]
    shortened: set[int] = set()
    tried: set[int] = set()
    while tokens > budget:
        index = _longest(messages, tried)
        if index is None:
            break
        tried.add(index)
        original = messages[index]["content"]
        messages[index]["content"] = _cut_middle(messages, index, count, tokens - budget, count_text)
        if messages[index]["content"] != original:
            shortened.add(index)
            tokens = count(messages)
    return messages, len(shortened)


def _longest(messages: Messages, tried: set[int]) -> int | None:
    candidates = [
        i
        for i, m in enumerate(messages)
        if i not in tried and m["role"] in SHORTENABLE_ROLES and len(m.get("content") or "") > 0
    ]
    return max(candidates, key=lambda i: len(messages[i]["content"]), default=None)


def _cut_middle(
    messages: Messages,
    index: int,
    count: Callable[[Messages], int],
    excess: int,
    count_text: Callable[[str], int] | None,
) -> str:
    """The content at ``index`` with enough cut from its middle to save ``excess`` prompt tokens, if it can.

    Only ``count`` is known (no token boundaries), so the cut is made in characters, sized by the content's own
    characters-per-token ratio, and widened until the whole prompt saves enough or the content is at its minimum.
    """
    text = messages[index]["content"]
    content_tokens = count_content(messages, index, count)
    if content_tokens <= MIN_KEPT_TOKENS:
        return text
    chars_per_token = len(text) / max(content_tokens, 1)
    before = count(messages)
    target = excess + 16  # the cut mark costs a few tokens of its own
    best = text
    for _ in range(8):
        remove_tokens = min(target, content_tokens - MIN_KEPT_TOKENS)
        candidate = _without_middle(text, int(remove_tokens * chars_per_token), content_tokens, count_text)
        trial = [*messages[:index], {**messages[index], "content": candidate}, *messages[index + 1 :]]
        saved = before - count(trial)
        best = candidate
        if saved >= excess or remove_tokens >= content_tokens - MIN_KEPT_TOKENS:
            break
        target += max(excess - saved, 8)
    return best


def _without_middle(
    text: str, remove_chars: int, text_tokens: int, count_text: Callable[[str], int] | None
) -> str:
    remove_chars = max(1, min(remove_chars, len(text) - 2))
    head = (len(text) - remove_chars) // 2
    tail_start = head + remove_chars
    removed = text[head:tail_start]
    cut_tokens = count_text(removed) if count_text else round(text_tokens * remove_chars / len(text))
    return text[:head] + CUT_MARK.format(cut_tokens) + text[tail_start:]


def count_content(messages: Messages, index: int, count: Callable[[Messages], int]) -> int:
    """Prompt tokens the content at ``index`` costs: the prompt with it, less the prompt with it empty."""
    emptied = [*messages[:index], {**messages[index], "content": ""}, *messages[index + 1 :]]
    return count(messages) - count(emptied)


def describe(report: TrimReport) -> str:
    """One sentence for people (the chat CLI, notes)."""
    parts = []
    if report.dropped_messages:
        parts.append(
            f"dropped the {report.dropped_messages} oldest message(s) ({report.dropped_tokens} tokens)"
        )
    if report.shortened_messages:
        parts.append(f"shortened {report.shortened_messages} long message(s) by {report.cut_tokens} tokens")
    return (
        f"context trimmed: {' and '.join(parts)} to fit {report.budget} prompt tokens "
        f"({report.prompt_tokens_before} -> {report.prompt_tokens_after})"
    )
