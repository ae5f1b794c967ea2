"""`phi3-aipc bench`: load time, TTFT, TPOT, tokens/s and peak memory for several devices and backends at once."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from phi3_aipc.bench import (
    Settings,
    format_machine,
    format_table,
    machine_info,
    run_benchmark,
    targets_for,
)
from phi3_aipc.cli.common import parse_options
from phi3_aipc.errors import InvalidParameterError
from phi3_aipc.testing.synthetic import synthetic_names

HELP = (
    "Benchmark a model: cold/warm load, TTFT, TPOT, decode and end-to-end tokens/s, peak RSS; several devices "
    "and backends in one run."
)
WRAPPER_SCRIPT = "benchmarks/wrapper_overhead.py"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="Model to measure (any form `ask` accepts).")
    parser.add_argument(
        "--synthetic",
        default=None,
        choices=synthetic_names(),
        help="Measure a random-weight model with this exact architecture, INT4 sym g128 (built and cached on "
        "first use: ~15 minutes, ~10 GB RAM). Instead of --model.",
    )
    parser.add_argument("--device", nargs="+", default=["cpu"], help="One or more devices (default: cpu).")
    parser.add_argument(
        "--backend", nargs="+", default=["openvino"], help="One or more backends (default: openvino)."
    )
    parser.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Backend/device option for every target, e.g. -o NPUW_DEVICES=CPU -o MAX_PROMPT_LEN=1024.",
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="Measured runs per input length (after 1 warm-up)."
    )
    parser.add_argument("--input-tokens", type=int, nargs="+", default=[32, 1024], help="Prompt lengths.")
    parser.add_argument("--output-tokens", type=int, default=128, help="New tokens, forced past EOS.")
    parser.add_argument("--no-cold", action="store_true", help="Skip the cold-load process.")
    parser.add_argument(
        "--through",
        nargs="+",
        default=[],
        metavar="WRAPPER",
        help=f"Moved: the LangChain / LlamaIndex comparison is `python {WRAPPER_SCRIPT}` in the source tree.",
    )
    parser.add_argument("--json", type=Path, default=None, help="Write the full report as JSON here.")
    parser.add_argument(
        "--scenario",
        choices=("standard", "agent", "rag"),
        default="standard",
        help="'agent': a ~1,000-token prefix and 6 short turns, TTFT per turn with KV reuse on and off. "
        "'rag': a copy-heavy answer over a ~1,000-token retrieved context (and one that copies nothing), decode "
        "tok/s and TTFT with prompt lookup off and on, and with --draft-model if given.",
    )
    parser.add_argument(
        "--draft-model",
        default=None,
        help="rag scenario: also measure speculative decoding with this draft model (path, repo id, or 'auto').",
    )
    parser.add_argument(
        "--llamacpp-python",
        default=None,
        help="rag scenario: also run llama.cpp on the same GGUF, with this Python (a venv with llama-cpp-python).",
    )
    parser.add_argument(
        "--llamacpp-gguf",
        default=None,
        help="rag scenario: the GGUF llama.cpp loads, where --model is not one.",
    )
    parser.add_argument(
        "--model-for",
        action="append",
        default=[],
        metavar="BACKEND[:DEVICE]=MODEL",
        help="The model for one backend (or backend and device), e.g. onnx=./smollm2-ort openvino:npu=./smollm2-ir.",
    )


def run(args: argparse.Namespace) -> int:
    if args.scenario == "agent":
        return _run_agent(args)
    if args.scenario == "rag":
        return _run_rag(args)
    _check_arguments(args)
    if args.synthetic:
        from phi3_aipc.testing.synthetic import synthetic_model

        print(f"Preparing synthetic {args.synthetic} (built once, then cached)...", file=sys.stderr)
        args.model = str(synthetic_model(args.synthetic, "int4"))
    settings = Settings(
        runs=args.runs,
        input_tokens=tuple(args.input_tokens),
        output_tokens=args.output_tokens,
        cold=not args.no_cold,
    )
    targets = targets_for(args.model, args.device, args.backend, parse_options(args.option))
    report = run_benchmark(targets, settings, log=lambda line: print(line, file=sys.stderr))
    print(format_machine(report))
    print()
    print(format_table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nJSON written to {args.json}", file=sys.stderr)
    return 1 if any("error" in entry for entry in report["results"]) else 0


def _run_agent(args: argparse.Namespace) -> int:
    from phi3_aipc.bench.agent import AgentSettings, format_agent_table, run_agent_scenario
    from phi3_aipc.bench.targets import Target
    from phi3_aipc.devices import DEVICE_KINDS, device_kind, normalise_device

    chosen = dict(item.split("=", 1) for item in args.model_for if "=" in item)
    targets = []
    for target in targets_for(args.model or "", args.device, args.backend, parse_options(args.option)):
        if target.backend not in DEVICE_KINDS[device_kind(normalise_device(target.device))].backends:
            print(
                f"agent scenario: skipping {target.name} (that backend does not run there)", file=sys.stderr
            )
            continue
        model = chosen.get(f"{target.backend}:{target.device}") or chosen.get(target.backend) or target.model
        if not model:
            raise InvalidParameterError(f"No model for {target.name}: pass --model or --model-for.")
        targets.append(Target(model, target.device, target.backend, target.options))
    results = run_agent_scenario(targets, AgentSettings(), log=lambda line: print(line, file=sys.stderr))
    print(format_agent_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if any("error" in entry for entry in results) else 0


def _run_rag(args: argparse.Namespace) -> int:
    from phi3_aipc.bench.rag import RagSettings, format_rag_table, run_rag_scenario

    if not args.model:
        raise InvalidParameterError("The rag scenario needs --model (e.g. --model smollm2).")
    targets = targets_for(args.model, args.device, args.backend, parse_options(args.option))
    settings = RagSettings(
        runs=args.runs,
        draft_model=args.draft_model,
        llamacpp_python=args.llamacpp_python,
        llamacpp_gguf=args.llamacpp_gguf,
    )
    results = run_rag_scenario(targets, settings, log=lambda line: print(line, file=sys.stderr))
    machine = machine_info()
    print(
        f"Machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs, load average {machine['load_average']}, "
        f"{machine['date']}; median of {settings.runs} run(s) after a warm-up, greedy, natural end."
    )
    print()
    print(format_rag_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 1 if any("error" in entry for entry in results) else 0


def _check_arguments(args: argparse.Namespace) -> None:
    if args.through:
        # The engine package imports no framework; the wrapper comparison lives next to the other scripts.
        raise InvalidParameterError(
            f"--through moved out of `phi3-aipc bench`: run `python {WRAPPER_SCRIPT} --model MODEL --device DEVICE "
            f"--through {' '.join(args.through)}` from a source checkout (see the README's Benchmarks section)."
        )
    if args.synthetic and args.model:
        raise InvalidParameterError("Pass either --model or --synthetic, not both.")
    if not args.synthetic and not args.model:
        raise InvalidParameterError("Pass --model (e.g. --model smollm2) or --synthetic phi-3-mini.")
