"""`phi3-aipc serve` as a user starts it: a subprocess on a free loopback port, ready once /health says so."""

from __future__ import annotations

import os
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
