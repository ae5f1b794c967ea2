"""CPU decode at Phi-3-mini size, side by side with llama.cpp (issue 16), in one run.

    python benchmarks/cpu_decode.py \
        --target openvino "int4 sym cw" ~/.cache/phi3-aipc/synthetic/phi-3-mini-int4-sym-cw-ov \
        --target openvino "int4 sym cw, DQ 128" DIR DYNAMIC_QUANTIZATION_GROUP_SIZE=128 \
        --target llamacpp "llama.cpp Q4_0" phi-3-mini-q4_0.gguf \
        --llamacpp-python /work/venv-llamacpp/bin/python --processes 3 --runs 3 --json out.json

Method (the same for every target):
- Every target runs in fresh processes, ``--processes`` times, interleaved (target A, B, C, A, B, C, ...) so that a
  change in machine load hits every target alike. Each process loads the model, warms up with one short generation
  (OpenVINO compiles on the first request), then times ``--runs`` generations.
- Prompt: a raw prompt (no chat template) of exactly ``--prompt-tokens`` tokens counted by the engine's own
  tokenizer; output: ``--new-tokens`` tokens forced past EOS, greedy. Every run's prompt differs from its first word
  on, and llama.cpp's KV cache is reset before each run, so no prefix is reused: TTFT is a full prefill each time.
- Decode tok/s = (new tokens - 1) / (time of the last token - time of the first); TTFT from the call to the first
  token. Medians over all runs of all processes. Peak RSS: the largest VmHWM of a target's processes.
- Memory-bandwidth ceiling: a numpy read of a 1 GiB array on every core, best of 5, measured at the start and at the
  end of the run. "% of ceiling" = decode tok/s x weight-file bytes / bandwidth: the share of the machine's read
  bandwidth the decode loop uses if it reads every weight once per token.

Targets: ``openvino``, ``optimum-intel``, ``onnx``, ``transformers`` run through ``phi3_aipc.get_engine`` on the CPU
(what phi3-aipc ships, with its CPU defaults; ``KEY=VALUE`` options are passed as engine options). ``llamacpp`` runs
llama-cpp-python (``--llamacpp-python``: a separate, benchmark-only environment, see docs/cpu-decode.md) with
``n_threads`` = every core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
ENGINE_BACKENDS = ("openvino", "optimum-intel", "onnx", "transformers")
LLAMACPP = "llamacpp"
# Files that hold a model's weights (tokenizer IRs and configs are not read per token).
_WEIGHT_FILES = ("openvino_model.bin", "model.onnx.data", "model.onnx", "model.safetensors")
_BANDWIDTH_BYTES = 1 << 30


@dataclass(frozen=True)
class Target:
    kind: str
    label: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    target: Target
    prompt_tokens: int
    new_tokens: int
    runs: int
    warmup_tokens: int
    first_variant: int


# -- the parent: plans processes, collects their results, writes the table ----------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        return _worker(sys.stdin.read())
    targets = [_target(spec) for spec in args.target]
    if not targets:
        raise SystemExit("Name at least one --target.")
    report: dict[str, Any] = {
        "machine": _machine(),
        "settings": {k: getattr(args, k) for k in ("prompt_tokens", "new_tokens", "runs", "processes")},
        "bandwidth_gb_s": [_measure_bandwidth()],
        "targets": {t.label: {"target": asdict(t), "processes": []} for t in targets},
    }
    for process in range(args.processes):
        for target in targets:
            job = Job(
                target, args.prompt_tokens, args.new_tokens, args.runs, args.warmup_tokens, process * 100
            )
            python = args.llamacpp_python if target.kind == LLAMACPP else sys.executable
            result = _spawn(python, job)
            report["targets"][target.label]["processes"].append(result)
            print(
                f"[{process + 1}/{args.processes}] {target.label}: {_brief(result)}",
                file=sys.stderr,
                flush=True,
            )
    report["bandwidth_gb_s"].append(_measure_bandwidth())
    report["load_average_end"] = _load_average()
    table = format_table(report)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--target",
        nargs="+",
        action="append",
        default=[],
        metavar="KIND LABEL PATH [KEY=VALUE]",
        help=f"kind: {', '.join((*ENGINE_BACKENDS, LLAMACPP))}; PATH: a model folder or GGUF file",
    )
    parser.add_argument("--llamacpp-python", default="python", help="the Python that has llama-cpp-python")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--warmup-tokens", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3, help="timed runs in each process")
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per target")
    parser.add_argument("--json", help="write the raw results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser


def _target(spec: list[str]) -> Target:
    if len(spec) < 3:
        raise SystemExit(f"--target needs KIND LABEL PATH, got {spec}")
    kind, label, path, *pairs = spec
    if kind not in (*ENGINE_BACKENDS, LLAMACPP):
        raise SystemExit(
            f"Unknown target kind {kind!r}; use one of {', '.join((*ENGINE_BACKENDS, LLAMACPP))}."
        )
    if not Path(path).exists():
        raise SystemExit(f"{path} does not exist.")
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"Options are KEY=VALUE, got {pair!r}.")
        options[key] = int(value) if value.lstrip("-").isdigit() else value
    return Target(kind, label, str(Path(path).resolve()), options)


def _spawn(python: str, job: Job) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [python, str(HERE), "--worker"],
        input=json.dumps(asdict(job)),
        capture_output=True,
        text=True,
        env=env,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-1500:]}"}
    return json.loads(lines[-1])


def _brief(result: dict[str, Any]) -> str:
    if "error" in result:
        return result["error"][-300:]
    return (
        f"decode {[round(v, 2) for v in result['decode_tok_s']]} tok/s, "
        f"TTFT {[round(v) for v in result['ttft_ms']]} ms, RSS {result['peak_rss_mib']:.0f} MiB"
    )


# -- the table -------------------------------------------------------------------------------------------------------
def summarise(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target: medians over every run of every process, and the ratios to llama.cpp."""
    bandwidth = max(report["bandwidth_gb_s"])
    rows = []
    for label, entry in report["targets"].items():
        good = [p for p in entry["processes"] if "error" not in p]
        if not good:
            rows.append(
                {"label": label, "error": entry["processes"][0]["error"] if entry["processes"] else "not run"}
            )
            continue
        decode = statistics.median(v for p in good for v in p["decode_tok_s"])
        weights = good[0]["weight_bytes"]
        rows.append(
            {
                "label": label,
                "kind": entry["target"]["kind"],
                "runs": sum(len(p["decode_tok_s"]) for p in good),
                "weights_gb": weights / 1e9,
                "decode_tok_s": decode,
                "ttft_ms": statistics.median(v for p in good for v in p["ttft_ms"]),
                "peak_rss_mib": max(p["peak_rss_mib"] for p in good),
                "bandwidth_share": decode * weights / (bandwidth * 1e9),
            }
        )
    peer = next((r for r in rows if r.get("kind") == LLAMACPP and "error" not in r), None)
    for row in rows:
        if peer is not None and "error" not in row:
            row["decode_vs_llamacpp"] = row["decode_tok_s"] / peer["decode_tok_s"]
            row["ttft_vs_llamacpp"] = row["ttft_ms"] / peer["ttft_ms"]
    return rows


