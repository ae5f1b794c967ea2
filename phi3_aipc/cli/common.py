"""Arguments shared by the subcommands that load a model."""

from __future__ import annotations

import argparse
import json
from typing import Any

from phi3_aipc.errors import InvalidParameterError


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="HF repo id, alias (phi-3-mini, phi-3.5-mini, phi-4-mini, smollm2), local IR/GGUF/checkpoint path. "
        "Default: microsoft/Phi-3-mini-4k-instruct.",
    )
    parser.add_argument("--device", default="auto", help="auto, npu, gpu, cpu, or an OpenVINO id like GPU.1.")
    parser.add_argument(
        "--backend",
        default=None,
        help="openvino (default; serve on the CPU or GPU: openvino-batching), transformers, ...",
    )
    parser.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Backend/device option, e.g. -o MAX_PROMPT_LEN=2048 -o NPUW_DEVICES=CPU. Repeatable.",
    )
    parser.add_argument(
        "--prompt-lookup",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Prompt-lookup decoding (OpenVINO): faster answers that copy their context, same greedy text. "
        "Default: off (at bf16 it changed greedy text); never on the NPU; --prompt-lookup drafts 5.",
    )
    parser.add_argument(
        "--draft-model",
        default=None,
        help="Speculative decoding (OpenVINO) with this draft model: path, repo id, or 'auto' (the catalogue's, "
        "e.g. FastDraft for phi-3-mini).",
    )


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """The --option pairs plus --prompt-lookup / --draft-model, as get_engine's options."""
    from phi3_aipc.engine.load_options import with_speed_options

    return with_speed_options(parse_options(args.option), args.prompt_lookup, args.draft_model)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise InvalidParameterError(f"--option takes KEY=VALUE, got {pair!r}.")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    return options
