"""Real agents on a tool-trained model (Qwen2.5-Coder-0.5B-Instruct, its own Hermes format): the model decides to
call a tool (nothing forced), the tool runs, and the agent ends with an answer from its result, free of any
tool-call or tool-result markup. Each turn takes a few seconds on a CPU; keep these few."""

from __future__ import annotations

import importlib.util
import re

import pytest

pytestmark = [pytest.mark.slow]

QUESTION = "What is the weather in Paris right now?"
RESULT = "17 degrees Celsius and sunny"
MARKUP = re.compile(r"</?tool_(call|result|response)|<\|im_")


def _weather_calls() -> tuple[list[str], object]:
    cities: list[str] = []

    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        cities.append(city)
        return RESULT

    return cities, get_weather


def _check_answer(answer: str, cities: list[str]) -> None:
    assert cities and all("paris" in c.lower() for c in cities), cities
    assert len(cities) == 1, f"the agent called the tool {len(cities)} times: {cities}"
    assert answer.strip() and not MARKUP.search(answer), answer
    assert "17" in answer, answer


@pytest.mark.skipif(importlib.util.find_spec("langgraph") is None, reason="needs langgraph")
def test_a_langgraph_agent_calls_a_tool_unforced_and_answers_from_its_result(qwen_coder: str) -> None:
    from langchain_core.tools import StructuredTool
    from langgraph.prebuilt import create_react_agent

    from langchain_phi3_aipc import ChatPhi3AIPC

    cities, get_weather = _weather_calls()
    tool = StructuredTool.from_function(get_weather)
    agent = create_react_agent(ChatPhi3AIPC(model=qwen_coder, device="cpu", max_tokens=96), [tool])
    state = agent.invoke({"messages": [("user", QUESTION)]}, {"recursion_limit": 8})
    final = state["messages"][-1]
    assert final.type == "ai" and not final.tool_calls
    _check_answer(final.content, cities)


async def test_a_llamaindex_function_agent_calls_a_tool_unforced_and_answers_from_its_result(
    qwen_coder: str,
) -> None:
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.tools import FunctionTool

    from llama_index_phi3_aipc import Phi3AIPC

    cities, get_weather = _weather_calls()
    agent = FunctionAgent(
        tools=[FunctionTool.from_defaults(get_weather)],
        llm=Phi3AIPC(model=qwen_coder, device="cpu", max_new_tokens=96),
    )
    response = await agent.run(user_msg=QUESTION, max_iterations=6)
    _check_answer(str(response), cities)


def test_forced_with_parallel_calls_gives_one_call_per_city(qwen_coder: str) -> None:
    from langchain_core.tools import StructuredTool

    from langchain_phi3_aipc import ChatPhi3AIPC

    _, get_weather = _weather_calls()
    llm = ChatPhi3AIPC(model=qwen_coder, device="cpu", max_tokens=96)
    message = llm.bind_tools([StructuredTool.from_function(get_weather)], tool_choice="any").invoke(
        "What is the weather in Paris and in Rome?"
    )
    assert sorted(c["args"]["city"] for c in message.tool_calls) == ["Paris", "Rome"]
    assert message.content == "" and not message.invalid_tool_calls


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("fastapi", "uvicorn", "openai")),
    reason="needs the server stack and the openai client",
)
def test_the_server_door_runs_the_same_loop_to_an_answer(qwen_coder: str) -> None:
    import json

    import openai

    from phi3_aipc.engine import get_engine
    from phi3_aipc.server import BackgroundServer, ServerConfig, create_app

    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the current weather in a city.",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    app = create_app(get_engine(qwen_coder, "cpu"), ServerConfig(model_id="qwen"))
    with BackgroundServer(app) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        messages: list[dict] = [{"role": "user", "content": QUESTION}]
        first = client.chat.completions.create(model="qwen", messages=messages, tools=tools, max_tokens=96)
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls" and not choice.message.content
        (call,) = choice.message.tool_calls
        assert (
            call.function.name == "get_weather"
            and "paris" in json.loads(call.function.arguments)["city"].lower()
        )
        messages += [
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": RESULT},
        ]
        final = client.chat.completions.create(model="qwen", messages=messages, tools=tools, max_tokens=96)
    answer = final.choices[0].message
    assert not answer.tool_calls and answer.content and not MARKUP.search(answer.content), answer
    assert "17" in answer.content
