"""A description of the machine a benchmark ran on: CPU, memory, OS, load, and the versions that matter."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from pathlib import Path
from typing import Any

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


def machine_info() -> dict[str, Any]:
    return {
        "cpu": _cpu_name(),
        "logical_cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        # The machine may be shared: the load average says how busy it was when the run started.
        "load_average": _load_average(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    """Installed versions only: the metadata is read, nothing is imported."""
    versions = {}
    for package in _VERSION_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _memory_gib() -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    return round(psutil.virtual_memory().total / 2**30, 1)


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
        pass  # not Linux: platform's answer below
    return platform.processor() or platform.machine()
