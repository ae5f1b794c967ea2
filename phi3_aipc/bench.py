"""Benchmarks with the metrics Intel's published tables use, for any backend, optionally through our wrappers.

Method (what every number means):

- Each target (model, device, backend, options) runs in **its own worker processes**, so peak memory and load
  times belong to that target alone and one backend's libraries never slow another's.
- **Cold load**: ``get_engine`` in a fresh process with an empty phi3-aipc cache (a new temporary
  ``PHI3_AIPC_CACHE``, so nothing compiled is reused). The model files may still be in the OS page cache.
- **Warm load**: ``get_engine`` in a second fresh process that reuses that cache (OpenVINO's compiled blobs).
  Importing the backend's library is measured apart (``import_ms``) and excluded from both.
- Generation: chat prompts of exactly ``input_tokens`` tokens (counted with the engine's own tokenizer on the
  formatted prompt; capped by the NPU's MAX_PROMPT_LEN), ``output_tokens`` new tokens forced past EOS, greedy.
  One discarded warm-up run, then ``runs`` measured runs, each with a different prompt so that prefix caching
  cannot shorten the prefill.
- **TTFT** and **TPOT** come from the backend's own timings (OpenVINO GenAI's PerfMetrics; the transformers
  backend's per-token times). TTFT counts from the start of generation, tokenization included; TPOT is the mean
  gap between tokens, the first excluded. **Decode tokens/s** = 1000 / TPOT.
  **End-to-end tokens/s** = generated tokens / wall time of the whole stream (``time.perf_counter`` around it).
- **Peak RSS**: the measuring process's peak resident memory (``getrusage``; psutil on Windows).
- ``through``: the same generation through LangChain's ``ChatPhi3AIPC.stream`` or LlamaIndex's ``stream_chat``,
  interleaved with raw-engine runs on the same engine. Reported: the tokens/s ratio (wrapper / raw engine, end to
  end) and the extra delay to the first visible chunk (wrapper minus raw engine), both measured with
  ``perf_counter`` from the call to the first non-empty chunk.

No framework is imported at module import time; the wrappers are imported only when ``through`` asks for them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from phi3_aipc.errors import InvalidParameterError, Phi3AIPCError

THROUGH_CHOICES = ("langchain", "llamaindex")
# Filler the prompts are made of: short common words, mostly one token each in any BPE vocabulary.
_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "small",
    "birds",
    "sing",
    "in",
    "tall",
    "green",
    "trees",
    "near",
    "the",
    "old",
    "stone",
    "bridge",
    "and",
    "children",
    "play",
    "by",
    "the",
    "river",
    "on",
    "a",
    "warm",
    "summer",
    "day",
]
_VERSION_PACKAGES = (
    "openvino",
    "openvino-genai",
    "onnxruntime-genai",
    "optimum-intel",
    "transformers",
    "torch",
    "langchain-core",
    "llama-index-core",
)


@dataclass(frozen=True)
class Target:
    """One thing to measure: a model on a device through a backend, with its options."""

    model: str
    device: str = "cpu"
    backend: str = "openvino"
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        extra = "".join(f" {k}={v}" for k, v in sorted(self.options.items()) if k != "CACHE_DIR")
        return f"{self.backend} {self.device}{extra}"


@dataclass(frozen=True)
class Settings:
    runs: int = 3
    input_tokens: tuple[int, ...] = (32, 1024)
    output_tokens: int = 128
    through: tuple[str, ...] = ()
    warmup: int = 1
    cold: bool = True

    def __post_init__(self) -> None:
        if self.runs < 1 or self.warmup < 0 or self.output_tokens < 2:
            raise InvalidParameterError(
                "runs must be at least 1, warmup at least 0 and output_tokens at least 2 (TPOT needs two tokens)."
            )
        if not self.input_tokens or min(self.input_tokens) < 8:
            raise InvalidParameterError(
                "input_tokens must list lengths of at least 8 tokens (the chat template)."
            )
        unknown = set(self.through) - set(THROUGH_CHOICES)
        if unknown:
            raise InvalidParameterError(f"through must be among {THROUGH_CHOICES}, got {sorted(unknown)}.")


# -- statistics ----------------------------------------------------------------------------------------------------
def summary(values: Sequence[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (0 for a single run), with the values themselves."""
    values = [float(v) for v in values]
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def peak_rss_mb() -> float | None:
    """This process's peak resident set size, in MiB.

    On Linux, VmHWM of /proc/self/status: getrusage's ru_maxrss is carried across fork and exec, so a worker
    started by a big parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None and hasattr(psutil.Process().memory_info(), "peak_wset"):  # Windows
        return psutil.Process().memory_info().peak_wset / 2**20
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # macOS reports bytes, others KiB


# -- prompts -------------------------------------------------------------------------------------------------------
def exact_prompt(engine: Any, tokens: int, variant: int = 0) -> str:
    """A raw prompt (no chat template, as Intel's llm_bench feeds it) of exactly ``tokens`` tokens for ``engine``.

    ``variant`` rotates the filler so that each run's prompt differs from its first words on (prefix caching
    would otherwise make repeated prompts look fast).
    """
    return _exact(engine.count_tokens, lambda text: text, tokens, variant)


def exact_chat(engine: Any, tokens: int, variant: int = 0) -> list[dict[str, str]]:
    """One user message whose chat-formatted prompt is exactly ``tokens`` tokens, or the template's length plus
    a few words when the template alone is longer (SmolLM2's adds a 30-token system prompt)."""

    def messages(text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": text}]

    def length(text: str) -> int:
        return engine.count_tokens(engine.format_chat(messages(text)))

    floor = length(_filler(variant, 8))
    return messages(_exact(length, lambda text: text, max(tokens, floor), variant))


def _filler(variant: int, count: int, tail: int = 0) -> str:
    shift = variant % len(_WORDS)
    words = _WORDS[shift:] + _WORDS[:shift]
    body = " ".join(words[i % len(words)] for i in range(count))
    return f"Run {variant}: {body}" + " the" * tail


def _exact(length: Callable[[str], int], wrap: Callable[[str], Any], tokens: int, variant: int) -> Any:
    if length(_filler(variant, 0)) > tokens:
        raise InvalidParameterError(
            f"Cannot build a prompt as short as {tokens} tokens; ask for a longer one."
        )
    low, high = 0, max(tokens, 1)
    while low < high:  # the most filler words that still fit
        mid = (low + high + 1) // 2
        if length(_filler(variant, mid)) <= tokens:
            low = mid
        else:
            high = mid - 1
    for tail in range(8):  # top up one token at a time
        text = _filler(variant, low, tail)
        got = length(text)
        if got == tokens:
            return wrap(text)
        if got > tokens:
            break
    raise InvalidParameterError(f"Could not build a prompt of exactly {tokens} tokens with this tokenizer.")


def effective_input_tokens(engine: Any, wanted: int, output_tokens: int) -> int:
    """``wanted``, capped by the NPU's MAX_PROMPT_LEN and by the context window minus the output."""
    limits = [wanted]
    if engine.max_prompt_tokens is not None:
        limits.append(int(engine.max_prompt_tokens))
    if engine.context_window is not None:
        limits.append(int(engine.context_window) - output_tokens)
    return min(limits)


# -- timing one stream ---------------------------------------------------------------------------------------------
@dataclass
class StreamTiming:
    first_chunk_ms: float | None
    wall_ms: float
    chunks: int


def time_stream(start: Callable[[], Iterator[Any]], text_of: Callable[[Any], str] = str) -> StreamTiming:
    """perf_counter from the call that starts the stream to its first non-empty chunk and to its end."""
    started = time.perf_counter()
    first: float | None = None
    chunks = 0
    for chunk in start():
        if first is None and text_of(chunk):
            first = time.perf_counter()
        chunks += 1
    ended = time.perf_counter()
    return StreamTiming(None if first is None else (first - started) * 1000, (ended - started) * 1000, chunks)


def _raw_run(engine: Any, messages: list[dict[str, str]], params: Any) -> tuple[StreamTiming, Any]:
    opened: list[Any] = []

    def start() -> Any:
        # Opened inside the timed call: the worker thread starts generating at once, and a backend that holds
        # the GIL while it prefills (ONNX Runtime GenAI) would otherwise hide its prefill from the clock.
        opened.append(engine.stream(messages, params))
        return opened[0]

    timing = time_stream(start)
    return timing, opened[0].result


# -- wrappers (imported lazily) ------------------------------------------------------------------------------------
WrapperRun = Callable[[list[dict[str, str]]], tuple[StreamTiming, int]]


@contextlib.contextmanager
def forced_length(engine: Any, output_tokens: int) -> Iterator[list[Any]]:
    """Make every stream the wrappers open on ``engine`` decode exactly ``output_tokens`` tokens past EOS.

    The wrappers expose no ignore_eos (users never need it), so the shared engine's ``stream`` is shadowed for the
    duration: everything the wrapper does (message conversion, parsing, chunk building, callbacks) still runs and
    is measured. The streams opened are collected so their token counts can be read afterwards.
    """
    from phi3_aipc.engine import Engine
    from phi3_aipc.params import GenerationParams

    opened: list[Any] = []

    def stream(prompt: Any, params: Any = None, **kwargs: Any) -> Any:
        params = dataclasses.replace(
            params or GenerationParams(), max_new_tokens=output_tokens, ignore_eos=True
        )
        opened.append(Engine.stream(engine, prompt, params, **kwargs))
        return opened[-1]

    engine.stream = stream
    try:
        yield opened
    finally:
        del engine.stream


def wrapper_runner(kind: str, target: Target, engine: Any, output_tokens: int) -> WrapperRun:
    """A function that streams chat messages through the framework wrapper on ``engine`` and times it."""
    common = {
        "model": target.model,
        "device": target.device,
        "backend": target.backend,
        "options": target.options,
    }
    if kind == "langchain":
        from langchain_phi3_aipc import ChatPhi3AIPC

        chat_model = ChatPhi3AIPC(**common, max_tokens=output_tokens)

        def start(messages: list[dict[str, str]]) -> Iterator[Any]:
            return chat_model.stream([(m["role"], m["content"]) for m in messages])

        def text_of(chunk: Any) -> str:
            return chunk.content
    elif kind == "llamaindex":
        from llama_index.core.llms import ChatMessage

        from llama_index_phi3_aipc import Phi3AIPC

        llm = Phi3AIPC(**common, max_new_tokens=output_tokens)

        def start(messages: list[dict[str, str]]) -> Iterator[Any]:
            return llm.stream_chat([ChatMessage(role=m["role"], content=m["content"]) for m in messages])

        def text_of(chunk: Any) -> str:
            return chunk.delta or ""
    else:
        raise InvalidParameterError(f"through must be one of {THROUGH_CHOICES}, got {kind!r}.")

    def run(messages: list[dict[str, str]]) -> tuple[StreamTiming, int]:
        with forced_length(engine, output_tokens) as opened:
            timing = time_stream(lambda: start(messages), text_of)
        if len(opened) != 1 or opened[0].result is None:
            raise Phi3AIPCError(f"The {kind} wrapper did not run exactly one engine stream to its end.")
        return timing, opened[0].result.completion_tokens

    return run


# -- the measuring worker ------------------------------------------------------------------------------------------
def _import_backend(backend: str) -> float:
    from phi3_aipc.backends import backend_class

    started = time.perf_counter()
    backend_class(backend)  # imports the backend's library and module, outside the load timing
    return (time.perf_counter() - started) * 1000


def _load(target: Target) -> tuple[Any, dict[str, float | None]]:
    from phi3_aipc.engine import get_engine

    import_ms = _import_backend(target.backend)
    started = time.perf_counter()
    engine = get_engine(target.model, target.device, target.backend, target.options)
    load_ms = (time.perf_counter() - started) * 1000
    return engine, {"import_ms": import_ms, "load_ms": load_ms, "backend_load_ms": engine.load_ms}


def measure_load(target: Target) -> dict[str, Any]:
    """Worker mode 'load': load once and report (the cold-load process)."""
    _, load = _load(target)
    return {"load": load, "peak_rss_mb": peak_rss_mb()}


def measure(target: Target, settings: Settings) -> dict[str, Any]:
    """Worker mode 'measure': load (warm), then every input length, raw and through the wrappers."""
    from phi3_aipc.params import GenerationParams

    engine, load = _load(target)
    params = GenerationParams(max_new_tokens=settings.output_tokens, ignore_eos=True)
    wrappers = {
        kind: wrapper_runner(kind, target, engine, settings.output_tokens) for kind in settings.through
    }
    inputs = [_measure_length(engine, wanted, settings, params, wrappers) for wanted in settings.input_tokens]
    return {
        "load": load,
        "engine": {"model": engine.model_name, "device": engine.device, "backend": engine.backend_name},
        "inputs": inputs,
        "peak_rss_mb": peak_rss_mb(),
    }


def _measure_length(
    engine: Any,
    wanted: int,
    settings: Settings,
    params: Any,
    wrappers: dict[str, WrapperRun],
) -> dict[str, Any]:
    tokens = effective_input_tokens(engine, wanted, settings.output_tokens)
    total = settings.warmup + settings.runs
    raw: list[tuple[StreamTiming, Any]] = []
    for run in range(total):
        timing = _raw_run(engine, exact_prompt(engine, tokens, variant=run), params)
        if run >= settings.warmup:
            raw.append(timing)
    entry = _raw_summary(wanted, tokens, raw)
    if wrappers:
        entry["through"] = _measure_wrappers(engine, tokens, settings, params, wrappers)
    return entry


def _measure_wrappers(
    engine: Any,
    tokens: int,
    settings: Settings,
    params: Any,
    wrappers: dict[str, WrapperRun],
) -> dict[str, Any]:
    """Wrappers take chat messages, so the raw engine is measured again on chat messages, interleaved with the
    wrapper runs; every run gets a prompt of its own so none gains from prefix caching."""
    total = settings.warmup + settings.runs
    out = {}
    for index, (kind, streamer) in enumerate(wrappers.items(), start=1):
        raw: list[tuple[StreamTiming, Any]] = []
        wrapped: list[tuple[StreamTiming, int]] = []
        for run in range(total):
            base = 1000 * index + 2 * run
            raw_timing = _raw_run(engine, exact_chat(engine, tokens, variant=base), params)
            wrapped_timing = streamer(exact_chat(engine, tokens, variant=base + 1))
            if run >= settings.warmup:
                raw.append(raw_timing)
                wrapped.append(wrapped_timing)
        out[kind] = _wrapper_summary(wrapped, raw)
    return out


def _raw_summary(wanted: int, tokens: int, raw: list[tuple[StreamTiming, Any]]) -> dict[str, Any]:
    results = [result for _, result in raw]
    tpot = [r.timings.tpot_ms for r in results]
    if any(t is None or t <= 0 for t in tpot):
        raise Phi3AIPCError(
            "The backend reported no time per output token; it generated fewer than two tokens."
        )
    completion = [r.completion_tokens for r in results]
    return {
        "input_tokens_requested": wanted,
        "input_tokens": tokens,
        "prompt_tokens": [r.prompt_tokens for r in results],
        "output_tokens": completion,
        "runs": len(results),
        "ttft_ms": summary([r.timings.ttft_ms for r in results]),
        "tpot_ms": summary(tpot),
        "decode_tokens_per_s": summary([1000.0 / t for t in tpot]),
        "e2e_ms": summary([t.wall_ms for t, _ in raw]),
        "e2e_tokens_per_s": summary(
            [n * 1000.0 / t.wall_ms for (t, _), n in zip(raw, completion, strict=True)]
        ),
        "first_chunk_ms": summary([t.first_chunk_ms or t.wall_ms for t, _ in raw]),
    }


def _wrapper_summary(
    runs: list[tuple[StreamTiming, int]], raw: list[tuple[StreamTiming, Any]]
) -> dict[str, Any]:
    raw_rate = statistics.fmean(n.completion_tokens * 1000.0 / t.wall_ms for t, n in raw)
    rate = summary([tokens * 1000.0 / t.wall_ms for t, tokens in runs])
    first = summary([t.first_chunk_ms or t.wall_ms for t, _ in runs])
    raw_first = statistics.fmean(t.first_chunk_ms or t.wall_ms for t, _ in raw)
    return {
        "raw_e2e_tokens_per_s": summary([n.completion_tokens * 1000.0 / t.wall_ms for t, n in raw]),
        "raw_first_chunk_ms": summary([t.first_chunk_ms or t.wall_ms for t, _ in raw]),
        "e2e_tokens_per_s": rate,
        "first_chunk_ms": first,
        "output_tokens": [tokens for _, tokens in runs],
        "chunks": [t.chunks for t, _ in runs],
        "tokens_per_s_ratio": rate["mean"] / raw_rate,
        "first_chunk_extra_ms": first["mean"] - raw_first,
    }


# -- orchestration -------------------------------------------------------------------------------------------------
def run_benchmark(
    targets: Sequence[Target], settings: Settings, *, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Measure every target, each in fresh worker processes; one failing target is reported, not fatal."""
    machine = machine_info()  # taken first: its load average describes the start of the run
    results = []
    for target in targets:
        log(f"== {target.name} ({target.model})")
        results.append(_run_target(target, settings, log))
    return {"machine": machine, "settings": asdict(settings), "results": results}


def _run_target(target: Target, settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    entry: dict[str, Any] = {"target": asdict(target), "name": target.name}
    with tempfile.TemporaryDirectory(prefix="phi3-aipc-bench-") as cache:
        try:
            if settings.cold:
                log("   cold load (fresh process, empty cache)...")
                cold = _spawn("load", target, settings, cache)
                entry["cold_load_ms"] = cold["load"]["load_ms"]
                entry["cold_peak_rss_mb"] = cold["peak_rss_mb"]
            log("   warm load and generation (fresh process, cache from the cold load)...")
            measured = _spawn("measure", target, settings, cache)
        except Phi3AIPCError as exc:
            log(f"   FAILED: {exc}")
            entry["error"] = str(exc)
            return entry
    entry["warm_load_ms"] = measured["load"]["load_ms"]
    entry["import_ms"] = measured["load"]["import_ms"]
    entry.update({k: measured[k] for k in ("engine", "inputs", "peak_rss_mb")})
    return entry


def _spawn(mode: str, target: Target, settings: Settings, cache: str) -> dict[str, Any]:
    env = dict(os.environ, PHI3_AIPC_CACHE=cache)
    with tempfile.TemporaryDirectory(prefix="phi3-aipc-bench-out-") as out:
        out_file = Path(out) / "result.json"
        job = {"mode": mode, "target": asdict(target), "settings": asdict(settings), "out": str(out_file)}
        proc = subprocess.run(
            [sys.executable, "-m", "phi3_aipc.bench"],
            input=json.dumps(job),
            text=True,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        if out_file.exists():
            payload = json.loads(out_file.read_text())
            if "error" not in payload:
                return payload
            raise Phi3AIPCError(payload["error"])
        tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
        raise Phi3AIPCError(f"The benchmark worker exited with status {proc.returncode}:\n{tail}")


def _worker_main() -> int:
    job = json.loads(sys.stdin.read())
    target = Target(**job["target"])
    settings_dict = dict(job["settings"])
    settings_dict["input_tokens"] = tuple(settings_dict["input_tokens"])
    settings_dict["through"] = tuple(settings_dict["through"])
    settings = Settings(**settings_dict)
    out = Path(job["out"])
    try:
        payload = measure_load(target) if job["mode"] == "load" else measure(target, settings)
    except Exception as exc:  # reported to the parent with its type, which prints it
        payload = {"error": f"{type(exc).__name__}: {exc}"}
        out.write_text(json.dumps(payload))
        raise
    out.write_text(json.dumps(payload))
    return 0


# -- machine description and output --------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    versions = {}
    for package in _VERSION_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        import psutil

        memory_gib = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        memory_gib = None
    return {
        "cpu": _cpu_name(),
        "logical_cpus": os.cpu_count(),
        "memory_gib": memory_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        # The machine may be shared: the load average says how busy it was when the run started.
        "load_average": _load_average(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "versions": versions,
    }


def _load_average() -> str | None:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except (AttributeError, OSError):  # Windows
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _pm(stat: dict[str, Any] | None, digits: int = 1) -> str:
    if not stat:
        return "-"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _seconds(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f}"


def format_table(report: dict[str, Any]) -> str:
    """A Markdown table: one row per target and input length, then the wrapper comparison if measured."""
    lines = [
        "| target | in | out | TTFT ms | TPOT ms | decode tok/s | e2e tok/s | cold load s | warm load s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    wrapper_lines: list[str] = []
    for entry in report["results"]:
        if "error" in entry:
            lines.append(f"| {entry['name']} | failed: {entry['error'].splitlines()[0][:120]} |||||||||")
            continue
        for row in entry["inputs"]:
            rss = entry.get("peak_rss_mb")
            lines.append(
                f"| {entry['name']} | {row['input_tokens']} | {row['output_tokens'][0]} | {_pm(row['ttft_ms'], 0)} "
                f"| {_pm(row['tpot_ms'])} | {_pm(row['decode_tokens_per_s'])} | {_pm(row['e2e_tokens_per_s'])} "
                f"| {_seconds(entry.get('cold_load_ms'))} | {_seconds(entry.get('warm_load_ms'))} "
                f"| {'-' if rss is None else f'{rss:.0f}'} |"
            )
            for kind, wrap in row.get("through", {}).items():
                wrapper_lines.append(
                    f"| {entry['name']} | {kind} | {row['input_tokens']} | {_pm(wrap['raw_e2e_tokens_per_s'])} "
                    f"| {_pm(wrap['e2e_tokens_per_s'])} | {wrap['tokens_per_s_ratio']:.3f} "
                    f"| {_pm(wrap['raw_first_chunk_ms'])} | {_pm(wrap['first_chunk_ms'])} "
                    f"| {wrap['first_chunk_extra_ms']:+.2f} |"
                )
    if wrapper_lines:
        lines += [
            "",
            "| target | through | in | raw e2e tok/s | wrapper e2e tok/s | ratio (goal ≥ 0.98) | raw first chunk ms "
            "| wrapper first chunk ms | extra ms (goal ≤ 5) |",
            "|---|---|---|---|---|---|---|---|---|",
            *wrapper_lines,
        ]
    return "\n".join(lines)


def format_machine(report: dict[str, Any]) -> str:
    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    s = report["settings"]
    return (
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['memory_gib']} GiB RAM, {m['os']}, "
        f"Python {m['python']}\nDate: {m['date']}\nVersions: {versions}\n"
        f"Method: {s['runs']} run(s) after {s['warmup']} discarded warm-up, mean ± std; {s['output_tokens']} output "
        f"tokens forced past EOS, greedy."
    )


NPU_ONLY_OPTIONS = ("NPUW_", "MAX_PROMPT_LEN", "MIN_RESPONSE_LEN", "GENERATE_HINT")


def options_for(device: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options that apply to ``device``: NPU pipeline options go to NPU targets only, so one command can
    compare ``--device cpu npu -o NPUW_DEVICES=CPU``."""
    if device.strip().upper().startswith("NPU"):
        return dict(options)
    return {k: v for k, v in options.items() if not str(k).upper().startswith(NPU_ONLY_OPTIONS)}


def parse_target_args(args: argparse.Namespace) -> list[Target]:
    """Every (device, backend) pair from the CLI, in the order given."""
    from phi3_aipc.cli.common import parse_options

    options = parse_options(args.option)
    backends = args.backend or ["openvino"]
    return [
        Target(args.model, device, backend, options_for(device, options))
        for backend in backends
        for device in args.device
    ]


if __name__ == "__main__":
    sys.exit(_worker_main())
