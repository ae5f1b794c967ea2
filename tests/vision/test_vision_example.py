"""examples/vision.py runs as written, offline, on the tiny Qwen2-VL: an image file from disk through LangChain."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_vision_example_answers_about_an_image_file(tiny_qwen2_vl_ov: Path, tmp_path: Path) -> None:
    pytest.importorskip("langchain_core")
    from PIL import Image

    image = tmp_path / "picture.png"
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (56, 84, 3), dtype=np.uint8)).save(
        buffer, "PNG"
    )
    image.write_bytes(buffer.getvalue())
    # The fixture built the model into the test cache; the example finds it there instead of building its own.
    env = {
        **os.environ,
        "PHI3_AIPC_TEST_CACHE": str(tiny_qwen2_vl_ov.parent),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, str(ROOT / "examples" / "vision.py"), str(image), "What is in it?", "--tiny"]
    done = subprocess.run(
        [*command, "--max-tokens", "8"], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *answer, summary = done.stdout.strip().splitlines()
    assert "".join(answer).strip()
    assert summary.startswith("[CPU: ") and "prompt tokens, image included]" in summary
