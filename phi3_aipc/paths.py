"""Where phi3-aipc keeps compiled models and exports: the user cache directory, overridable by PHI3_AIPC_CACHE."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from phi3_aipc.errors import CacheNotWritableError

log = logging.getLogger(__name__)

CACHE_ENV = "PHI3_AIPC_CACHE"


def cache_root() -> Path:
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("phi3-aipc", appauthor=False))


def writable_cache_dir(*parts: str) -> Path:
    """``cache_root()/parts``, created; a directory that cannot be written is an error saying how to move it."""
    path = cache_root().joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
        # mkdir succeeds on an existing read-only folder: probe that a file can really be made there.
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise CacheNotWritableError(
            f"phi3-aipc cannot write its cache directory '{path}' ({exc.strerror or exc}). Point it at a writable "
            f"folder with the {CACHE_ENV} environment variable (e.g. {CACHE_ENV}=~/phi3-aipc-cache), or make "
            f"'{cache_root()}' writable."
        ) from exc
    return path


def compile_cache_dir(backend: str, device: str) -> Path | None:
    """A per-backend, per-device folder for compiled blobs, so a second load skips compilation.

    None when the cache cannot be written: the model still loads, it just compiles again next time.
    """
    try:
        return writable_cache_dir("compiled", backend, device.lower())
    except CacheNotWritableError as exc:
        log.warning("%s Loading without a compile cache.", exc)
        return None
