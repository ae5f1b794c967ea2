"""The README runs as written, offline: its `phi3-aipc` lines and its Python quickstarts, on the packaged SmolLM2.

The CLI lines run in this process through ``phi3_aipc.cli.main`` (so they share loaded engines with the rest of the
suite); `bench` spawns its own workers. `doctor --check` runs in tests/cli/test_doctor_check.py, from the README's
own line. `export` needs the Hub and is only checked for its form. Every Python block runs as pasted: a fresh
interpreter, offline, on the CPU or "auto" (no NPU here), and each must print something.
"""

from __future__ import annotations

import ast
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from phi3_aipc.cli import COMMANDS, main

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]
pytest.importorskip("openvino_genai")

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
OFFLINE_NOT_POSSIBLE = {
    "export",
    "serve",
}  # export downloads a checkpoint; serve runs Phi-3-mini (tests/server)


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), re.S)


def cli_lines() -> list[list[str]]:
    """Every `phi3-aipc ...` line of the README's bash blocks, as argv (the program name and comments dropped)."""
    lines = [line for block in readme_blocks("bash") for line in block.splitlines()]
    return [shlex.split(line, comments=True)[1:] for line in lines if line.startswith("phi3-aipc ")]


def lines_of(command: str) -> list[list[str]]:
    return [argv for argv in cli_lines() if argv[0] == command]


def test_the_readme_shows_every_command_and_nothing_else() -> None:
    assert {argv[0] for argv in cli_lines()} == set(COMMANDS)
    assert len(README.read_text().splitlines()) <= 240, "the README stays short; details go to docs/"


# Small budgets appended to a line that runs the NPU pipeline on the CPU: its engine is then the one the NPU tests of
# tests/models/test_packaged_ir.py loaded (a 1024-token static prompt would compile and prefill for half a minute).
NPU_ON_CPU_BUDGET = ["-o", "MAX_PROMPT_LEN=256", "-o", "MIN_RESPONSE_LEN=64"]


@pytest.mark.parametrize("argv", lines_of("ask"), ids=lambda argv: " ".join(argv[1:5]))
def test_ask_lines_answer(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    budget = NPU_ON_CPU_BUDGET if "NPUW_DEVICES=CPU" in argv else []
    assert main([*argv, *budget, "--max-new-tokens", "16"]) == 0
    out, err = capsys.readouterr()
    assert out.strip(), err
    assert "tokens/s" in err and "finish: " in err
    if "NPUW_DEVICES=CPU" in argv:  # the NPU pipeline executed on the CPU is not reported as an NPU
        assert "NPU pipeline, executed on CPU" in err and "on NPU," not in err, err


def test_the_chat_line_answers_and_exits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (argv,) = lines_of("chat")
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is the capital of France?\n/exit\n"))
    assert main([*argv, "--max-new-tokens", "16"]) == 0
    assert "Paris" in capsys.readouterr().out


def test_the_bench_line_measures(capsys: pytest.CaptureFixture[str]) -> None:
    (argv,) = lines_of("bench")
    # A tiny budget: the CPU target only, without the cold-load process. Each bench worker starts from an empty
    # cache, so every target converts the model again; the NPU pipeline is run by the ask and doctor lines.
    devices = argv.index("--device")
    assert argv[devices + 1 : devices + 3] == ["cpu", "npu"]
    assert main([*argv[: devices + 1], "cpu", *argv[devices + 3 :], "--no-cold"]) == 0
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| openvino ")]
    assert [row.split(" | ")[0] for row in rows] == ["| openvino cpu"]


def test_lines_that_need_the_hub_have_a_known_form() -> None:
    from phi3_aipc.cli import build_parser

    parser = build_parser()
    for command in OFFLINE_NOT_POSSIBLE:
        for argv in lines_of(command):
            assert parser.parse_args(argv).command == command  # it parses: the README's flags exist


def python_blocks() -> dict[str, str]:
    """Every ```python block of the README, keyed by the section (## or ###) it sits in."""
    blocks: dict[str, str] = {}
    for section in re.split(r"\n(?=#{2,3} )", README.read_text()):
        title = section.splitlines()[0].lstrip("# ").strip()
        for i, block in enumerate(re.findall(r"```python\n(.*?)```", section, re.S)):
            blocks[title if i == 0 else f"{title} ({i + 1})"] = block
    return blocks


#: What each block's output must show beyond "something": the answer it exists to demonstrate.
EXPECTED_OUTPUT = {
    "LangChain": ("Paris", "'name': 'get_weather'", "name="),
    "LlamaIndex": ("Paris", "'finish_reason'"),
    "Embeddings and reranking: RAG entirely on the AI PC": ("[",),
}


def test_every_python_block_is_known() -> None:
    assert set(python_blocks()) == set(EXPECTED_OUTPUT)


@pytest.mark.parametrize("title", list(EXPECTED_OUTPUT))
def test_python_block_runs_as_pasted(title: str, tmp_path: Path) -> None:
    """As a user pastes it: its own interpreter, a directory outside the source tree, offline, no NPU options."""
    block = python_blocks()[title]
    code = [line.split("#", 1)[0] for line in block.splitlines()]
    assert not any('"npu"' in line for line in code), "an NPU line in a README block is shown as a comment"
    script = tmp_path / "block.py"
    script.write_text(block)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip(), f"the block printed nothing:\n{done.stderr[-2000:]}"
    for expected in EXPECTED_OUTPUT[title]:
        assert expected in done.stdout, (expected, done.stdout)
    # An answer is an answer: no tool-call or tool-result markup reaches what a block prints.
    assert not re.search(r"</?tool_(call|result|response)>", done.stdout), done.stdout
    if title.startswith("Embeddings"):
        # The query about the logbook is closer to the logbook sentence than to the ferry's timetable.
        logbook, ferry = ast.literal_eval(done.stdout.strip().splitlines()[-1])
        assert logbook > ferry, done.stdout
    if title == "LlamaIndex":
        assert "26" in done.stdout.split("'finish_reason'")[1], done.stdout  # the agent's answer: 6.5 x 4
