"""The engine's tool-call protocol: prompts, constraints, parsing, streaming, structured output.

Unit tests need no model; the real-engine tests run SmolLM2-135M-Instruct through OpenVINO GenAI.
"""

from __future__ import annotations

import json

import pytest
from typing_extensions import TypedDict

from phi3_aipc.chat import ChatTurn, JsonFormat, TextDelta
from phi3_aipc.errors import InvalidParameterError
from phi3_aipc.params import GenerationParams
from phi3_aipc.tools import (
    InvalidToolCall,
    OutputParseError,
    ToolCall,
    ToolSpec,
    json_schema_of,
    parse_json_output,
    protocol_for,
)

WEATHER = ToolSpec(
    "get_weather",
    "Get the current weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
MULTIPLY = ToolSpec(
    "multiply",
    "Multiply two integers.",
    {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)
TOOLS = [WEATHER, MULTIPLY]
USER = [{"role": "user", "content": "What is the weather in Paris?"}]
STRUCTURAL = frozenset({"json_schema", "structural_tags"})


def prepare_tool_call(
    messages, tools, choice=None, *, family="other", constraint_kinds=(), constrained=True, parallel=True
):
    """The chat turn planned for a model family and a backend's constraint kinds (no engine needed)."""
    turn = ChatTurn(messages, tools, choice, constrained=constrained, parallel_tool_calls=parallel)
    return turn.plan_for(family, constraint_kinds)


# -- specs and choices ------------------------------------------------------------------------------------------
def test_tool_spec_accepts_openai_and_bare_dicts():
    openai = {"type": "function", "function": WEATHER.to_dict()}
    assert ToolSpec.from_dict(openai) == WEATHER
    assert ToolSpec.from_dict({"name": "noop"}).parameters == {"type": "object", "properties": {}}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "bad name!"}, "not valid"),
        ({"description": "x"}, "needs a 'name'"),
        ({"name": "t", "parameters": {"type": "nonsense"}}, "schema of tool 't' is invalid"),
    ],
)
def test_bad_tool_specs_say_what_is_wrong(spec, message):
    with pytest.raises(InvalidParameterError, match=message):
        prepare_tool_call(USER, [spec])


def test_tool_choice_rules():
    assert prepare_tool_call(USER, TOOLS, None).tool_choice == "auto"
    assert prepare_tool_call(USER, [], None).tool_choice == "none"
    assert prepare_tool_call(USER, TOOLS, "any").tool_choice == "required"
    with pytest.raises(InvalidParameterError, match="not bound"):
        prepare_tool_call(USER, TOOLS, "search")
    with pytest.raises(InvalidParameterError, match="needs at least one tool"):
        prepare_tool_call(USER, [], "required")
    with pytest.raises(InvalidParameterError, match="unique"):
        prepare_tool_call(USER, [WEATHER, WEATHER])


# -- prompts ------------------------------------------------------------------------------------------------------
def test_phi3_prompt_describes_the_json_protocol_in_the_system_message():
    request = prepare_tool_call([{"role": "system", "content": "Be brief."}, *USER], TOOLS, family="phi3")
    system = request.prompt[0]
    assert system["role"] == "system" and system["content"].startswith("Be brief.")
    assert '"name": "get_weather"' in system["content"] and "<tool_call>" in system["content"]
    assert "plain text" in system["content"]
    assert request.prompt[1:] == USER


def test_named_choice_shows_only_that_tool_and_demands_it():
    request = prepare_tool_call(USER, TOOLS, "multiply", family="other")
    assert [t.name for t in request.tools] == ["multiply"]
    assert "You must call the tool 'multiply'" in request.prompt[0]["content"]
    assert "get_weather" not in request.prompt[0]["content"]


def test_none_hides_tools_but_keeps_history():
    history = [
        *USER,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "1", "name": "get_weather", "arguments": {}}],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "1", "name": "get_weather"},
    ]
    request = prepare_tool_call(history, TOOLS, "none", family="phi3", constraint_kinds=STRUCTURAL)
    assert request.constraint is None and request.prompt[0]["role"] == "user"
    assert request.read('<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>').tool_calls == []
    assert "<tool_result" in request.prompt[-1]["content"]


