"""Where phi3-aipc keeps compiled models and exports: the user cache directory, overridable by PHI3_AIPC_CACHE."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    override = os.environ.get("PHI3_AIPC_CACHE")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("phi3-aipc", appauthor=False))


def compile_cache_dir(backend: str, device: str) -> Path:
    """A per-backend, per-device folder for compiled blobs, so a second load skips compilation."""
    path = cache_root() / "compiled" / backend / device.lower()
    path.mkdir(parents=True, exist_ok=True)
    return path
