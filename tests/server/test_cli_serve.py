"""`phi3-aipc serve` as a user starts it: a subprocess on a free loopback port, ready once /health says so."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.smollm2

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_command_loads_in_the_background_and_answers(stack: None) -> None:
    import httpx

    port = free_port()
    env = {**os.environ, "PHI3_AIPC_API_KEY": "cli-key", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "phi3_aipc",
        "serve",
        "--model",
        "smollm2",
        "--device",
        "cpu",
        "--port",
        str(port),
    ]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        root = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 300  # a bound on a hang, not a timed assertion
        status = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                status = httpx.get(f"{root}/health").json()["status"]
            except httpx.TransportError:
                status = None
            if status == "ok":
                break
            time.sleep(0.2)
        assert status == "ok", f"server never became ready (exit code {process.poll()})"
        body = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        assert httpx.post(f"{root}/v1/chat/completions", json=body).status_code == 401  # the key from the env
        answer = httpx.post(
            f"{root}/v1/chat/completions", json=body, headers={"Authorization": "Bearer cli-key"}, timeout=120
        )
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "loading smollm2" in stderr and "ready in" in stderr
    # No --backend on the CPU: continuous batching, said once at start and in the ready line.
    assert "continuous batching (openvino-batching)" in stderr and "(openvino-batching)." in stderr


def _serve(port: int, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "phi3_aipc", "serve", "--model", "smollm2", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PHI3_AIPC_API_KEY", None)
    return subprocess.Popen(
        [*command, "--port", str(port), *extra], env=env, stderr=subprocess.PIPE, text=True
    )


def _wait_ready(process: subprocess.Popen, root: str) -> None:
    import httpx

    deadline = time.monotonic() + 300  # a bound on a hang, not a timed assertion
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{root}/health").json()["status"] == "ok":
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"server never became ready (exit code {process.poll()})")


def test_ctrl_c_stops_generation_ends_the_stream_and_exits(stack: None) -> None:
    """Issue 23 item 7: uvicorn alone waits for every running stream to finish (minutes) before it exits."""
    import httpx

    port = free_port()
    process = _serve(port, "--max-tokens-limit", "3000")
    root = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(process, root)
        body = {
            "model": "smollm2",
            "messages": [{"role": "user", "content": "Tell me a very long story."}],
            "max_tokens": 3000,
            "ignore_eos": True,  # would run to 3000 tokens unless the shutdown stops it
            "stream": True,
        }
        events = []
        with httpx.stream("POST", f"{root}/v1/chat/completions", json=body, timeout=600) as response:
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                events.append(line.removeprefix("data: "))
                if len(events) == 5:
                    process.send_signal(signal.SIGINT)
        exit_code = process.wait(timeout=120)  # a bound on a hang, not a timed assertion
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    assert final["error"]["code"] == "server_shutting_down"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[1:-2])
    assert text  # the answer had begun; it was cut, and the client was told so
    assert exit_code in (0, 130, -signal.SIGINT)
