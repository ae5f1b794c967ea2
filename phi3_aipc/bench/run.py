"""Running a benchmark: every target in its own worker processes, a cold load then a warm load and generation."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from phi3_aipc.bench.machine import machine_info
from phi3_aipc.bench.targets import Settings, Target
from phi3_aipc.bench.worker import spawn
from phi3_aipc.errors import Phi3AIPCError


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
    # A fresh phi3-aipc cache per target: the cold load compiles from scratch, the warm load reuses that.
    with tempfile.TemporaryDirectory(prefix="phi3-aipc-bench-") as cache:
        try:
            if settings.cold:
                log("   cold load (fresh process, empty cache)...")
                cold = spawn("load", target, settings, cache)
                entry["cold_load_ms"] = cold["load"]["load_ms"]
                entry["cold_peak_rss_mb"] = cold["peak_rss_mb"]
            log("   warm load and generation (fresh process, cache from the cold load)...")
            measured = spawn("measure", target, settings, cache)
        except Phi3AIPCError as exc:
            log(f"   FAILED: {exc}")
            entry["error"] = str(exc)
            return entry
    entry["warm_load_ms"] = measured["load"]["load_ms"]
    entry["import_ms"] = measured["load"]["import_ms"]
    entry.update({k: measured[k] for k in ("engine", "inputs", "peak_rss_mb")})
    return entry
