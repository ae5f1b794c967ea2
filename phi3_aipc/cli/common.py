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
    parser.add_argument("--backend", default=None, help="openvino (default), transformers, ...")
    parser.add_argument(
        "--option",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Backend/device option, e.g. -o MAX_PROMPT_LEN=2048 -o NPUW_DEVICES=CPU. Repeatable.",
    )


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
