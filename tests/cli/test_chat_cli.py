"""`phi3-aipc chat` driven by a scripted stdin: streaming, history, /reset, trimming to the NPU prompt limit, /exit,
and Ctrl-C stopping one answer without ending the session."""

from __future__ import annotations

import io
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phi3_aipc import GenerationParams, get_engine
from phi3_aipc.cli import main
from phi3_aipc.cli.chat import ChatSession

pytest.importorskip("openvino_genai")

# The NPU's static pipeline executed on the CPU, with a small prompt limit so that a short chat must be trimmed.
NPU_ON_CPU = {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 64, "MIN_RESPONSE_LEN": 32}
NPU_ARGS = [arg for key, value in NPU_ON_CPU.items() for arg in ("-o", f"{key}={value}")]
SENTENCE = "please tell me something about rivers and mountains"


def chat(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], script: str, *args: str) -> str:
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    assert main(["chat", *args]) == 0
    return capsys.readouterr().out


def test_smollm2_streams_keeps_history_resets_and_exits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = "What is the capital of France?\nAnd of Italy?\n/reset\n/nope\n/exit\nNever sent\n"
    out = chat(monkeypatch, capsys, script, "--model", "smollm2", "--device", "cpu", "--max-new-tokens", "24")
    answers = out.split("\n> ")
    assert "Paris" in answers[1]
    # "And of Italy?" only makes sense with the first exchange in the history.
    assert "Rome" in answers[2]
    assert answers[3].startswith("[history cleared]")
    assert answers[4].startswith("[unknown command /nope]")
    assert "Never sent" not in out and len(answers) == 6  # nothing after /exit is read


def test_history_is_trimmed_to_the_npu_prompt_limit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tiny_phi3_ov: Path
) -> None:
    script = "".join(f"{i} {SENTENCE}\n" for i in range(4)) + " ".join([SENTENCE] * 12) + "\nshort again\n"
    args = ["--model", str(tiny_phi3_ov), "--device", "npu", *NPU_ARGS, "--max-new-tokens", "6"]
    out = chat(monkeypatch, capsys, script, *args)
    # The chat turn's own policy (context_overflow="trim"): the oldest exchange goes first.
    assert "[context trimmed: dropped the 2 oldest message(s) (" in out and "to fit 64 prompt tokens" in out
    # A single message over the limit is shortened from the middle (and the older exchanges dropped) to fit.
    assert "and shortened 1 long message(s) by " in out
    assert out.rstrip().count("\n> ") == 6


def test_a_message_that_cannot_fit_is_refused_and_the_session_goes_on(tiny_phi3_ov: Path) -> None:
    engine = get_engine(str(tiny_phi3_ov), "npu", options=NPU_ON_CPU)
    long_system = " ".join([SENTENCE] * 6)
    session = ChatSession(engine, GenerationParams(max_new_tokens=6), system=long_system)
    out = io.StringIO()
    # Both the system message and the question are cut to their minimum and still overflow the 64 tokens.
    assert session.ask(" ".join([SENTENCE] * 6), out) is None
    assert "context_overflow='trim'" in out.getvalue() and session.history == []
    assert session.ask("hi", out) is not None


def test_trim_keeps_whole_exchanges_and_fits(tiny_phi3_ov: Path) -> None:
    engine = get_engine(str(tiny_phi3_ov), "npu", options=NPU_ON_CPU)
    session = ChatSession(engine, GenerationParams(max_new_tokens=6), system="Be brief.")
    for i in range(5):
        session.ask(f"{i} {SENTENCE}", io.StringIO())
        assert session.history[0]["role"] == "user"
        assert session.history[-1]["role"] == "assistant"
        assert session.prompt_tokens() <= 64 + engine.count_tokens(session.history[-1]["content"]) + 8
    assert session.messages()[0] == {"role": "system", "content": "Be brief."}
    assert len(session.history) < 10
    assert session.history[-2]["content"] == f"4 {SENTENCE}"


def _read_until(proc: subprocess.Popen, marker: bytes, seen: bytearray, deadline: float) -> None:
    fd = proc.stdout.fileno()
    while marker not in seen:
        if time.monotonic() > deadline:
            raise AssertionError(f"never saw {marker!r}; output so far: {bytes(seen)!r}")
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(f"chat ended early: {bytes(seen)!r}")
            seen.extend(chunk)


def _read_more(proc: subprocess.Popen, seen: bytearray, count: int, deadline: float) -> None:
    target = len(seen) + count
    while len(seen) < target:
        assert time.monotonic() < deadline, bytes(seen)
        ready, _, _ = select.select([proc.stdout.fileno()], [], [], 1.0)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, f"chat ended early: {bytes(seen)!r}"
            seen.extend(chunk)


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_ctrl_c_stops_the_answer_but_not_the_session() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "phi3_aipc.cli",
            "chat",
            "--model",
            "smollm2",
            "--device",
            "cpu",
            "--max-new-tokens",
            "2000",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # A shell's background job ignores SIGINT, and Python keeps an inherited SIG_IGN (no KeyboardInterrupt):
        # give the chat the terminal's default, as a user's shell does.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = bytearray()
    deadline = time.monotonic() + 240  # a generous bound against a hang, not a speed check
    try:
        _read_until(proc, b"> ", seen, deadline)
        proc.stdin.write(b"Write a very long story about a dragon and a knight.\n")
        proc.stdin.flush()
        _read_more(proc, seen, 40, deadline)  # some of the answer has streamed
        proc.send_signal(signal.SIGINT)
        _read_until(proc, b" [stopped]\n\n> ", seen, deadline)
        proc.stdin.write(b"What is the capital of France?\n/exit\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err.decode()
    assert "Paris" in out.decode()
