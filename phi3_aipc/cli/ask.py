"""`phi3-aipc ask`: stream one answer to the terminal, then its timings."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from phi3_aipc.cli.common import add_model_arguments, engine_options
from phi3_aipc.engine import get_engine
from phi3_aipc.params import GenerationParams

HELP = "Ask the model one question and stream the answer."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prompt", nargs="?", default="What is the capital of France?", help="The question.")
    add_model_arguments(parser)
    parser.add_argument("--system", default=None, help="An optional system message.")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument(
        "--temperature", type=float, default=None, help="Sample at this temperature (default: greedy)."
    )
    parser.add_argument("--stop", action="append", default=[], help="A stop sequence. Repeatable.")


def run(args: argparse.Namespace) -> int:
    print(f"Loading {args.model or 'microsoft/Phi-3-mini-4k-instruct'} on {args.device}...", file=sys.stderr)
    options = engine_options(args)
    engine = get_engine(args.model, args.device, args.backend, options)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": args.prompt})
    params = GenerationParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, stop=tuple(args.stop)
    )
    stream = engine.stream(messages, params)
    for delta in stream:
        sys.stdout.write(delta)
        sys.stdout.flush()
    sys.stdout.write("\n")
    result = stream.result
    assert result is not None
    t = result.timings
    # The only request before this one is the engine's warm-up: say what waiting for it cost.
    waited = f"{t.queued_ms:.0f} ms behind the warm-up, " if t.queued_ms and t.queued_ms >= 1 else ""
    print(
        f"[{_where(result.backend, result.device, options)}, model {result.model}] load {t.load_ms or 0:.0f} ms, "
        f"{waited}TTFT {t.ttft_ms or 0:.0f} ms, {t.tokens_per_second or 0:.1f} tokens/s, "
        f"{result.prompt_tokens} prompt + {result.completion_tokens} completion tokens, finish: {result.finish_reason}",
        file=sys.stderr,
    )
    return 0


def _where(backend: str, device: str, options: dict[str, Any] | None) -> str:
    """Where the answer ran. OpenVINO's NPU pipeline with NPUW_DEVICES=CPU compiled for the NPU but executed on the
    CPU (how this project tests it without an NPU): saying "on NPU" there would claim an NPU that never ran."""
    executed_on = (options or {}).get("NPUW_DEVICES")
    if device.upper().startswith("NPU") and executed_on and str(executed_on).upper() != "NPU":
        return (
            f"{backend}'s NPU pipeline, executed on {executed_on} (NPUW_DEVICES={executed_on}), not on an NPU"
        )
    return f"{backend} on {device}"
