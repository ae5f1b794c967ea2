"""A first-use encoder export shows one progress bar; the exporters' chatter (transformers' load report, torch's
tracer warnings, "No CUDA runtime is found") goes to a log file the message names. A real export, in a fresh
process and an empty cache, as a user's first RAG run does it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXPORT = (
    "import sys\n"
    "from phi3_aipc.embeddings import get_rerank_engine\n"
    "engine = get_rerank_engine(sys.argv[1], 'cpu')\n"
    "print('scores', engine.rerank('a query', ['one text', 'another text']))\n"
)


def test_a_first_export_prints_one_bar_and_logs_the_rest(tiny_cross_encoder_hf: Path, tmp_path: Path) -> None:
    pytest.importorskip("optimum.intel")
    env = {**os.environ, "PHI3_AIPC_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", EXPORT, str(tiny_cross_encoder_hf)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("scores"), done.stdout
    lines = [line.strip() for line in re.split(r"[\r\n]+", done.stderr) if line.strip()]
    # Our one message, then the bar's frames (tqdm redraws one line with \r): nothing else.
    assert all(line.startswith("Exporting ") for line in lines), lines
    assert any("100%" in line and "2/2" in line for line in lines), lines
    log = Path(re.search(r"own output goes to (\S+)\.$", lines[0], re.M).group(1))
    assert log.is_file() and log.stat().st_size > 0, log  # the exporters did say something, into the log
