"""SmolLM2-135M-Instruct on the CPU and through the NPU pipeline executed on the CPU, measured in one run.

The NPU pipeline here runs on the CPU (NPUW_DEVICES=CPU): it is a code-path check, not NPU speed. Builds an
int4-symmetric OpenVINO IR of SmolLM2 (the NPU needs symmetric INT4) from the packaged GGUF, then reports load time,
TTFT and decode tokens/s for: the GGUF on the CPU, the int4 IR on the CPU, and the int4 IR on the NPU pipeline.

    python benchmarks/smollm2_cpu_vs_npu_pipeline.py [--runs 3] [--cache DIR]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from phi3_aipc import GenerationParams, clear_engines, get_engine
from phi3_aipc.export.openvino import export_openvino
from phi3_aipc.paths import cache_root
from phi3_aipc.testing import build_smollm2_hf, cached_model_dir

PROMPT = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]
PARAMS = GenerationParams(max_new_tokens=64, ignore_eos=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=cache_root() / "bench-models")
    args = parser.parse_args()
    hf = cached_model_dir(args.cache, "smollm2-hf", build_smollm2_hf)
    ir = cached_model_dir(
        args.cache,
        "smollm2-ov-int4-sym-cw",
        lambda out: export_openvino(hf, out, weight_format="int4", sym=True, group_size=-1),
    )
    configs = [
        ("GGUF Q4_1 on CPU", "smollm2", "cpu", {}),
        ("int4 sym IR on CPU", str(ir), "cpu", {}),
        (
            "int4 sym IR, NPU pipeline on CPU",
            str(ir),
            "npu",
            {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 256, "MIN_RESPONSE_LEN": 128},
        ),
    ]
    print(f"{'path':<34} {'load ms':>9} {'TTFT ms':>9} {'decode tok/s':>13}")
    for label, model, device, options in configs:
        clear_engines()
        engine = get_engine(model, device, options=options)
        engine.generate(PROMPT, PARAMS)  # warm-up, discarded
        results = [engine.generate(PROMPT, PARAMS) for _ in range(args.runs)]
        ttft = statistics.mean(r.timings.ttft_ms for r in results)
        rate = statistics.mean(r.timings.tokens_per_second for r in results)
        print(f"{label:<34} {engine.load_ms:>9.0f} {ttft:>9.1f} {rate:>13.1f}")


if __name__ == "__main__":
    main()