def test_phi3_renders_calls_and_results_as_plain_turns():
    history = [
        *USER,
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "a", "name": "get_weather", "arguments": {"city": "Paris"}},
                {"id": "b", "name": "get_weather", "arguments": {"city": "Rome"}},
            ],
        },
        {"role": "tool", "content": "18 C", "tool_call_id": "a", "name": "get_weather"},
        {"role": "tool", "content": "25 C", "tool_call_id": "b", "name": "get_weather"},
    ]
    messages = prepare_tool_call(history, TOOLS, family="phi3").prompt
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == (
        'Checking.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'
    )
    assert messages[3]["content"] == (
        '<tool_result name="get_weather">\n18 C\n</tool_result>\n<tool_result name="get_weather">\n25 C\n</tool_result>'
    )


def test_phi4_uses_its_native_tool_fields_and_roles():
    history = [
        *USER,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "a", "name": "get_weather", "arguments": {"city": "Paris"}}],
        },
        {"role": "tool", "content": "18 C", "tool_call_id": "a", "name": "get_weather"},
    ]
    messages = prepare_tool_call(history, TOOLS, family="phi4").prompt
    assert messages[0]["role"] == "system" and json.loads(messages[0]["tools"])[1]["name"] == "multiply"
    assert (
        messages[2]["content"]
        == '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]<|/tool_call|>'
    )
    assert messages[3] == {"role": "tool_response", "content": "18 C"}


# -- constraints --------------------------------------------------------------------------------------------------
def test_auto_uses_structural_tags_one_per_tool():
    constraint = prepare_tool_call(USER, TOOLS, family="phi3", constraint_kinds=STRUCTURAL).constraint
    assert constraint.kind == "structural_tags" and constraint.triggers == ("<tool_call>",)
    assert [t.begin for t in constraint.tags] == [
        '<tool_call>{"name": "get_weather", "arguments": ',
        '<tool_call>{"name": "multiply", "arguments": ',
    ]
    assert json.loads(constraint.tags[1].schema) == dict(MULTIPLY.parameters)
    assert constraint.tags[0].end == "}</tool_call>"


def test_required_and_named_force_a_call_by_schema():
    required = json.loads(
        prepare_tool_call(
            USER, TOOLS, "required", constraint_kinds=STRUCTURAL, parallel=False
        ).constraint.value
    )
    assert [a["properties"]["name"]["const"] for a in required["anyOf"]] == ["get_weather", "multiply"]
    named = json.loads(
        prepare_tool_call(
            USER, TOOLS, "multiply", constraint_kinds=STRUCTURAL, parallel=False
        ).constraint.value
    )
    assert named["properties"]["arguments"] == dict(MULTIPLY.parameters)
    phi4 = json.loads(
        prepare_tool_call(
            USER, TOOLS, "required", family="phi4", constraint_kinds=STRUCTURAL
        ).constraint.value
    )
    assert phi4["type"] == "array" and phi4["minItems"] == 1


def test_forced_with_parallel_calls_allows_one_call_or_a_list_of_them():
    one, many = json.loads(
        prepare_tool_call(USER, TOOLS, "required", constraint_kinds=STRUCTURAL).constraint.value
    )["anyOf"]
    assert [a["properties"]["name"]["const"] for a in one["anyOf"]] == ["get_weather", "multiply"]
    assert many == {"type": "array", "items": one, "minItems": 1}
    text = '[{"name": "multiply", "arguments": {"a": 2, "b": 3}}, {"name": "multiply", "arguments": {"a": 4, "b": 5}}]'
    parsed = prepare_tool_call(USER, TOOLS, "required", constraint_kinds=STRUCTURAL).read(text)
    assert [c.arguments for c in parsed.tool_calls] == [{"a": 2, "b": 3}, {"a": 4, "b": 5}]


def test_the_json_tags_prompt_names_no_tool_as_its_example_and_says_nothing_of_results():
    system = prepare_tool_call(USER, TOOLS).prompt[0]["content"]
    assert "For example:" in system and '"name": "get_weather", "arguments": {...}' not in system
    example = system.split("For example:")[1].splitlines()[0]
    assert "get_weather" not in example and "multiply" not in example
    assert "tool_result" not in system


