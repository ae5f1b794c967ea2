"""The worker process protocol: the parent sends a job as JSON on stdin, the worker writes its result to a file.

One worker measures one target in one mode ('load': the cold load; 'measure': warm load and generation), so load
times and peak memory belong to that target alone. Run as ``python -m phi3_aipc.bench.worker``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from phi3_aipc.bench.targets import Settings, Target
from phi3_aipc.errors import Phi3AIPCError

Mode = Literal["load", "measure"]
# Lines of a crashed worker's output quoted in the error.
_TAIL_LINES = 15


def spawn(mode: Mode, target: Target, settings: Settings, cache: str) -> dict[str, Any]:
    """Run one job in a fresh worker whose phi3-aipc cache is ``cache``; its result, or Phi3AIPCError."""
    env = dict(os.environ, PHI3_AIPC_CACHE=cache)
    with tempfile.TemporaryDirectory(prefix="phi3-aipc-bench-out-") as out:
        out_file = Path(out) / "result.json"
        job = {"mode": mode, "target": asdict(target), "settings": asdict(settings), "out": str(out_file)}
        proc = subprocess.run(
            [sys.executable, "-m", "phi3_aipc.bench.worker"],
            input=json.dumps(job),
            text=True,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        if out_file.exists():
            payload = json.loads(out_file.read_text())
            if "error" in payload:
                raise Phi3AIPCError(payload["error"])
            return payload
    tail = "\n".join(proc.stdout.strip().splitlines()[-_TAIL_LINES:])
    raise Phi3AIPCError(f"The benchmark worker exited with status {proc.returncode}:\n{tail}")


def read_job(text: str) -> tuple[Mode, Target, Settings, Path]:
    """The job a parent sent: JSON lists come back as the tuples the dataclasses hold."""
    job = json.loads(text)
    settings = dict(job["settings"], input_tokens=tuple(job["settings"]["input_tokens"]))
    return job["mode"], Target(**job["target"]), Settings(**settings), Path(job["out"])


def main() -> int:
    from phi3_aipc.bench.measure import measure, measure_load

    mode, target, settings, out = read_job(sys.stdin.read())
    try:
        payload = measure_load(target) if mode == "load" else measure(target, settings)
    except Exception as exc:  # the parent reports it with its type; re-raised so the traceback is printed too
        out.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        raise
    out.write_text(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
