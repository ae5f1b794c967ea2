"""Staging folders for the GGUF conversions, and the cleaning of those a killed conversion left behind.

A conversion writes into ``.<target>.partial-XXXX`` (and ``.<target>.hf-XXXX``) beside its target and moves the
result into place; ``finally`` removes them, but a killed process (SIGKILL, a power cut) leaves 90-190 MB each.

Who still writes a folder is told by a lock, not a guess: its owner holds an exclusive lock on the folder's owner
file (``<folder>.owner``, beside it, so that it never moves into the finished export) for as long as it works, and
the operating system drops that lock when the process dies, however it dies. The next conversion removes a staging folder whose lock it can take (its writer is gone) and never one whose
lock is held (another live process, or another thread of this one, is writing it). A folder without an owner file
(made before this rule, or caught in the instant between its creation and its lock) is removed only once nothing in
it has changed for ``UNOWNED_STALE_S``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from phi3_aipc.errors import ExportError

log = logging.getLogger(__name__)

OWNER_SUFFIX = ".owner"
#: The parts of a staging folder's name (see the converters' ``tempfile.mkdtemp`` prefixes).
STAGING_MARKS = (".partial-", ".hf-")
#: An ownerless staging folder untouched for this long is taken for a leftover.
UNOWNED_STALE_S = 24 * 3600


@contextmanager
def staging_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A fresh staging folder in ``parent``, owned (locked) by this process until the block ends, then removed.

    Leftovers of killed conversions in ``parent`` are cleaned first.
    """
    clean_stale_staging(parent)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    owner = _own(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        owner.close()  # before its removal: Windows does not delete an open file
        _owner_file(folder).unlink(missing_ok=True)


def clean_stale_staging(parent: Path) -> list[Path]:
    """Remove the staging folders in ``parent`` whose writer is gone; the removed folders."""
    removed = []
    for folder in _staging_folders(parent):
        if _is_stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                _owner_file(folder).unlink(missing_ok=True)
                removed.append(folder)
                log.warning("Removed %s, left behind by a conversion that did not finish.", folder)
    return removed


def _owner_file(folder: Path) -> Path:
    return folder.with_name(folder.name + OWNER_SUFFIX)


def _staging_folders(parent: Path) -> list[Path]:
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return []
    return [
        e
        for e in entries
        if e.name.startswith(".") and any(m in e.name for m in STAGING_MARKS) and e.is_dir()
    ]


def _is_stale(folder: Path) -> bool:
    owner = _owner_file(folder)
    try:
        handle = owner.open("r+b")
    except FileNotFoundError:
        return time.time() - _newest_change(folder) > UNOWNED_STALE_S
    except OSError:
        return False
    with handle:
        return _try_lock(handle)  # taken: nobody holds it, so its writer is gone (closing the file drops it)


def _own(folder: Path) -> IO[bytes]:
    """Lock a new owner file, then give it its name: a cleaner never sees the name before the lock is held."""
    pending = folder.with_name(f"{folder.name}{OWNER_SUFFIX}.{os.getpid()}")
    handle = pending.open("w+b")
    handle.write(f"{os.getpid()}\n".encode())
    handle.flush()
    if not _try_lock(handle):
        handle.close()
        raise ExportError(
            f"Could not lock {pending}, a file only this process has opened; retry the conversion."
        )
    os.replace(pending, _owner_file(folder))
    return handle


def _try_lock(handle: IO[bytes]) -> bool:
    """An exclusive, non-blocking lock on the open file; False when someone else holds it."""
    try:
        if sys.platform == "win32":
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            # flock, not lockf: a flock lock belongs to the open file, so another thread of this process that
            # opens the file is refused too (lockf locks are per process and would let it in).
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _newest_change(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                newest = max(newest, (Path(root) / name).stat().st_mtime)
            except OSError:
                continue
    return newest
