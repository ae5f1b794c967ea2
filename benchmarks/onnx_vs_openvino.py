"""SmolLM2-135M-Instruct int4 on the CPU: ONNX Runtime GenAI against OpenVINO GenAI, side by side from one run.

Both engines run through phi3-aipc (the numbers include our wrapper), greedy, with a fixed number of new tokens
(ignore_eos). The runs alternate between engines so that load from other processes hits both alike, and every run
starts with a different nonce so that OpenVINO's prefix cache cannot shorten the time to first token.

Models: the packaged GGUF is converted once to a Hugging Face folder (phi3_aipc.testing.build_smollm2_hf), then
exported to ONNX Runtime GenAI int4 (onnxruntime-genai's builder: block 32, the CPU default) and, when
optimum-intel is installed, to an OpenVINO int4 IR (NNCF, asymmetric, group 32 like ORT's blocks). Without
optimum-intel, OpenVINO GenAI runs the GGUF (Q4_1) directly; the report says which. Both engines keep their CPU
defaults (OpenVINO computes in bf16 on CPUs that have it; ORT's int4 MatMuls use int8 activations, accuracy level 4).

    python benchmarks/onnx_vs_openvino.py [--runs 7] [--new-tokens 64] [--cache DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
from pathlib import Path

from phi3_aipc import GenerationParams, get_engine
from phi3_aipc.export.onnx import export_onnx
from phi3_aipc.paths import cache_root
from phi3_aipc.testing import build_smollm2_hf, cached_model_dir, smollm2_gguf_path

QUESTION = "Explain in a few sentences why the sky is blue."


def prepare_models(cache: Path) -> tuple[Path, Path, str]:
    """(ORT int4 folder, OpenVINO model path, what the OpenVINO model is)."""
    hf = cached_model_dir(cache, "smollm2-135m-instruct-hf-v1", build_smollm2_hf)
    ort = cached_model_dir(
        cache, "smollm2-135m-instruct-ort-int4-v1", lambda out: export_onnx(hf, out, "int4", "cpu")
    )
    if importlib.util.find_spec("optimum") is not None and importlib.util.find_spec("nncf") is not None:
        from phi3_aipc.export.openvino import export_openvino

        ov = cached_model_dir(
            cache,
            "smollm2-135m-instruct-ov-int4-g32-v1",
            lambda out: export_openvino(hf, out, weight_format="int4", group_size=32),
        )
        # Group 32 as ORT's block 32 (NNCF's default 128 does not divide SmolLM2's hidden size of 576).
        return ort, ov, "int4 IR exported from the same HF folder (NNCF asymmetric, group 32)"
    return ort, smollm2_gguf_path(), "the packaged GGUF (Q4_1), loaded directly"


def measure(runs: int, new_tokens: int, cache: Path) -> None:
    ort_path, ov_path, ov_what = prepare_models(cache)
    engines = {
        "ONNX Runtime GenAI": get_engine(str(ort_path), "cpu", backend="onnx"),
        "OpenVINO GenAI": get_engine(str(ov_path), "cpu", backend="openvino"),
    }
    params = GenerationParams(max_new_tokens=new_tokens, ignore_eos=True)
    samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in engines}
    for run in range(runs + 1):  # run 0 warms up (first-request compilation, allocations) and is dropped
        for name, engine in engines.items():
            # The nonce opens the prompt, so no earlier prompt shares a prefix (OpenVINO caches prefixes).
            chat = [
                {"role": "system", "content": f"Run {run}. You are a helpful assistant."},
                {"role": "user", "content": QUESTION},
            ]
            result = engine.generate(chat, params)
            assert result.completion_tokens == new_tokens, (name, result.completion_tokens)
            if run:
                samples[name].append(
                    (result.timings.ttft_ms, result.timings.tokens_per_second, result.prompt_tokens)
                )
    print(
        f"SmolLM2-135M-Instruct int4, CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    )
    print(
        f"greedy, {new_tokens} forced new tokens, median of {runs} runs after 1 warm-up, engines alternating"
    )
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"OpenVINO GenAI model: {ov_what}")
    print("ONNX Runtime GenAI model: int4 exported by onnxruntime-genai's builder (-p int4 -e cpu)")
    print()
    print("| engine | prompt tokens | TTFT ms (median) | decode tok/s (median) | decode tok/s (min-max) |")
    print("|---|---|---|---|---|")
    for name, rows in samples.items():
        ttft = statistics.median(r[0] for r in rows)
        rates = [r[1] for r in rows]
        print(
            f"| {name} | {rows[0][2]} | {ttft:.0f} | {statistics.median(rates):.1f} | "
            f"{min(rates):.1f}-{max(rates):.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("PHI3_AIPC_TEST_CACHE") or cache_root() / "bench-models"),
        help="where the converted models are kept (default: $PHI3_AIPC_TEST_CACHE or <user cache>/bench-models)",
    )
    args = parser.parse_args()
    measure(args.runs, args.new_tokens, args.cache)


if __name__ == "__main__":
    main()
