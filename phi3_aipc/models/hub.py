"""Fetching from the Hugging Face Hub through huggingface_hub, into its own cache, at a chosen revision."""

from __future__ import annotations

import re
from pathlib import Path

from phi3_aipc.errors import ModelNotFoundError

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def is_repo_id(model: str) -> bool:
    return bool(_REPO_ID.match(model))


def _hub_cache() -> str:
    """Where huggingface_hub keeps downloads on this machine (HF_HUB_CACHE / HF_HOME decide it)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def fetch(repo_id: str, *, subfolder: str | None = None, revision: str | None = None, what: str = "") -> Path:
    """The repo's local snapshot (at ``revision``: a branch, tag or commit), from the cache or downloaded into it.

    The cache is tried first without touching the network, so offline use of a cached model just works.
    """
    from huggingface_hub import snapshot_download

    patterns = [f"{subfolder}/*"] if subfolder else None
    target = (
        repo_id
        + (f" (subfolder {subfolder})" if subfolder else "")
        + (f" at revision {revision}" if revision else "")
    )
    include = f" --include '{subfolder}/*'" if subfolder else ""
    at = f" --revision {revision}" if revision else ""
    how = (
        f"Download it once on a connected machine with `hf download {repo_id}{include}{at}` (the `hf` command "
        f"comes with huggingface_hub), then copy that machine's Hugging Face cache to {_hub_cache()} here (or "
        f"set HF_HUB_CACHE to where it is); or pass a local model path instead."
    )
    try:
        root = snapshot_download(repo_id, revision=revision, allow_patterns=patterns, local_files_only=True)
    except Exception:  # noqa: BLE001 - any miss (not cached, offline, unknown revision) means: try the network
        root = None
    if root is None or (subfolder and not (Path(root) / subfolder).is_dir()):
        try:
            root = snapshot_download(repo_id, revision=revision, allow_patterns=patterns)
        except Exception as exc:
            raise ModelNotFoundError(
                f"Could not find {what or 'the model'} '{target}' in the Hugging Face cache, and downloading it "
                f"failed ({type(exc).__name__}: {exc}). {how}"
            ) from exc
    path = Path(root) / subfolder if subfolder else Path(root)
    if not path.is_dir():
        # Offline, snapshot_download returns the cached snapshot even when the subfolder was never downloaded.
        raise ModelNotFoundError(
            f"Could not find {what or 'the model'} '{target}' in the Hugging Face cache. {how}"
        )
    return path
