"""Tool-call success rate of ChatPhi3AIPC on 20 varied agent prompts, constrained decoding on and off.

A prompt succeeds when the model's first message calls the expected tool with the expected arguments (strings
compared case-insensitively, numbers exactly), and the call validates against the tool's schema. Both
tool_choice="auto" (the model decides) and tool_choice="any" (a call is required) are measured, each with
constrained decoding on and off, in one run on one loaded model.

Run: python benchmarks/tool_calls_langchain.py [--model smollm2] [--device cpu] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from langchain_core.tools import tool

from langchain_phi3_aipc import ChatPhi3AIPC


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return ""


@tool
def convert_currency(amount: float, currency: str) -> str:
    """Convert an amount of euros into another currency, given as a 3-letter code such as USD."""
    return ""


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return 0


@tool
def search_wikipedia(query: str) -> str:
    """Search Wikipedia for a topic."""
    return ""


@tool
def set_timer(minutes: int) -> str:
    """Set a timer for a number of minutes."""
    return ""


@tool
def send_email(to: str, subject: str) -> str:
    """Send an email to an address with a subject line."""
    return ""


TOOLS = [get_weather, convert_currency, multiply, search_wikipedia, set_timer, send_email]

# (prompt, expected tool, expected arguments)
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("What is the weather in Paris?", "get_weather", {"city": "Paris"}),
    ("Is it raining in Tokyo right now?", "get_weather", {"city": "Tokyo"}),
    ("I'm flying to Cairo tomorrow. How hot is it there?", "get_weather", {"city": "Cairo"}),
    ("Weather report for Oslo, please.", "get_weather", {"city": "Oslo"}),
    ("How much is 50 euros in USD?", "convert_currency", {"amount": 50, "currency": "USD"}),
    ("Convert 120 EUR to GBP.", "convert_currency", {"amount": 120, "currency": "GBP"}),
    ("I have 8 euros. What is that in JPY?", "convert_currency", {"amount": 8, "currency": "JPY"}),
    ("What is 12 times 7?", "multiply", {"a": 12, "b": 7}),
    ("Multiply 345 by 2.", "multiply", {"a": 345, "b": 2}),
    ("Compute the product of 9 and 11.", "multiply", {"a": 9, "b": 11}),
    ("Look up the Eiffel Tower on Wikipedia.", "search_wikipedia", {"query": "Eiffel Tower"}),
    ("Find the Wikipedia article about photosynthesis.", "search_wikipedia", {"query": "photosynthesis"}),
    ("Who was Ada Lovelace? Search Wikipedia.", "search_wikipedia", {"query": "Ada Lovelace"}),
    ("Set a timer for 10 minutes.", "set_timer", {"minutes": 10}),
    ("Remind me in 25 minutes with a timer.", "set_timer", {"minutes": 25}),
    ("Start a 3 minute timer for my tea.", "set_timer", {"minutes": 3}),
    (
        "Email bob@example.com with the subject 'Lunch'.",
        "send_email",
        {"to": "bob@example.com", "subject": "Lunch"},
    ),
    (
        "Send an email to ana@example.org, subject: Report ready.",
        "send_email",
        {"to": "ana@example.org", "subject": "Report ready"},
    ),
    ("What's the weather like in Buenos Aires?", "get_weather", {"city": "Buenos Aires"}),
    ("Please multiply 6 and 8 for me.", "multiply", {"a": 6, "b": 8}),
]


def matches(call: dict[str, Any], name: str, expected: dict[str, Any]) -> bool:
    if call["name"] != name:
        return False
    for key, want in expected.items():
        got = call["args"].get(key)
        if isinstance(want, str):
            if not isinstance(got, str) or got.strip().strip(".").lower() != want.lower():
                return False
        elif got != want:
            return False
    return True


def run(llm: ChatPhi3AIPC, tool_choice: str) -> dict[str, float]:
    bound = llm.bind_tools(TOOLS, tool_choice=tool_choice)
    success = valid = invalid = 0
    started = time.perf_counter()
    for prompt, name, expected in CASES:
        message = bound.invoke(prompt)
        valid += bool(message.tool_calls)
        invalid += bool(message.invalid_tool_calls)
        success += bool(message.tool_calls) and matches(message.tool_calls[0], name, expected)
    n = len(CASES)
    return {
        "success": success / n,
        "valid_call": valid / n,
        "invalid_call": invalid / n,
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    rows = []
    for tool_choice in ("auto", "any"):
        for constrained in (True, False):
            llm = ChatPhi3AIPC(
                model=args.model,
                device=args.device,
                max_tokens=args.max_tokens,
                constrained_decoding=constrained,
            )
            rows.append((tool_choice, constrained, run(llm, tool_choice)))
    print(f"model={args.model} device={args.device} prompts={len(CASES)} max_tokens={args.max_tokens}")
    print(
        f"{'tool_choice':<12}{'constrained':<13}{'success':>9}{'valid call':>12}{'invalid call':>14}{'seconds':>9}"
    )
    for tool_choice, constrained, r in rows:
        print(
            f"{tool_choice:<12}{'on' if constrained else 'off':<13}{r['success']:>9.0%}{r['valid_call']:>12.0%}"
            f"{r['invalid_call']:>14.0%}{r['seconds']:>9.1f}"
        )


if __name__ == "__main__":
    main()