def format_table(report: dict[str, Any]) -> str:
    machine = report["machine"]
    bandwidth = ", ".join(f"{v:.1f}" for v in report["bandwidth_gb_s"])
    settings = report["settings"]
    lines = [
        f"{machine['cpu']}, {machine['cpus']} CPUs ({machine['flags']}); read bandwidth {bandwidth} GB/s "
        f"(start, end); load average {machine['load_average']} at the start, {report.get('load_average_end')} "
        f"at the end; {settings['prompt_tokens']}-token prompt, {settings['new_tokens']} tokens forced, greedy; "
        f"{settings['processes']} processes x {settings['runs']} runs per target.",
        "",
        "| target | weights GB | decode tok/s | TTFT ms | peak RSS MiB | % of bandwidth ceiling "
        "| decode vs llama.cpp | TTFT vs llama.cpp | runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summarise(report):
        if "error" in row:
            lines.append(f"| {row['label']} | failed: {row['error'][-200:]} |||||||")
            continue
        lines.append(
            f"| {row['label']} | {row['weights_gb']:.2f} | {row['decode_tok_s']:.2f} | {row['ttft_ms']:.0f} "
            f"| {row['peak_rss_mib']:.0f} | {row['bandwidth_share']:.0%} "
            f"| {_ratio(row.get('decode_vs_llamacpp'))} | {_ratio(row.get('ttft_vs_llamacpp'))} | {row['runs']} |"
        )
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


# -- the machine and its memory bandwidth -----------------------------------------------------------------------------
def _machine() -> dict[str, Any]:
    cpu, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass  # not Linux: the CPU stays unnamed
    simd = [
        f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile") if f in flags
    ]
    return {"cpu": cpu, "cpus": os.cpu_count(), "flags": " ".join(simd), "load_average": _load_average()}


def _load_average() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def _measure_bandwidth() -> float:
    """GB/s of a read of 1 GiB split over every core, best of 5, in a process of its own."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import cpu_decode; print(cpu_decode.read_bandwidth())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(HERE.parent)], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def read_bandwidth(repeats: int = 5) -> float:
    import concurrent.futures

    import numpy as np

    data = np.ones(_BANDWIDTH_BYTES // 8, dtype=np.float64)
    parts = np.array_split(data, os.cpu_count() or 1)
    best = 0.0
    # numpy releases the GIL inside a reduction, so the threads read in parallel.
    with concurrent.futures.ThreadPoolExecutor(len(parts)) as pool:
        for _ in range(repeats):
            started = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = max(best, data.nbytes / (time.perf_counter() - started) / 1e9)
    return best


# -- the worker: one process, one target ------------------------------------------------------------------------------
def _worker(text: str) -> int:
    raw = json.loads(text)
    job = Job(**{**raw, "target": Target(**raw["target"])})
    runner = _llamacpp_runs if job.target.kind == LLAMACPP else _engine_runs
    timings = runner(job)
    result = {
        "ttft_ms": [t[0] for t in timings],
        "decode_tok_s": [t[1] for t in timings],
        "peak_rss_mib": _peak_rss_mib(),
        "weight_bytes": weight_bytes(Path(job.target.path)),
    }
    print(json.dumps(result))
    return 0


def _engine_runs(job: Job) -> list[tuple[float, float]]:
    """phi3-aipc's engine: TTFT and TPOT from the backend's own metrics (OpenVINO GenAI's perf_metrics)."""
    from phi3_aipc import GenerationParams, get_engine
    from phi3_aipc.bench.prompts import exact_prompt

    engine = get_engine(job.target.path, "cpu", job.target.kind, job.target.options)
    warm = GenerationParams(max_new_tokens=job.warmup_tokens, ignore_eos=True)
    engine.generate(exact_prompt(engine, job.prompt_tokens, variant=job.first_variant), warm)
    params = GenerationParams(max_new_tokens=job.new_tokens, ignore_eos=True)
    timings = []
    for run in range(1, job.runs + 1):
        result = engine.generate(
            exact_prompt(engine, job.prompt_tokens, variant=job.first_variant + run), params
        )
        if result.completion_tokens != job.new_tokens or not result.timings.tpot_ms:
            raise RuntimeError(f"expected {job.new_tokens} tokens, got {result.completion_tokens}")
        timings.append((float(result.timings.ttft_ms), 1000.0 / float(result.timings.tpot_ms)))
    return timings


def _llamacpp_runs(job: Job) -> list[tuple[float, float]]:
    """llama-cpp-python, every core, greedy; the KV cache is reset before every run (no prefix reuse)."""
    import llama_cpp

    from phi3_aipc.bench.prompts import exact_prompt

    threads = os.cpu_count() or 1
    llm = llama_cpp.Llama(
        job.target.path,
        n_ctx=512,
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
        **job.target.options,
    )

    def tokens_of(text: str) -> list[int]:
        return llm.tokenize(text.encode(), add_bos=True, special=False)

    counter = SimpleNamespace(count_tokens=lambda text: len(tokens_of(text)))

    def prompt(variant: int) -> list[int]:
        return tokens_of(exact_prompt(counter, job.prompt_tokens, variant))

    _timed_llamacpp(llm, prompt(job.first_variant), job.warmup_tokens)
    return [
        _timed_llamacpp(llm, prompt(job.first_variant + run), job.new_tokens)
        for run in range(1, job.runs + 1)
    ]


def _timed_llamacpp(llm: Any, prompt: list[int], new_tokens: int) -> tuple[float, float]:
    llm.reset()  # n_tokens = 0: generate() then finds no prefix to reuse
    stamps = _token_times(llm.generate(prompt, top_k=1, top_p=1.0, temp=0.0, reset=True), new_tokens)
    ttft_ms = (stamps[1] - stamps[0]) * 1000
    decode = (new_tokens - 1) / (stamps[-1] - stamps[1]) if new_tokens > 1 else float("nan")
    return ttft_ms, decode


def _token_times(
    tokens: Iterator[int], count: int, clock: Callable[[], float] = time.perf_counter
) -> list[float]:
    """[start, time of token 1, ..., time of token ``count``]: the generator is advanced (and timed) lazily."""
    stamps = [clock()]
    for _ in range(count):  # llama-cpp-python's generate() never stops at EOS by itself: forced length
        next(tokens)
        stamps.append(clock())
    return stamps


def weight_bytes(path: Path) -> int:
    """Bytes of weights a model reads per token: the GGUF file, or the weight files in a model folder."""
    if path.is_file():
        return path.stat().st_size
    return sum((path / name).stat().st_size for name in _WEIGHT_FILES if (path / name).is_file())


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


if __name__ == "__main__":
    sys.exit(main())
