"""What the LangChain and LlamaIndex wrappers cost over the raw engine: tokens/s ratio and first-chunk delay.

    python benchmarks/wrapper_overhead.py --model smollm2 --device cpu --through langchain llamaindex \
        [--backend openvino] [-o KEY=VALUE ...] [--runs 3] [--input-tokens 32] [--max-new-tokens 128] [--json OUT]

Method (the engine-only figures come from `phi3-aipc bench`; this script measures what the wrappers add):

- One process and one shared engine: the wrappers ask ``get_engine`` for the same model, device, backend and
  options as the raw runs, so they drive the very engine the raw runs use.
- For each wrapper, raw-engine runs (``engine.stream`` on chat messages) alternate with wrapper runs
  (``ChatPhi3AIPC.stream``, LlamaIndex ``Phi3AIPC.stream_chat``) after one discarded warm-up pair. Every run has a
  prompt of its own, exactly ``--input-tokens`` tokens after the chat template, so prefix caching cannot help.
- Both sides decode greedily with the same ``max_new_tokens`` and stop at EOS, as users' calls do: the wrappers
  offer no public way to force a length, and nothing shared is patched. So every rate is per run, from its own
  tokens (the engine result for raw runs; the wrapper's usage metadata, LangChain ``usage_metadata`` and LlamaIndex
  ``additional_kwargs``, for wrapper runs) and its own ``perf_counter`` times.
- Reported per wrapper: the extra delay to the first non-empty chunk (wrapper minus raw, goal <= 5 ms) and the
  streaming tokens/s ratio after it (wrapper / raw, goal >= 0.98; tokens after the first over the time after the
  first chunk, which does not depend on the answers' lengths), plus the end-to-end ratio. The goals are reported,
  not asserted.

The frameworks are imported only when a wrapper is measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from phi3_aipc import DEFAULT_MODEL, GenerationParams, get_engine
from phi3_aipc.bench import Target, effective_input_tokens, exact_chat, machine_info, summary
from phi3_aipc.bench.measure import StreamTiming, time_stream, timed_engine_run
from phi3_aipc.bench.report import pm
from phi3_aipc.cli.common import add_model_arguments, parse_options
from phi3_aipc.errors import InvalidParameterError, Phi3AIPCError

WRAPPERS = ("langchain", "llamaindex")
# A timed run: chat messages in, (timing, completion tokens) out.
Runner = Callable[[list[dict[str, str]]], tuple[StreamTiming, int]]


def raw_runner(engine: Any, params: GenerationParams) -> Runner:
    """The engine alone, on the same messages and parameters the wrappers get."""

    def run(messages: list[dict[str, str]]) -> tuple[StreamTiming, int]:
        timing, result = timed_engine_run(engine, messages, params)
        return timing, result.completion_tokens

    return run


def wrapper_runner(kind: str, target: Target, max_new_tokens: int) -> Runner:
    """Stream chat messages through the ``kind`` wrapper and time it, reading its token count from its metadata."""
    model = {
        "model": target.model,
        "device": target.device,
        "backend": target.backend,
        "options": target.options,
    }
    if kind == "langchain":
        from langchain_phi3_aipc import ChatPhi3AIPC

        chat_model = ChatPhi3AIPC(**model, max_tokens=max_new_tokens)

        def start(messages: list[dict[str, str]]) -> Iterator[Any]:
            return chat_model.stream([(m["role"], m["content"]) for m in messages])

        def text_of(chunk: Any) -> str:
            return chunk.content

        def tokens_of(chunk: Any) -> int | None:
            return (chunk.usage_metadata or {}).get("output_tokens")
    elif kind == "llamaindex":
        from llama_index.core.llms import ChatMessage

        from llama_index_phi3_aipc import Phi3AIPC

        llm = Phi3AIPC(**model, max_new_tokens=max_new_tokens)

        def start(messages: list[dict[str, str]]) -> Iterator[Any]:
            return llm.stream_chat([ChatMessage(role=m["role"], content=m["content"]) for m in messages])

        def text_of(chunk: Any) -> str:
            return chunk.delta or ""

        def tokens_of(chunk: Any) -> int | None:
            return chunk.additional_kwargs.get("completion_tokens")
    else:
        raise InvalidParameterError(f"--through takes {' or '.join(WRAPPERS)}, got {kind!r}.")

    def run(messages: list[dict[str, str]]) -> tuple[StreamTiming, int]:
        counts: list[int] = []

        def counted() -> Iterator[Any]:
            for chunk in start(messages):
                if (tokens := tokens_of(chunk)) is not None:
                    counts.append(tokens)
                yield chunk

        timing = time_stream(counted, text_of)
        if not counts:
            raise Phi3AIPCError(f"The {kind} wrapper's stream reported no token count in its metadata.")
        return timing, counts[-1]

    return run


def compare(raw: Runner, wrapped: Runner, engine: Any, tokens: int, runs: int, seed: int) -> dict[str, Any]:
    """Raw and wrapper runs alternate, one discarded warm-up pair first; each run gets a prompt of its own."""
    raw_runs: list[tuple[StreamTiming, int]] = []
    wrapped_runs: list[tuple[StreamTiming, int]] = []
    for run in range(1 + runs):
        variant = seed + 2 * run
        raw_run = raw(exact_chat(engine, tokens, variant=variant))
        wrapped_run = wrapped(exact_chat(engine, tokens, variant=variant + 1))
        if run > 0:
            raw_runs.append(raw_run)
            wrapped_runs.append(wrapped_run)
    return summarise(wrapped_runs, raw_runs)


def summarise(wrapped: list[tuple[StreamTiming, int]], raw: list[tuple[StreamTiming, int]]) -> dict[str, Any]:
    """The per-run rates of both sides and what the wrapper adds: a rate ratio and a first-chunk delay."""
    raw_side, wrapped_side = _side(raw), _side(wrapped)
    return {
        **{f"raw_{key}": value for key, value in raw_side.items()},
        **wrapped_side,
        "chunks": [t.chunks for t, _ in wrapped],
        "tokens_per_s_ratio": wrapped_side["stream_tokens_per_s"]["mean"]
        / raw_side["stream_tokens_per_s"]["mean"],
        "e2e_ratio": wrapped_side["e2e_tokens_per_s"]["mean"] / raw_side["e2e_tokens_per_s"]["mean"],
        "first_chunk_extra_ms": wrapped_side["first_chunk_ms"]["mean"] - raw_side["first_chunk_ms"]["mean"],
    }


def _side(runs: list[tuple[StreamTiming, int]]) -> dict[str, Any]:
    """Rates of one side. Answers stop at EOS, so their lengths differ: the streaming rate after the first chunk
    (tokens after the first / time after the first chunk) does not depend on how much of a run the prefill is."""
    if any(n < 2 or t.first_chunk_ms is None or t.first_chunk_ms >= t.wall_ms for t, n in runs):
        raise Phi3AIPCError(
            "A run ended before its second token, so it has no streaming rate: use a model that answers these "
            "prompts at some length (e.g. --model smollm2) or a larger --max-new-tokens."
        )
    return {
        "output_tokens": [n for _, n in runs],
        "first_chunk_ms": summary([t.first_chunk_ms for t, _ in runs]),
        "stream_tokens_per_s": summary([(n - 1) * 1000.0 / (t.wall_ms - t.first_chunk_ms) for t, n in runs]),
        "e2e_tokens_per_s": summary([n * 1000.0 / t.wall_ms for t, n in runs]),
    }


def measure_wrappers(
    target: Target, through: list[str], input_tokens: list[int], runs: int, max_new_tokens: int
) -> dict[str, Any]:
    """Every wrapper at every input length, against the raw engine, on one shared engine."""
    engine = get_engine(target.model, target.device, target.backend, target.options)
    raw = raw_runner(engine, GenerationParams(max_new_tokens=max_new_tokens))
    wrappers = {kind: wrapper_runner(kind, target, max_new_tokens) for kind in through}
    inputs = []
    for wanted in input_tokens:
        tokens = effective_input_tokens(engine, wanted, max_new_tokens)  # the NPU's MAX_PROMPT_LEN caps it
        through_results = {
            kind: compare(raw, wrapped, engine, tokens, runs, seed=1000 * index)
            for index, (kind, wrapped) in enumerate(wrappers.items(), start=1)
        }
        inputs.append({"input_tokens_requested": wanted, "input_tokens": tokens, "through": through_results})
    return {
        "name": target.name,
        "target": {"model": target.model, "device": target.device, "backend": target.backend},
        "engine": {"model": engine.model_name, "device": engine.device, "backend": engine.backend_name},
        "inputs": inputs,
    }


def format_wrapper_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| target | through | in | raw tok/s | wrapper tok/s | ratio (goal ≥ 0.98) | e2e ratio | raw first chunk ms "
        "| wrapper first chunk ms | extra ms (goal ≤ 5) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in results:
        for row in entry["inputs"]:
            for kind, wrap in row["through"].items():
                lines.append(
                    f"| {entry['name']} | {kind} | {row['input_tokens']} | {pm(wrap['raw_stream_tokens_per_s'])} "
                    f"| {pm(wrap['stream_tokens_per_s'])} | {wrap['tokens_per_s_ratio']:.3f} | {wrap['e2e_ratio']:.3f} "
                    f"| {pm(wrap['raw_first_chunk_ms'])} | {pm(wrap['first_chunk_ms'])} "
                    f"| {wrap['first_chunk_extra_ms']:+.2f} |"
                )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_arguments(parser)
    parser.add_argument("--through", nargs="+", choices=WRAPPERS, default=list(WRAPPERS))
    parser.add_argument("--runs", type=int, default=3, help="Measured pairs per wrapper (after 1 warm-up).")
    parser.add_argument("--input-tokens", type=int, nargs="+", default=[32], help="Chat prompt lengths.")
    parser.add_argument(
        "--max-new-tokens", type=int, default=128, help="Longest answer (EOS still stops it)."
    )
    parser.add_argument("--label", default="", help="The target's name in the table.")
    parser.add_argument("--json", type=Path, default=None, help="Write the full report as JSON here.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except Phi3AIPCError as exc:
        print(f"wrapper_overhead: error: {exc}", file=sys.stderr)
        return 2
    print(format_wrapper_table(report["results"]))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.runs < 1 or args.max_new_tokens < 1:
        raise InvalidParameterError("--runs and --max-new-tokens must be at least 1.")
    target = Target(
        args.model or DEFAULT_MODEL,
        args.device,
        args.backend or "openvino",
        parse_options(args.option),
        label=args.label,
    )
    result = measure_wrappers(target, args.through, args.input_tokens, args.runs, args.max_new_tokens)
    return {
        "machine": machine_info(),
        "settings": {"runs": args.runs, "warmup": 1, "max_new_tokens": args.max_new_tokens},
        "results": [result],
    }


if __name__ == "__main__":
    sys.exit(main())
