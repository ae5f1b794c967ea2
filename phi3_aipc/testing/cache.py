"""Built models cached by name: built once into a temporary sibling, then renamed into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cached_model_dir(cache_root: Path, name: str, builder: Callable[[Path], Path]) -> Path:
    """Return ``cache_root/name``, building it with ``builder`` the first time.

    The build goes to a temporary sibling that is renamed into place, so an interrupted build never leaves a
    half-written folder that later runs would trust.
    """
    cache_root = Path(cache_root)
    target = cache_root / name
    if target.is_dir():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_root))
    try:
        builder(staging)
        try:
            os.rename(staging, target)
        except OSError:
            # Another process finished the same build first: keep theirs.
            if not target.is_dir():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