def test_no_constraint_when_backend_cannot_or_when_turned_off():
    assert prepare_tool_call(USER, TOOLS, "required", constraint_kinds=()).constraint is None
    assert prepare_tool_call(USER, TOOLS, constraint_kinds=STRUCTURAL, constrained=False).constraint is None
    assert prepare_tool_call(USER, TOOLS, family="phi4", constraint_kinds=STRUCTURAL).constraint is None


# -- parsing ------------------------------------------------------------------------------------------------------
def _parse(text, choice="auto", family="phi3"):
    return prepare_tool_call(USER, TOOLS, choice, family=family).read(text)


def test_parse_plain_text_and_several_calls():
    assert _parse("Just text.").content == "Just text."
    out = _parse(
        'Sure. <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
        '<tool_call>{"name": "multiply", "arguments": {"a": 2, "b": 3}}</tool_call>'
    )
    assert out.content == "Sure."
    assert [(c.name, c.arguments) for c in out.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("multiply", {"a": 2, "b": 3}),
    ]
    assert len({c.id for c in out.tool_calls}) == 2 and not out.invalid_tool_calls


@pytest.mark.parametrize(
    ("text", "name", "error"),
    [
        (
            '<tool_call>{"name": "get_weather", "arguments": {"city": 3}}</tool_call>',
            "get_weather",
            "at 'city'",
        ),
        (
            '<tool_call>{"name": "get_weather", "arguments": {}}</tool_call>',
            "get_weather",
            "'city' is a required",
        ),
        ('<tool_call>{"name": "search", "arguments": {}}</tool_call>', "search", "no tool named 'search'"),
        (
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Par</tool_call>',
            "get_weather",
            "not valid JSON",
        ),
        ('<tool_call>{"name": "get_weather", "arguments": {"city": "Par', "get_weather", "cut off"),
        ("<tool_call>[\"__import__('os')\"]</tool_call>", None, "JSON object"),
    ],
)
def test_malformed_calls_become_invalid_never_exceptions(text, name, error):
    out = _parse(text)
    assert out.tool_calls == []
    (bad,) = out.invalid_tool_calls
    assert bad.name == name and error in bad.error and bad.raw


def test_a_complete_call_without_its_closing_tag_is_accepted():
    out = _parse('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}')
    assert out.tool_calls[0].arguments == {"city": "Paris"} and not out.invalid_tool_calls


def test_arguments_encoded_as_a_string_are_accepted():
    out = _parse('<tool_call>{"name": "multiply", "arguments": "{\\"a\\": 2, \\"b\\": 5}"}</tool_call>')
    assert out.tool_calls[0].arguments == {"a": 2, "b": 5}


def test_forced_output_is_bare_json_and_missing_call_is_reported():
    assert (
        _parse('{"name": "multiply", "arguments": {"a": 1, "b": 2}}', "required").tool_calls[0].name
        == "multiply"
    )
    cut = _parse('{"name": "multiply", "arguments": {"a": 1,', "required")
    assert cut.content == "" and "incomplete or invalid JSON" in cut.invalid_tool_calls[0].error
    assert cut.invalid_tool_calls[0].name == "multiply"
    out = _parse("I would rather not.", "required")
    assert out.tool_calls == [] and "required" in out.invalid_tool_calls[0].error
    # A JSON answer that is not a call stays text when calls are optional.
    assert _parse('{"answer": 4}').content == '{"answer": 4}'


def test_phi4_parses_tagged_and_bare_lists():
    tagged = _parse(
        '<|tool_call|>[{"name": "multiply", "arguments": {"a": 1, "b": 2}}]<|/tool_call|>', family="phi4"
    )
    bare = _parse(
        '[{"name": "multiply", "arguments": {"a": 1, "b": 2}}, {"name": "get_weather", "arguments": {"city": "Oslo"}}]',
        family="phi4",
    )
    assert [c.name for c in tagged.tool_calls] == ["multiply"]
    assert [c.name for c in bare.tool_calls] == ["multiply", "get_weather"] and bare.content == ""


# -- streaming ----------------------------------------------------------------------------------------------------
def _stream(text, choice="auto", size=3):
    plan = prepare_tool_call(USER, TOOLS, choice)
    events = []
    for i in range(0, len(text), size):
        events += plan.feed(text[i : i + size])
    events += plan.flush()
    return [e.text if isinstance(e, TextDelta) else e for e in events], plan.parsed()


