"""The embedded default's first ten seconds: cold and warm load, and the first answer's speed, before and after the
packaged SmolLM2 GGUF is converted to an OpenVINO IR on first use.

Each row runs in fresh processes sharing one empty phi3-aipc cache: 'cold' is the first process (conversion and
compilation included), 'warm' the second. 'gguf' loads the GGUF directly, as phi3-aipc did before the conversion
(validation included); 'ir' is ``get_engine("smollm2")`` today. The first answer's speed includes OpenVINO's first-use
work; a second answer in the same process shows decoding without it.

    python benchmarks/first_run.py            # prints a markdown table; --json for the raw figures
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
SECOND = [{"role": "user", "content": "Name three colours."}]
NPU_ON_CPU = {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 256, "MIN_RESPONSE_LEN": 64}


def _engine(path: str, device: str) -> Any:
    """The engine for one row, timed from nothing loaded."""
    from phi3_aipc import get_engine

    options = NPU_ON_CPU if device == "npu" else None
    if path == "ir":
        return get_engine("smollm2", device, options=options)
    # Before: the GGUF handed to OpenVINO GenAI as it is (after the validation phi3-aipc always did).
    from phi3_aipc.backends.openvino_genai import OpenVINOGenAIBackend
    from phi3_aipc.engine import Engine
    from phi3_aipc.families import detect_family
    from phi3_aipc.models import Artifact, smollm2_gguf
    from phi3_aipc.models.files import read_facts

    gguf = smollm2_gguf()
    facts = read_facts(gguf, "gguf")
    artifact = Artifact(
        gguf,
        "gguf",
        "smollm2",
        detect_family("smollm2", facts.model_type, facts.vocab_size),
        facts.context_window,
        facts.special_tokens,
    )
    return Engine(OpenVINOGenAIBackend.load(artifact, device.upper(), dict(options or {})))


def measure_one(path: str, device: str) -> dict[str, Any]:
    """One process: the time to a loaded engine, then the first answer."""
    from phi3_aipc import GenerationParams

    started = time.perf_counter()
    try:
        engine = _engine(path, device)
    except Exception as exc:  # noqa: BLE001 - a row that fails is reported, not fatal
        return {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:160]}"}
    ready_s = time.perf_counter() - started
    result = engine.generate(QUESTION, GenerationParams(max_new_tokens=32))
    # A second answer in the same process: what decoding costs once first-use work (kernel preparation) is done.
    second = engine.generate(SECOND, GenerationParams(max_new_tokens=32))
    return {
        "ready_s": round(ready_s, 2),
        "load_ms": round(engine.load_ms or 0),
        "ttft_ms": round(result.timings.ttft_ms or 0),
        "tokens_per_s": round(result.timings.tokens_per_second or 0, 1),
        "tokens": result.completion_tokens,
        "second_tokens_per_s": round(second.timings.tokens_per_second or 0, 1),
        "answer": result.text.strip(),
    }


def _child(path: str, device: str, cache: str) -> dict[str, Any]:
    env = {**os.environ, "PHI3_AIPC_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    code = f"import json, first_run; print(json.dumps(first_run.measure_one({path!r}, {device!r})))"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=os.path.dirname(os.path.abspath(__file__)),
        capture_output=True,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:160]}
    return json.loads(lines[-1])


def run(rows: list[tuple[str, str]]) -> list[dict[str, Any]]:
    results = []
    for path, device in rows:
        with tempfile.TemporaryDirectory(prefix="phi3-aipc-first-run-") as cache:
            for phase in ("cold", "warm"):
                results.append(
                    {"path": path, "device": device, "phase": phase, **_child(path, device, cache)}
                )
    return results


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model file | device | process | ready s | load ms | TTFT ms | tok/s | 2nd answer tok/s | answer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        device = "NPU pipeline on CPU" if r["device"] == "npu" else r["device"].upper()
        if "error" in r:
            lines.append(f"| {r['path']} | {device} | {r['phase']} | fails: {r['error']} | | | | | |")
            continue
        lines.append(
            f"| {r['path']} | {device} | {r['phase']} | {r['ready_s']} | {r['load_ms']} | {r['ttft_ms']} | "
            f"{r['tokens_per_s']} | {r['second_tokens_per_s']} | {r['answer'][:40]} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    parser.add_argument("--no-npu", action="store_true", help="skip the NPU pipeline on the CPU")
    args = parser.parse_args()
    rows = [("gguf", "cpu"), ("ir", "cpu")]
    if not args.no_npu:
        rows += [("gguf", "npu"), ("ir", "npu")]
    results = run(rows)
    print(json.dumps(results, indent=2) if args.json else table(results))


if __name__ == "__main__":
    main()
