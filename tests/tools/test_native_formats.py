"""A model's own tool format (Hermes ``<tool_call>`` blocks, the ``tool`` role), picked from its chat template.

Unit tests read the real Qwen2.5 template (no model); engine tests run a tiny random Qwen2 built around the real
Qwen2.5 tokenizer and template, exported to OpenVINO IR: plumbing only (the prompt the template writes, the constraint
forcing a schema-valid call in the Hermes shape, streamed and whole answers read alike).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from phi3_aipc.chat import ChatTurn, TurnDone, TurnResult
from phi3_aipc.params import GenerationParams, GenerationResult, Timings
from phi3_aipc.testing.precision import LLM_F32
from phi3_aipc.testing.tiny_qwen2 import QWEN_TOKENIZER_DIR
from phi3_aipc.tools import ToolCall, ToolSpec, protocol_for
from phi3_aipc.tools.protocols import detect_format

WEATHER = ToolSpec(
    "get_weather",
    "Get the current weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = ToolSpec(
    "get_time",
    "Get the local time in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TOOLS = [WEATHER, TIME]
USER = [{"role": "user", "content": "What is the weather in Paris?"}]
F32 = LLM_F32
KINDS = frozenset({"json_schema", "regex", "structural_tags"})
HERMES_CALL = re.compile(
    r'<tool_call>\n\{"name": "(get_weather|get_time)", "arguments": \{.*\}\}\n</tool_call>'
)
AFTER_CALL = [
    *USER,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "name": "get_weather", "arguments": {"city": "Paris"}}],
    },
    {"role": "tool", "content": "17 C and sunny", "tool_call_id": "c1", "name": "get_weather"},
]


@pytest.fixture(scope="module")
def qwen_template() -> str:
    path = QWEN_TOKENIZER_DIR / "chat_template.jinja"
    if not path.is_file():
        pytest.skip(f"the Qwen2.5 template is not at {path} (set PHI3_AIPC_QWEN_TOKENIZER)")
    return path.read_text(encoding="utf-8")


def plan(template: str, messages=USER, choice=None, parallel=True):  # noqa: ANN001, ANN201
    turn = ChatTurn(messages, TOOLS, choice, parallel_tool_calls=parallel)
    return turn.plan_for("other", KINDS, chat_template=template)


# -- format from the template ----------------------------------------------------------------------------------------
def test_the_format_is_read_from_the_template(qwen_template: str) -> None:
    assert detect_format(qwen_template) == "hermes"
    assert protocol_for("other", qwen_template).name == "hermes"
    # A template that renders no tools keeps JSON in tags (Phi-3, SmolLM2); Phi-4 keeps its own format.
    chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    assert protocol_for("other", chatml).name == "json_tags"
    assert protocol_for("phi4", qwen_template).name == "phi4"
    assert detect_format("{% if tools %}[TOOL_CALLS]{% endif %}") == "mistral"
    assert detect_format("{% if tools %}<|python_tag|>{% endif %}") == "llama3_json"


def test_tools_calls_and_results_go_through_the_template(qwen_template: str) -> None:
    planned = plan(qwen_template, AFTER_CALL)
    assert planned.template_tools == [
        {"type": "function", "function": WEATHER.to_dict()},
        {"type": "function", "function": TIME.to_dict()},
    ]
    # No system prompt of ours: the template's own "# Tools" block is what the model was trained on.
    assert [m["role"] for m in planned.prompt] == ["user", "assistant", "tool"]
    assert planned.prompt[1]["tool_calls"] == [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    assert planned.prompt[2] == {
        "role": "tool",
        "content": "17 C and sunny",
        "tool_call_id": "c1",
        "name": "get_weather",
    }
    assert "<tool_response>" in planned.params.stop and "<tool_result>" in planned.params.stop


def test_auto_is_constrained_from_the_models_own_opener(qwen_template: str) -> None:
    constraint = plan(qwen_template).constraint
    assert constraint.kind == "structural_tags" and constraint.triggers == ("<tool_call>",)
    assert not constraint.at_least_one and not constraint.stop_after_first
    # The template writes the tag, a newline, then the JSON: the constraint begins exactly so.
    assert [t.begin for t in constraint.tags] == [
        '<tool_call>\n{"name": "get_weather", "arguments": ',
        '<tool_call>\n{"name": "get_time", "arguments": ',
    ]
    assert {t.end for t in constraint.tags} == {"}\n</tool_call>"}


def test_forced_allows_one_or_more_calls_with_parallel_calls_and_one_without(qwen_template: str) -> None:
    # With parallel calls the first try starts free ('auto''s constraint under the forcing prompt); the retry of a
    # free start that made no call forces the opener from the first token and allows one or more calls.
    free = plan(qwen_template, choice="required")
    assert (
        free.free_start and not free.constraint.at_least_one and free.constraint.triggers == ("<tool_call>",)
    )
    assert "You must call at least one tool now" in json.dumps(free.prompt)
    turn = ChatTurn(USER, TOOLS, "required")
    no_call = TurnResult(
        "Sure.", [], [], GenerationResult("Sure.", "stop", 1, 1, Timings()), True, free_start=True
    )
    forcing = turn._force_instead(no_call)
    assert forcing is not None
    parallel = forcing.plan_for("other", KINDS, chat_template=qwen_template)
    assert not parallel.free_start
    assert parallel.constraint.at_least_one and not parallel.constraint.stop_after_first
    assert parallel.constraint.separator == "\n"
    # A free start that made a call is kept, and a forced try is never tried again.
    assert turn._force_instead(_result([ToolCall("get_weather", {"city": "Paris"})], free_start=True)) is None
    assert forcing._force_instead(_result([])) is None
    single = plan(qwen_template, choice="get_time", parallel=False).constraint
    assert single.at_least_one and single.stop_after_first
    assert [t.begin for t in single.tags] == ['<tool_call>\n{"name": "get_time", "arguments": ']


HERMES_ANSWER = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {"city": "Rome"}}\n</tool_call>\n'
    "<tool_response>\n18 C\n</tool_response>"
)


def test_streamed_and_whole_answers_read_the_same_and_invented_results_are_dropped(
    qwen_template: str,
) -> None:
    whole = plan(qwen_template).read(HERMES_ANSWER)
    streamed = plan(qwen_template)
    events = [e for ch in HERMES_ANSWER for e in streamed.feed(ch)] + streamed.flush()
    assert [(c.name, c.arguments) for c in whole.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"city": "Rome"}),
    ]
    assert [(c.name, c.arguments) for c in streamed.parsed().tool_calls] == [
        (c.name, c.arguments) for c in whole.tool_calls
    ]
    assert whole.content == "" and streamed.parsed().content == ""
    assert not any("tool_" in getattr(e, "text", "") for e in events)


def test_text_before_a_call_stays_and_a_code_fence_around_calls_goes(qwen_template: str) -> None:
    fenced = plan(qwen_template).read(
        '```json\n<tool_call>\n{"name": "get_time", "arguments": {"city": "Oslo"}}\n</tool_call>\n```'
    )
    assert fenced.content == "" and [c.arguments for c in fenced.tool_calls] == [{"city": "Oslo"}]
    plain = plan(qwen_template).read("Paris is the capital of France.")
    assert plain.content == "Paris is the capital of France." and not plain.tool_calls


def _result(calls: list[ToolCall], free_start: bool = False) -> TurnResult:
    return TurnResult(
        "", calls, [], GenerationResult("", "stop", 1, 1, Timings()), True, free_start=free_start
    )


def test_a_call_repeated_right_after_its_result_is_answered_instead() -> None:
    turn = ChatTurn(AFTER_CALL, TOOLS)
    again = turn._answer_instead(_result([ToolCall("get_weather", {"city": "Paris"})]))
    assert again is not None and again.tool_choice == "none"
    # Another city, or another tool, is a new call and is kept.
    assert turn._answer_instead(_result([ToolCall("get_weather", {"city": "Rome"})])) is None
    assert turn._answer_instead(_result([ToolCall("get_time", {"city": "Paris"})])) is None
    # Not right after results: nothing is repeated.
    assert (
        ChatTurn(USER, TOOLS)._answer_instead(_result([ToolCall("get_weather", {"city": "Paris"})])) is None
    )


# -- a tiny random Qwen2 through OpenVINO GenAI ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def qwen_engine(tiny_qwen2_ov: Path):  # noqa: ANN201
    from phi3_aipc import get_engine, release_engine

    engine = get_engine(str(tiny_qwen2_ov), "CPU", options=F32)
    yield engine
    release_engine(engine)


def test_the_engine_reads_the_template_and_renders_its_tools_block(qwen_engine) -> None:  # noqa: ANN001
    turn = ChatTurn(AFTER_CALL, TOOLS)
    planned = turn.plan(qwen_engine)
    prompt = planned.render(qwen_engine)
    assert "# Tools" in prompt and "<tools>" in prompt and json.dumps(WEATHER.to_dict()) in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert "<tool_response>\n17 C and sunny\n</tool_response>" in prompt
    assert "You can call these tools" not in prompt  # not our JSON-in-tags prompt


@pytest.mark.parametrize("choice", ["required", "get_time"])
def test_the_constraint_forces_the_hermes_opener_and_a_real_tool(qwen_engine, choice: str) -> None:  # noqa: ANN001
    # Random weights under a JSON schema emit only whitespace inside the object (backends.md), so this checks
    # what the constraint decides: the model's own opener, a newline, a bound tool's name, then the arguments
    # object; the whole schema-valid call is checked on the real Qwen2.5 (tests/agents).
    params = GenerationParams(max_new_tokens=24)
    turn = ChatTurn(USER, TOOLS, choice, params=params, parallel_tool_calls=False)
    text = turn.run(qwen_engine).generation.text
    names = "get_weather|get_time" if choice == "required" else choice
    assert re.fullmatch(r'<tool_call>\n\{"name": "(' + names + r')", "arguments": \{\s*', text), text
    streamed = list(turn.stream(qwen_engine))
    assert isinstance(streamed[-1], TurnDone) and streamed[-1].result.generation.text == text
    unconstrained = ChatTurn(USER, TOOLS, choice, params=params, constrained=False).run(qwen_engine)
    assert not unconstrained.generation.text.startswith("<tool_call>")  # so the constraint did it


def test_forced_parallel_calls_start_free_and_are_forced_when_the_free_start_makes_none(qwen_engine) -> None:  # noqa: ANN001
    import asyncio

    # Random weights never write the model's own opener unprompted, so the free start makes no call and the
    # turn is run again with the opener forced: each door (whole, streamed, async) gives that second try.
    params = GenerationParams(max_new_tokens=24)
    turn = ChatTurn(USER, TOOLS, "required", params=params)
    first = turn._run_once(qwen_engine)
    assert first.free_start and not first.tool_calls
    assert not first.generation.text.startswith("<tool_call>"), first.generation.text
    forced = re.compile(r'<tool_call>\n\{"name": "(get_weather|get_time)", "arguments": \{\s*')
    result = turn.run(qwen_engine)
    assert not result.free_start and forced.fullmatch(result.generation.text), result.generation.text
    streamed = list(turn.stream(qwen_engine))
    assert (
        isinstance(streamed[-1], TurnDone) and streamed[-1].result.generation.text == result.generation.text
    )

    async def both() -> tuple[TurnResult, list]:
        return await turn.arun(qwen_engine), [e async for e in turn.astream(qwen_engine)]

    whole, events = asyncio.run(both())
    assert whole.generation.text == events[-1].result.generation.text == result.generation.text