@pytest.mark.parametrize("size", [1, 2, 5, 100])
def test_stream_emits_text_live_and_calls_when_they_close(size):
    text = 'Hi <tool <tool_call>{"name": "multiply", "arguments": {"a": 6, "b": 7}}</tool_call> done'
    events, result = _stream(text, size=size)
    # Text after the calls is dropped: a model that goes on after its calls invents their results (issue 22).
    assert "".join(e for e in events if isinstance(e, str)) == "Hi <tool "
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert [(c.name, c.arguments) for c in calls] == [("multiply", {"a": 6, "b": 7})]
    assert result.content == "Hi <tool" and result.tool_calls == calls


def test_an_echoed_result_block_is_unwrapped_into_the_answer():
    answer = '<tool_result name="multiply">\n42\n</tool_result>'
    assert prepare_tool_call(USER, TOOLS).read(answer).content.strip() == "42"
    for size in (1, 3, 100):
        events, result = _stream(answer, size=size)
        assert "".join(e for e in events if isinstance(e, str)) == result.content == "\n42\n"


def test_stream_bare_forced_call_and_cut_off_call():
    events, result = _stream('{"name": "get_weather", "arguments": {"city": "Oslo"}}', "required")
    assert [e.arguments for e in events] == [{"city": "Oslo"}] and result.content == ""
    events, result = _stream('<tool_call>{"name": "get_weather"')
    assert isinstance(events[-1], InvalidToolCall) and "cut off" in events[-1].error
    events, result = _stream("no call", "required")
    assert result.content == "no call" and "required" in result.invalid_tool_calls[0].error


# -- structured output --------------------------------------------------------------------------------------------
class Person(TypedDict):
    name: str
    age: int


def test_structured_output_schemas_and_parsing():
    from pydantic import BaseModel

    class Pet(BaseModel):
        kind: str

    assert json_schema_of(Person)["required"] == ["name", "age"]
    assert json_schema_of(Pet)["properties"]["kind"]["type"] == "string"
    assert json_schema_of({"type": "function", "function": MULTIPLY.to_dict()}) == dict(MULTIPLY.parameters)
    assert parse_json_output('```json\n{"name": "Ann", "age": 3}\n```', Person) == {"name": "Ann", "age": 3}
    with pytest.raises(OutputParseError, match="does not match"):
        parse_json_output('{"name": "Ann"}', Person)
    with pytest.raises(OutputParseError, match="not JSON"):
        parse_json_output("Ann is 3", Person)
    with pytest.raises(InvalidParameterError, match="Cannot build a JSON schema"):
        json_schema_of(object())


def test_protocols_by_family():
    assert protocol_for("phi3").open_tag == "<tool_call>"
    assert protocol_for("phi4").open_tag == "<|tool_call|>"
    assert protocol_for("mystery").name == "json_tags"


# -- real engine: SmolLM2 through OpenVINO GenAI -------------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("openvino_genai")
    from phi3_aipc import get_engine
    from phi3_aipc.errors import ModelNotFoundError

    try:
        return get_engine("smollm2", "cpu")
    except ModelNotFoundError as exc:
        pytest.skip(f"SmolLM2 is not installed: {exc}")


PARAMS = GenerationParams(max_new_tokens=40)


@pytest.mark.smollm2
def test_forced_call_on_smollm2_is_valid_for_the_schema(smollm2):
    request = ChatTurn([{"role": "user", "content": "Multiply 6 by 7."}], TOOLS, "multiply").plan(smollm2)
    assert request.constraint is not None and request.constraint.kind == "json_schema"
    result = smollm2.generate(request.prompt, PARAMS, constraint=request.constraint)
    parsed = request.read(result.text)
    assert parsed.invalid_tool_calls == [], result.text
    (call,) = parsed.tool_calls
    assert call.name == "multiply" and set(call.arguments) == {"a", "b"}
    assert all(isinstance(v, int) for v in call.arguments.values())


@pytest.mark.smollm2
def test_required_on_smollm2_picks_a_bound_tool_with_valid_arguments(smollm2):
    request = ChatTurn(USER, TOOLS, "required").plan(smollm2)
    parsed = request.read(smollm2.generate(request.prompt, PARAMS, constraint=request.constraint).text)
    assert len(parsed.tool_calls) == 1 and parsed.tool_calls[0].name in {"get_weather", "multiply"}


