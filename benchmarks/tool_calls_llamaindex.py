"""Tool-call success rate of a LlamaIndex FunctionAgent on Phi3AIPC over 20 varied prompts.

Six working tools are bound to a FunctionAgent; each prompt runs the full agent loop (call, tool, answer).
A prompt's call succeeds when the agent's first tool call names the expected tool with the expected arguments
(strings compared case-insensitively, numbers exactly; the engine has already validated them against the tool's
schema). Its answer succeeds when the final answer contains the key fact of the tool's output. Two modes run on
one loaded model: "forced" (initial_tool_choice="required": the first step must call a tool, the model picks
which and fills in the arguments) and "auto" (the model decides whether to call at all).

Run: python benchmarks/tool_calls_llamaindex.py [--model smollm2] [--device cpu] [--max-tokens 96] [--modes forced auto]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
from llama_index.core.tools import FunctionTool

from llama_index_phi3_aipc import Phi3AIPC

RATES = {"USD": 1.1, "GBP": 0.85, "JPY": 160.0}


def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"{city}: light rain, 17 degrees C"


def convert_currency(amount: float, currency: str) -> str:
    """Convert an amount of euros into another currency, given as a 3-letter code such as USD."""
    rate = RATES.get(currency.upper())
    return (
        f"{amount:g} EUR = {amount * rate:g} {currency.upper()}" if rate else f"Unknown currency {currency}"
    )


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def search_wikipedia(query: str) -> str:
    """Search Wikipedia for a topic."""
    return f"The Wikipedia article '{query}' has 42 sections."


def set_timer(minutes: int) -> str:
    """Set a timer for a number of minutes."""
    return f"Timer set for {minutes} minutes; it rings at 14:35."


def send_email(to: str, subject: str) -> str:
    """Send an email to an address with a subject line."""
    return f"Email to {to} sent with id MSG-8812."


TOOLS = [
    FunctionTool.from_defaults(f)
    for f in (get_weather, convert_currency, multiply, search_wikipedia, set_timer, send_email)
]

# (prompt, expected tool, expected arguments, key fact the answer must contain)
CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("What is the weather in Paris?", "get_weather", {"city": "Paris"}, "17"),
    ("Is it raining in Tokyo right now?", "get_weather", {"city": "Tokyo"}, "rain"),
    ("I'm flying to Cairo tomorrow. How hot is it there?", "get_weather", {"city": "Cairo"}, "17"),
    ("Weather report for Oslo, please.", "get_weather", {"city": "Oslo"}, "17"),
    ("How much is 50 euros in USD?", "convert_currency", {"amount": 50, "currency": "USD"}, "55"),
    ("Convert 120 EUR to GBP.", "convert_currency", {"amount": 120, "currency": "GBP"}, "102"),
    ("I have 8 euros. What is that in JPY?", "convert_currency", {"amount": 8, "currency": "JPY"}, "1280"),
    ("What is 12 times 7?", "multiply", {"a": 12, "b": 7}, "84"),
    ("Multiply 345 by 2.", "multiply", {"a": 345, "b": 2}, "690"),
    ("Compute the product of 9 and 11.", "multiply", {"a": 9, "b": 11}, "99"),
    ("Look up the Eiffel Tower on Wikipedia.", "search_wikipedia", {"query": "Eiffel Tower"}, "42"),
    (
        "Find the Wikipedia article about photosynthesis.",
        "search_wikipedia",
        {"query": "photosynthesis"},
        "42",
    ),
    ("Who was Ada Lovelace? Search Wikipedia.", "search_wikipedia", {"query": "Ada Lovelace"}, "42"),
    ("Set a timer for 10 minutes.", "set_timer", {"minutes": 10}, "14:35"),
    ("Remind me in 25 minutes with a timer.", "set_timer", {"minutes": 25}, "14:35"),
    ("Start a 3 minute timer for my tea.", "set_timer", {"minutes": 3}, "14:35"),
    (
        "Email bob@example.com with the subject 'Lunch'.",
        "send_email",
        {"to": "bob@example.com", "subject": "Lunch"},
        "8812",
    ),
    (
        "Send an email to ana@example.org, subject: Report ready.",
        "send_email",
        {"to": "ana@example.org", "subject": "Report ready"},
        "8812",
    ),
    ("What's the weather like in Buenos Aires?", "get_weather", {"city": "Buenos Aires"}, "17"),
    ("Please multiply 6 and 8 for me.", "multiply", {"a": 6, "b": 8}, "48"),
]


def matches(name: str, kwargs: dict[str, Any], want_name: str, want: dict[str, Any]) -> bool:
    if name != want_name:
        return False
    for key, value in want.items():
        got = kwargs.get(key)
        if isinstance(value, str):
            if not isinstance(got, str) or got.strip().strip(".'\"").lower() != value.lower():
                return False
        elif got != value:
            return False
    return True


async def run_case(llm: Phi3AIPC, prompt: str, forced: bool) -> tuple[list[tuple[str, dict]], str]:
    agent = FunctionAgent(
        tools=TOOLS,
        llm=llm,
        system_prompt="You are a helpful assistant. Use the tools, then answer using their results.",
        initial_tool_choice="required" if forced else None,
    )
    handler = agent.run(user_msg=prompt, max_iterations=4)
    calls: list[tuple[str, dict]] = []
    async for event in handler.stream_events():
        if isinstance(event, ToolCallResult):
            calls.append((event.tool_name, dict(event.tool_kwargs)))
    try:
        answer = str((await handler).response.content or "")
    except Exception as exc:  # noqa: BLE001 - a run that loops past max_iterations counts as a failed answer
        answer = f"<error: {type(exc).__name__}>"
    return calls, answer


def run_mode(llm: Phi3AIPC, forced: bool, verbose: bool) -> dict[str, float]:
    called = right = answered = 0
    started = time.perf_counter()
    for prompt, name, expected, fact in CASES:
        calls, answer = asyncio.run(run_case(llm, prompt, forced))
        ok = bool(calls) and matches(*calls[0], name, expected)
        called += bool(calls)
        right += ok
        answered += ok and fact.lower() in answer.lower()
        if verbose:
            print(f"  {'OK ' if ok else 'BAD'} {prompt!r}: {calls[:2]} -> {answer[:80]!r}")
    n = len(CASES)
    return {
        "called": called / n,
        "success": right / n,
        "answer": answered / n,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--modes", nargs="+", default=["forced", "auto"], choices=["forced", "auto"])
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    llm = Phi3AIPC(model=args.model, device=args.device, max_new_tokens=args.max_tokens)
    rows = []
    for mode in args.modes:
        if args.verbose:
            print(mode)
        rows.append((mode, run_mode(llm, mode == "forced", args.verbose)))
    print(f"model={args.model} device={args.device} prompts={len(CASES)} max_new_tokens={args.max_tokens}")
    print(f"{'mode':<8}{'any call':>10}{'tool-call success':>19}{'answer uses result':>20}{'seconds':>9}")
    for mode, r in rows:
        print(f"{mode:<8}{r['called']:>10.0%}{r['success']:>19.0%}{r['answer']:>20.0%}{r['seconds']:>9.1f}")


if __name__ == "__main__":
    main()
