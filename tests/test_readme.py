"""The README runs as written, offline: its `phi3-aipc` lines and its Python quickstarts, on the packaged SmolLM2.

The CLI lines run in this process through ``phi3_aipc.cli.main`` (so they share loaded engines with the rest of the
suite); `bench` spawns its own workers. `doctor --check` runs in tests/cli/test_doctor_check.py, from the README's
own line. `export` needs the Hub and is only checked for its form. The Python quickstarts run as written in
tests/langchain_adapter/test_examples_langchain.py and tests/llama_index_adapter/test_examples_llamaindex.py.
"""

from __future__ import annotations

import io
import re
import shlex
import sys
from pathlib import Path

import pytest

from phi3_aipc.cli import COMMANDS, main

pytestmark = [pytest.mark.smollm2, pytest.mark.slow]
pytest.importorskip("openvino_genai")

README = Path(__file__).resolve().parents[1] / "README.md"
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
