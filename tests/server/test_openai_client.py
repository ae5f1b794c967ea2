"""The official `openai` client against `phi3-aipc serve` (SmolLM2 on the CPU) over real HTTP on loopback.

Where a check needs a property on any CPU (a valid call, valid JSON), it comes from the constraint, not from the
model's taste; where it compares two runs, both run here, on the same engine.
"""

from __future__ import annotations

import json

import pytest
from server_helpers import Served

pytestmark = pytest.mark.smollm2

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
    "additionalProperties": False,
}


def test_models_and_health(served: Served) -> None:
    import httpx

    assert [m.id for m in served.openai().models.list()] == ["smollm2"]
    assert httpx.get(f"{served.root}/health").json() == {"status": "ok", "model": "smollm2"}


def test_chat_whole_and_streamed_agree(served: Served) -> None:
    client = served.openai()
    whole = client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=24)
    choice = whole.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length") and choice.message.tool_calls is None
    assert whole.usage.prompt_tokens > 0 and whole.usage.completion_tokens > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    chunks = list(
        client.chat.completions.create(
            model="smollm2",
            messages=QUESTION,
            max_tokens=24,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    assert len({c.id for c in chunks}) == 1
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [choice.finish_reason]
    # include_usage: one last chunk with no choices, carrying the same usage as the whole answer.
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_streamed_without_include_usage_has_no_usage(served: Served) -> None:
    chunks = list(
        served.openai().chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=8, stream=True)
    )
    assert all(c.usage is None for c in chunks) and chunks[-1].choices[0].finish_reason is not None


def test_exact_stop_and_stop_reason(served: Served) -> None:
    client = served.openai()
    free = (
        client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=24)
        .choices[0]
        .message.content
    )
    assert len(free) >= 8, free
    stop = free[len(free) // 2 : len(free) // 2 + 3]
    cut = client.chat.completions.create(
        model="smollm2", messages=QUESTION, max_tokens=24, stop=[stop]
    ).choices[0]
    assert cut.message.content == free[: free.index(stop)]
    assert cut.finish_reason == "stop" and cut.model_extra["stop_reason"] == stop


def test_forced_tool_call_whole_and_streamed(served: Served) -> None:
    client = served.openai()
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    kwargs = {"model": "smollm2", "messages": ask, "max_tokens": 40, "tools": [WEATHER]}
    forced = {"type": "function", "function": {"name": "get_weather"}}
    whole = client.chat.completions.create(**kwargs, tool_choice=forced).choices[0]
    assert whole.finish_reason == "tool_calls"
    (call,) = whole.message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    assert isinstance(json.loads(call.function.arguments)["city"], str)

    chunks = list(client.chat.completions.create(**kwargs, tool_choice="required", stream=True))
    deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or ()]
    assert [(d.index, d.function.name) for d in deltas] == [(0, "get_weather")]
    assert json.loads(deltas[0].function.arguments) == json.loads(call.function.arguments)
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_invalid_call_is_reported_apart_never_as_a_tool_call(served: Served) -> None:
    # The grammar writes {"city": ...}; the schema's "not" refuses exactly that, so the call is invalid on any CPU.
    unsatisfiable = json.loads(json.dumps(WEATHER))
    unsatisfiable["function"]["parameters"]["not"] = {"required": ["city"]}
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    choice = (
        served.openai()
        .chat.completions.create(
            model="smollm2", messages=ask, max_tokens=40, tools=[unsatisfiable], tool_choice="required"
        )
        .choices[0]
    )
    assert choice.message.tool_calls is None and choice.finish_reason == "stop"
    (invalid,) = choice.message.model_extra["invalid_tool_calls"]
    assert invalid["name"] == "get_weather" and invalid["error"] and invalid["raw"]


def test_structured_output_json_schema(served: Served) -> None:
    ask = [{"role": "user", "content": "Name a city in Japan and its country."}]
    response = served.openai().chat.completions.create(
        model="smollm2",
        messages=ask,
        max_tokens=48,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": CITY, "strict": True},
        },
    )
    value = json.loads(response.choices[0].message.content)
    assert set(value) == {"city", "country"} and all(isinstance(v, str) for v in value.values())


def test_tool_result_history_is_rendered(served: Served) -> None:
    history = [
        {"role": "user", "content": "What is the weather in Lisbon?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Lisbon"}'},
                }
            ],
        },
        {"role": "tool", "content": "17 C and foggy.", "tool_call_id": "call_1"},
    ]
    client = served.openai()
    with_result = client.chat.completions.create(
        model="smollm2", messages=history, max_tokens=8, tools=[WEATHER]
    )
    without = client.chat.completions.create(
        model="smollm2", messages=history[:1], max_tokens=8, tools=[WEATHER]
    )
    # The call and its result are in the prompt: it is longer by at least their text.
    assert with_result.usage.prompt_tokens > without.usage.prompt_tokens + 10


def test_legacy_completions_whole_and_streamed(served: Served) -> None:
    client = served.openai()
    prompt = "The capital of France is"
    whole = client.completions.create(model="smollm2", prompt=prompt, max_tokens=8, temperature=0)
    assert whole.choices[0].text and whole.usage.completion_tokens <= 8
    chunks = list(
        client.completions.create(
            model="smollm2", prompt=prompt, max_tokens=8, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_seeded_sampling_repeats(served: Served) -> None:
    client = served.openai()
    kwargs = {"model": "smollm2", "messages": QUESTION, "max_tokens": 16, "temperature": 1.0, "top_p": 0.9}
    first = client.chat.completions.create(**kwargs, seed=7).choices[0].message.content
    assert client.chat.completions.create(**kwargs, seed=7).choices[0].message.content == first
