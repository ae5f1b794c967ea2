"""Summary statistics of repeated runs, and the peak memory of the measuring process."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


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
        pass  # not Linux: the fallbacks below
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
