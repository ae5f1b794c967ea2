"""`phi3-aipc export`: convert a HF checkpoint for a device (OpenVINO IR or ONNX Runtime GenAI)."""

from __future__ import annotations

import argparse
import sys

from phi3_aipc.export import DEVICES, PRECISIONS, TARGETS, export_model, read_manifest

HELP = "Export a Hugging Face model for the NPU, GPU or CPU (OpenVINO IR or ONNX), with device presets."

EPILOG = """presets (--for):
  npu  int4, symmetric, channel-wise (or --group-size 128); nothing else runs on the NPU
  gpu  int4 symmetric, group 128, ratio 0.6 (the Phi-3 AI PC recipe); int8/fp16/fp32 allowed
  cpu  int8 (default) or int4 symmetric group 128; fp16/fp32 allowed
examples:
  phi3-aipc export microsoft/Phi-3-mini-4k-instruct phi3-npu --for npu
  phi3-aipc export microsoft/Phi-3-mini-4k-instruct phi3-gpu --for gpu
  phi3-aipc export ./my-checkpoint phi3-dml --to onnx --precision int4 --for gpu"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "model", help="Hugging Face repo id, alias (phi-3-mini, ...) or local checkpoint folder."
    )
    parser.add_argument("out", help="Output folder (new or empty).")
    # No argparse `choices`: plan_export's errors say what fits which device, which a bare choices list cannot.
    parser.add_argument("--to", default="openvino", help=f"Format: {', '.join(TARGETS)} (default openvino).")
    parser.add_argument(
        "--precision", default=None, help=f"{', '.join(PRECISIONS)} (default: the device's preset)."
    )
    parser.add_argument("--for", dest="device", default="cpu", help=f"{', '.join(DEVICES)} (default cpu).")
    sym = parser.add_mutually_exclusive_group()
    sym.add_argument(
        "--sym", dest="sym", action="store_true", default=None, help="Symmetric int4/int8 weights."
    )
    sym.add_argument("--asym", dest="sym", action="store_false", help="Asymmetric weights (not for the NPU).")
    parser.add_argument("--group-size", type=int, default=None, help="int4 group size; -1 = channel-wise.")
    parser.add_argument("--ratio", type=float, default=None, help="Share of layers in int4 (the rest int8).")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) of a repo id.")
    parser.add_argument("--force", action="store_true", help="Replace an earlier export in OUT.")
    parser.add_argument("--quiet", action="store_true", help="No progress bar.")


def run(args: argparse.Namespace) -> int:
    out = export_model(
        args.model,
        args.out,
        to=args.to,
        device=args.device,
        precision=args.precision,
        sym=args.sym,
        group_size=args.group_size,
        ratio=args.ratio,
        overwrite=args.force,
        progress=not args.quiet,
        revision=args.revision,
    )
    manifest = read_manifest(out)
    options = manifest["options"]
    print(
        f"Exported {manifest['source']['model']} -> {out} ({options['to']} {options['precision']} for "
        f"{options['device']}, {manifest['size_bytes'] / 1e6:.1f} MB, {manifest['export_seconds']:.0f} s)",
        file=sys.stderr,
    )
    backend = "openvino" if options["to"] == "openvino" else "onnx"
    print(
        f"Use it: phi3-aipc ask --model {out} --device {options['device']} --backend {backend}",
        file=sys.stderr,
    )
    return 0
