"""The embedded default's first ten seconds: cold and warm load, and the first answer's speed, before and after the
packaged SmolLM2 GGUF is converted to an OpenVINO IR on first use.

Each row runs in fresh processes sharing one empty phi3-aipc cache: 'cold' is the first process (conversion and
compilation included), 'warm' the second. 'gguf' loads the GGUF directly, as phi3-aipc did before the conversion
(validation included); 'ir' is ``get_engine("smollm2")`` today. The first answer's speed includes OpenVINO's first-use
work; a second answer in the same process shows decoding without it.

The engine's warm-up (``Engine.warm_up``, started by ``get_engine``) is measured on and off, and the first question
is asked twice over: at once when the engine is ready (a script), and after ``--pause`` seconds (a person typing,
or a chain being built). 'first answer s' is the wall time from asking to the whole answer, waiting behind the
warm-up included ('queued ms').

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


def _engine(path: str, device: str, warm_up: bool) -> Any:
    """The engine for one row, timed from nothing loaded."""
    from phi3_aipc import get_engine

    options = NPU_ON_CPU if device == "npu" else None
    if path == "ir":
        return get_engine("smollm2", device, options=options, warm_up=warm_up)
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
    engine = Engine(OpenVINOGenAIBackend.load(artifact, device.upper(), dict(options or {})))
    if warm_up:
        engine.warm_up()
    return engine


def measure_one(path: str, device: str, warm_up: bool = True, pause_s: float = 0.0) -> dict[str, Any]:
    """One process: the time to a loaded engine, then (after ``pause_s``) the first answer."""
    from phi3_aipc import GenerationParams

    started = time.perf_counter()
    try:
        engine = _engine(path, device, warm_up)
    except Exception as exc:  # noqa: BLE001 - a row that fails is reported, not fatal
        return {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:160]}"}
    ready_s = time.perf_counter() - started
    time.sleep(pause_s)
    asked = time.perf_counter()
    result = engine.generate(QUESTION, GenerationParams(max_new_tokens=32))
    answered_s = time.perf_counter() - asked
    # A second answer in the same process: what decoding costs once first-use work (kernel preparation) is done.
    second = engine.generate(SECOND, GenerationParams(max_new_tokens=32))
    return {
        "ready_s": round(ready_s, 2),
        "first_answer_s": round(answered_s, 2),
        "queued_ms": round(result.timings.queued_ms or 0),
        "load_ms": round(engine.load_ms or 0),
        "ttft_ms": round(result.timings.ttft_ms or 0),
        "tokens_per_s": round(result.timings.tokens_per_second or 0, 1),
        "tokens": result.completion_tokens,
        "second_tokens_per_s": round(second.timings.tokens_per_second or 0, 1),
        "answer": result.text.strip(),
    }


def _child(path: str, device: str, cache: str, warm_up: bool = True, pause_s: float = 0.0) -> dict[str, Any]:
    env = {**os.environ, "PHI3_AIPC_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    call = f"first_run.measure_one({path!r}, {device!r}, {warm_up!r}, {pause_s!r})"
    code = f"import json, first_run; print(json.dumps({call}))"
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


def run(rows: list[tuple[str, str]], pause_s: float) -> list[dict[str, Any]]:
    """Per row: a cold process, then warm processes with the warm-up off and on, asked at once and after a pause,
    taking turns, so that each pair is measured side by side."""
    results = []
    warm_runs = [(False, 0.0), (True, 0.0), (False, pause_s), (True, pause_s)]
    for path, device in rows:
        with tempfile.TemporaryDirectory(prefix="phi3-aipc-first-run-") as cache:
            runs = [("cold", True, 0.0)] + [("warm", w, p) for w, p in warm_runs]
            for phase, warm_up, pause in runs:
                row = {"path": path, "device": device, "phase": phase, "warm_up": warm_up, "pause_s": pause}
                results.append({**row, **_child(path, device, cache, warm_up, pause)})
    return results


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| model file | device | process | warm-up | asked after s | ready s | first answer s | queued ms | TTFT ms "
        "| tok/s | 2nd answer tok/s | answer |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        device = "NPU pipeline on CPU" if r["device"] == "npu" else r["device"].upper()
        head = (
            f"| {r['path']} | {device} | {r['phase']} | {'on' if r['warm_up'] else 'off'} | {r['pause_s']} |"
        )
        if "error" in r:
            lines.append(f"{head} fails: {r['error']} | | | | | | |")
            continue
        lines.append(
            f"{head} {r['ready_s']} | {r['first_answer_s']} | {r['queued_ms']} | {r['ttft_ms']} | "
            f"{r['tokens_per_s']} | {r['second_tokens_per_s']} | {r['answer'][:40]} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    parser.add_argument("--no-npu", action="store_true", help="skip the NPU pipeline on the CPU")
    parser.add_argument("--no-gguf", action="store_true", help="skip the rows that load the GGUF directly")
    parser.add_argument(
        "--pause", type=float, default=1.0, help="seconds between ready and asking (default 1)"
    )
    args = parser.parse_args()
    paths = ["ir"] if args.no_gguf else ["gguf", "ir"]
    devices = ["cpu"] if args.no_npu else ["cpu", "npu"]
    results = run([(path, device) for device in devices for path in paths], args.pause)
    print(json.dumps(results, indent=2) if args.json else table(results))


if __name__ == "__main__":
    main()