@pytest.mark.smollm2
def test_structural_tags_keep_an_opened_call_valid_on_smollm2(smollm2):
    """A raw prompt whose pattern makes the model open a call with an argument the schema forbids ('town')."""
    tool = ToolSpec(
        "get_weather",
        "Weather for a city.",
        {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    )
    prompt = "Calls:\n" + "".join(
        f'<tool_call>{{"name": "get_weather", "arguments": {{"town": "{town}"}}}}</tool_call>\n'
        for town in ("Rome", "Oslo", "Lima")
    )
    request = prepare_tool_call(USER, [tool], family="other", constraint_kinds=smollm2.constraint_kinds)
    assert request.constraint.kind == "structural_tags"
    free = request.read(smollm2.generate(prompt, PARAMS).text)
    assert free.invalid_tool_calls and not free.tool_calls  # unconstrained, the model copies the bad argument
    text = smollm2.generate(prompt, PARAMS, constraint=request.constraint).text
    parsed = request.read(text)
    assert parsed.tool_calls and set(parsed.tool_calls[0].arguments) == {"city", "days"}, text
    assert all("cut off" in bad.error for bad in parsed.invalid_tool_calls), text


@pytest.mark.smollm2
def test_structured_output_on_smollm2(smollm2):
    messages = [{"role": "user", "content": "Make up a person with a name and an age, as JSON."}]
    result = ChatTurn(messages, response_format=JsonFormat(json_schema_of(Person)), params=PARAMS).run(
        smollm2
    )
    assert result.constrained and result.structured_error is None, result.generation.text
    assert isinstance(result.structured["name"], str) and isinstance(result.structured["age"], int)


# Phi-4-mini's own chat template (tokenizer_config.json of microsoft/Phi-4-mini-instruct).
PHI4_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' and 'tools' in message and "
    "message['tools'] is not none %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + "
    "message['tools'] + '<|/tool|>' + '<|end|>' }}{% else %}{{ '<|' + message['role'] + '|>' + "
    "message['content'] + '<|end|>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)


@pytest.mark.smollm2
def test_phi4_messages_render_natively_through_openvino_chat_templating():
    """No Phi-4 model is available offline: its template runs on an OpenVINO tokenizer (SmolLM2's vocabulary)."""
    ov_genai = pytest.importorskip("openvino_genai")
    from phi3_aipc import models
    from phi3_aipc.errors import ModelNotFoundError

    try:
        tokenizer = ov_genai.Tokenizer(str(models.smollm2_gguf()))
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))
    tokenizer.set_chat_template(PHI4_TEMPLATE)
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "1", "name": "get_weather", "arguments": {"city": "Paris"}}],
        },
        {"role": "tool", "content": "18 C", "tool_call_id": "1", "name": "get_weather"},
    ]
    messages = prepare_tool_call(history, [WEATHER], family="phi4").prompt
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt == (
        "<|system|>You are a helpful assistant with some tools.<|tool|>"
        + json.dumps([WEATHER.to_dict()])
        + "<|/tool|><|end|><|user|>Weather in Paris?<|end|><|assistant|>"
        '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]<|/tool_call|><|end|>'
        "<|tool_response|>18 C<|end|><|assistant|>"
    )


@pytest.mark.smollm2
def test_a_schema_the_grammar_cannot_build_is_a_clear_error_and_unconstrained_still_runs(smollm2):
    contradictory = ToolSpec(
        "get_weather",
        "Weather.",
        {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "maxProperties": 0,
        },
    )
    turn = ChatTurn(USER, [contradictory], "get_weather", params=PARAMS)
    with pytest.raises(
        InvalidParameterError, match="cannot build a decoding grammar.*constrained_decoding=False"
    ):
        turn.run(smollm2)
    loose = ChatTurn(USER, [contradictory], "get_weather", params=PARAMS, constrained=False).run(smollm2)
    assert loose.tool_calls == [] and not loose.constrained  # no call can ever satisfy it: never a valid call
    assert smollm2.generate(USER, GenerationParams(max_new_tokens=2)).completion_tokens == 2
