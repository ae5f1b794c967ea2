"""The agent scenario: what KV reuse across turns saves, per backend, in one run.

An agent resends the whole conversation at every step. The scenario builds a ~1,000-token prefix (a system prompt,
tool definitions and retrieved chunks, sized with the engine's own tokenizer), then asks 6 short questions in turn,
each answer going back into the history. Every turn runs on two engines of the same target: one loaded as usual
(reuse on) and one loaded with ``prefix_reuse=False`` (reuse off), with the same messages, one after the other.

TTFT is the backend's own (from the start of generation, tokenization included). Each engine first answers one
unrelated short prompt, so a first-request compile is not counted. Greedy, at most ``max_new_tokens`` new tokens.
The ratio on/off from turn 2 on is what reuse saves (turn 1 has nothing to reuse). ``reused`` is the backend's own
count of prompt tokens it did not prefill again, where it reports one (ONNX Runtime GenAI); OpenVINO GenAI reuses
without saying how much.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from phi3_aipc.bench.targets import Target
from phi3_aipc.chat import ChatTurn
from phi3_aipc.engine import Engine, get_engine, release_engine
from phi3_aipc.params import GenerationParams

QUESTIONS = (
    "Which of these tools would you use to check the weather in Paris?",
    "What does the first retrieved document say about opening hours?",
    "Summarise the refund policy in one sentence.",
    "Which tool books a table, and what does it need?",
    "Is the museum open on Mondays?",
    "Thank you. Anything else I should know?",
)
TOOLS = [
    {
        "name": name,
        "description": description,
        "parameters": {
            "type": "object",
            "properties": {k: {"type": "string"} for k in args},
            "required": args,
        },
    }
    for name, description, args in (
        ("get_weather", "Current weather and a 3-day forecast for a city.", ["city"]),
        ("book_table", "Book a restaurant table for a number of people at a time.", ["restaurant", "time"]),
        ("search_documents", "Search the company's documents and return the best passages.", ["query"]),
        ("convert_currency", "Convert an amount from one currency to another.", ["amount", "from", "to"]),
    )
]
CHUNK = (
    "Document {i}. The city museum opens at {h} am from Tuesday to Sunday and closes on Mondays. Tickets bought "
    "online can be refunded up to 24 hours before the visit; after that, vouchers are offered instead. Guided "
    "tours in English start at {g} pm and last ninety minutes."
)


@dataclass(frozen=True)
class AgentSettings:
    prefix_tokens: int = 1000
    turns: int = len(QUESTIONS)
    max_new_tokens: int = 16


def agent_prefix(engine: Engine, tokens: int) -> list[dict[str, Any]]:
    """System prompt + tool definitions + as many retrieved chunks as make the first prompt ~``tokens`` long."""
    head = (
        "You are a helpful assistant for visitors. Use the tools when they help and answer from the documents.\n"
        f"Tools:\n{json.dumps(TOOLS)}\nRetrieved documents:\n"
    )
    chunks: list[str] = []
    while True:
        system = {"role": "system", "content": head + "\n".join(chunks)}
        first = [system, {"role": "user", "content": QUESTIONS[0]}]
        if engine.count_tokens(engine.format_chat(first)) >= tokens or len(chunks) > 200:
            return [system]
        i = len(chunks)
        chunks.append(CHUNK.format(i=i, h=8 + i % 3, g=1 + i % 5))


def run_agent_scenario(
    targets: list[Target], settings: AgentSettings, log: Callable[[str], None] = lambda _: None
) -> list[dict[str, Any]]:
    """One entry per target: its per-turn TTFTs with reuse on and off, or the error that stopped it."""
    results = []
    for target in targets:
        log(f"agent scenario: {target.name} ({target.model})")
        try:
            results.append(
                {"name": target.name, "model": target.model, "turns": _run_target(target, settings)}
            )
        except Exception as exc:  # noqa: BLE001 - one target's failure is reported in its row, the rest go on
            results.append(
                {"name": target.name, "model": target.model, "error": f"{type(exc).__name__}: {exc}"}
            )
    return results


def _run_target(target: Target, settings: AgentSettings) -> list[dict[str, Any]]:
    # Asked for by name: on ONNX Runtime GenAI reuse is off unless asked for (it is not exact there).
    on = get_engine(target.model, target.device, target.backend, {"prefix_reuse": True, **target.options})
    off = get_engine(target.model, target.device, target.backend, {**target.options, "prefix_reuse": False})
    try:
        params = GenerationParams(max_new_tokens=settings.max_new_tokens)
        for engine in (on, off):  # a first request compiles: keep it out of the figures
            engine.generate([{"role": "user", "content": "Hello!"}], GenerationParams(max_new_tokens=2))
        messages = agent_prefix(on, settings.prefix_tokens)
        rows = []
        for turn, question in enumerate(QUESTIONS[: settings.turns], start=1):
            messages.append({"role": "user", "content": question})
            without = ChatTurn(messages, params=params).run(off).generation
            with_reuse = ChatTurn(messages, params=params).run(on)
            rows.append(
                {
                    "turn": turn,
                    "prompt_tokens": with_reuse.generation.prompt_tokens,
                    "ttft_off_ms": without.timings.ttft_ms,
                    "ttft_on_ms": with_reuse.generation.timings.ttft_ms,
                    "reused_tokens": with_reuse.generation.cached_prompt_tokens,
                    "same_answer": with_reuse.generation.text == without.text,
                }
            )
            messages.append({"role": "assistant", "content": with_reuse.content})
        return rows
    finally:
        release_engine(on)
        release_engine(off)


def format_agent_table(results: list[dict[str, Any]]) -> str:
    """Markdown: one row per target and turn, then one summary row per target (turns 2 on)."""
    lines = [
        "| target | turn | prompt tokens | TTFT reuse off ms | TTFT reuse on ms | on/off | reused tokens | same answer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in results:
        if "error" in entry:
            lines.append(f"| {entry['name']} | failed: {entry['error'].splitlines()[0][:120]} |||||||")
            continue
        for row in entry["turns"]:
            reused = "n/a" if row["reused_tokens"] is None else row["reused_tokens"]
            lines.append(
                f"| {entry['name']} | {row['turn']} | {row['prompt_tokens']} | {_ms(row['ttft_off_ms'])} | "
                f"{_ms(row['ttft_on_ms'])} | {_ratio(row)} | {reused} | {'yes' if row['same_answer'] else 'no'} |"
            )
        lines.append(
            f"| {entry['name']} | **2–{len(entry['turns'])}** | | | | **{median_ratio(entry)}** | | |"
        )
    return "\n".join(lines)


def median_ratio(entry: dict[str, Any]) -> str:
    """The median of on/off over turns 2 on, as a percentage."""
    ratios = [
        r["ttft_on_ms"] / r["ttft_off_ms"] for r in entry["turns"][1:] if r["ttft_on_ms"] and r["ttft_off_ms"]
    ]
    return f"{statistics.median(ratios):.0%}" if ratios else "n/a"


def _ratio(row: dict[str, Any]) -> str:
    if not row["ttft_on_ms"] or not row["ttft_off_ms"]:
        return "n/a"
    return f"{row['ttft_on_ms'] / row['ttft_off_ms']:.0%}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"
