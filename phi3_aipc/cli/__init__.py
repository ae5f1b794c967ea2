"""The `phi3-aipc` command. Each subcommand lives in its own module and registers itself in COMMANDS."""

from __future__ import annotations

import argparse
import importlib
import sys

from phi3_aipc.errors import Phi3AIPCError

# name -> module; each module defines add_arguments(parser) and run(args) -> int, plus a HELP line.
COMMANDS = {
    "ask": "phi3_aipc.cli.ask",
    "bench": "phi3_aipc.cli.bench",
    "chat": "phi3_aipc.cli.chat",
    "doctor": "phi3_aipc.cli.doctor",
    "export": "phi3_aipc.cli.export",
    "serve": "phi3_aipc.cli.serve",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phi3-aipc",
        description="Run Phi-3 family models locally on AI PCs (NPU, Intel GPU, CPU, DirectML).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except Phi3AIPCError as exc:
        print(f"phi3-aipc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
