"""Aggregate tokens/s of 1, 4, 8 and 16 concurrent streams against the same requests run one after another, in
process and through `phi3-aipc serve`, on the continuous-batching backend (OpenVINO GenAI, CPU). One run.

    python benchmarks/concurrency.py                       # SmolLM2 and the synthetic Phi-3-mini INT4
    python benchmarks/concurrency.py --models smollm2 --tokens 32 --streams 1 4 8 16

Every request has its own prompt and is forced to exactly ``--tokens`` new tokens (ignore_eos), greedy; prefix
caching is off, so no request is sped up by another's prompt. "one at a time (openvino)" runs the N requests one
after another on the serialising pipeline (what serve used before it batched by default); "sequential" runs them one
after another on the batching engine; "concurrent" starts them together on it (what `phi3-aipc serve --device cpu`
runs with no --backend). TTFT is from a request's start to its first text.
The table goes to stdout and, with --out, to a Markdown file.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from phi3_aipc.bench.machine import machine_info
from phi3_aipc.engine import Engine, get_engine
from phi3_aipc.params import GenerationParams

HERE = Path(__file__).resolve().parent
OPTIONS = {"ENABLE_PREFIX_CACHING": False}
#: The serialising pipeline's name for the same switch: no request is sped up by another's prompt there either.
SERIAL_OPTIONS = {"prefix_reuse": False}


@dataclass
class Sample:
    seconds: float  # wall time for all N requests
    tokens: int
    ttfts_ms: list[float]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def model_path(name: str) -> str:
    if name == "smollm2":
        from phi3_aipc.testing import smollm2_gguf_path

        return str(smollm2_gguf_path())
    from phi3_aipc.testing.synthetic import synthetic_model

    return str(synthetic_model(name, "int4"))


def prompts(n: int) -> list[list[dict[str, str]]]:
    return [
        [{"role": "user", "content": f"Request {i}: write about the number {i * 37 + 11}."}] for i in range(n)
    ]


# -- in process ------------------------------------------------------------------------------------------------------
def one_in_process(
    engine: Engine, messages: list[dict[str, str]], params: GenerationParams
) -> tuple[int, float]:
    started = time.perf_counter()
    first = None
    stream = engine.stream(messages, params)
    for _ in stream:
        if first is None:
            first = time.perf_counter()
    assert stream.result is not None and first is not None
    return stream.result.completion_tokens, (first - started) * 1000


def in_process(engine: Engine, n: int, params: GenerationParams, concurrent: bool) -> Sample:
    requests = prompts(n)
    results: list[tuple[int, float]] = [(0, 0.0)] * n

    def run(i: int) -> None:
        results[i] = one_in_process(engine, requests[i], params)

    started = time.perf_counter()
    if concurrent:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        for i in range(n):
            run(i)
    seconds = time.perf_counter() - started
    return Sample(seconds, sum(r[0] for r in results), [r[1] for r in results])


# -- through the server ----------------------------------------------------------------------------------------------
async def one_over_http(client: Any, messages: list[dict[str, str]], tokens: int) -> tuple[int, float]:
    started = time.perf_counter()
    first = None
    usage = None
    stream = await client.chat.completions.create(
        model="bench",
        messages=messages,
        max_tokens=tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
        if chunk.usage is not None:
            usage = chunk.usage
    assert usage is not None and first is not None
    return usage.completion_tokens, (first - started) * 1000


def over_http(base_url: str, n: int, tokens: int, concurrent: bool) -> Sample:
    import openai

    async def main() -> Sample:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=3600)
        requests = prompts(n)
        started = time.perf_counter()
        if concurrent:
            results = await asyncio.gather(*(one_over_http(client, m, tokens) for m in requests))
        else:
            results = [await one_over_http(client, m, tokens) for m in requests]
        seconds = time.perf_counter() - started
        await client.close()
        return Sample(seconds, sum(r[0] for r in results), [r[1] for r in results])

    return asyncio.run(main())


# -- the table -------------------------------------------------------------------------------------------------------
def measure(
    model: str, streams: list[int], tokens: int, paths: list[str], log: Callable[[str], None]
) -> list[str]:
    from phi3_aipc.backends import serving_backend
    from phi3_aipc.server import BackgroundServer, ServerConfig, create_app

    # What `phi3-aipc serve --device cpu` runs with no --backend, and the serialising pipeline it replaced.
    engine = get_engine(model_path(model), "cpu", backend=serving_backend("cpu", OPTIONS), options=OPTIONS)
    serial = get_engine(model_path(model), "cpu", backend="openvino", options=SERIAL_OPTIONS)
    params = GenerationParams(max_new_tokens=tokens, ignore_eos=True)
    for warm in (engine, serial):
        one_in_process(warm, prompts(1)[0], params)  # compile and warm up
    rows = []
    with (
        BackgroundServer(create_app(engine, ServerConfig(model_id="bench"))) as server,
        BackgroundServer(create_app(serial, ServerConfig(model_id="bench"))) as serial_server,
    ):
        runners: dict[str, tuple[Callable[[int, bool], Sample], Callable[[int], Sample]]] = {
            "in-process": (
                lambda n, c: in_process(engine, n, params, c),
                lambda n: in_process(serial, n, params, False),
            ),
            "server": (
                lambda n, c: over_http(server.base_url, n, tokens, c),
                lambda n: over_http(serial_server.base_url, n, tokens, False),
            ),
        }
        for path in paths:
            batched, one_at_a_time = runners[path]
            lone = batched(1, False)
            for n in streams:
                sequential = lone if n == 1 else batched(n, False)
                concurrent = lone if n == 1 else batched(n, True)
                before = one_at_a_time(n)
                row = (
                    f"| {model} | {path} | {n} | {before.tokens_per_second:.1f} | {sequential.tokens_per_second:.1f} | "
                    f"{concurrent.tokens_per_second:.1f} | {concurrent.tokens_per_second / before.tokens_per_second:.2f}x | "
                    f"{concurrent.tokens_per_second / sequential.tokens_per_second:.2f}x | "
                    f"{statistics.median(lone.ttfts_ms):.0f} | {statistics.median(concurrent.ttfts_ms):.0f} / "
                    f"{max(concurrent.ttfts_ms):.0f} |"
                )
                log(row)
                rows.append(row)
    return rows


def describe_machine() -> str:
    m = machine_info()
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return (
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['memory_gib']} GiB RAM, load average "
        f"{m['load_average']} at the start\nDate: {m['date']}\nVersions: {versions}"
    )


HEADER = (
    "| model | path | streams | one at a time (openvino) tok/s | sequential (batching) tok/s | concurrent tok/s | "
    "speed-up vs openvino | vs sequential | lone TTFT ms | concurrent TTFT ms (median / max) |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["smollm2", "phi-3-mini"])
    parser.add_argument("--streams", nargs="+", type=int, default=[1, 4, 8, 16])
    parser.add_argument("--tokens", type=int, default=32, help="New tokens per request (forced).")
    parser.add_argument(
        "--paths", nargs="+", default=["in-process", "server"], choices=["in-process", "server"]
    )
    parser.add_argument("--out", type=Path, default=None, help="Also write the table here (Markdown).")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, flush=True)

    print(describe_machine(), file=sys.stderr)
    log(HEADER)
    rows = []
    for model in args.models:
        rows += measure(model, args.streams, args.tokens, args.paths, log)
    if args.out is not None:
        args.out.write_text(
            f"{describe_machine()}\n\nForced {args.tokens} new tokens a request, greedy, OpenVINO GenAI continuous "
            f"batching on the CPU, prefix caching off.\n\n{HEADER}\n" + "\n".join(rows) + "\n",
            encoding="utf-8",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
