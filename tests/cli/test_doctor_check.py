"""`phi3-aipc doctor --check`: a real short generation per device and backend, and a report users can paste."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from phi3_aipc.cli import main
from phi3_aipc.cli.selfcheck import NPU_ON_CPU_LABEL, format_report

pytestmark = [pytest.mark.smollm2, pytest.mark.npu_on_cpu]
pytest.importorskip("openvino_genai")

CHECK_FIELDS = {
    "device",
    "backend",
    "model",
    "status",
    "options",
    "ready_s",
    "load_ms",
    "warmup_ms",
    "ttft_ms",
    "tokens_per_second",
    "answer",
    "error",
}


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """The README's `doctor --check` line as JSON, plus the NPU pipeline on the CPU, in a process of its own as a
    user runs it (each check releases its engine)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "\nphi3-aipc doctor --check\n" in readme
    done = subprocess.run(
        [sys.executable, "-m", "phi3_aipc.cli", "doctor", "--check", "--json", "--npu-on-cpu"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_the_report_says_what_machine_and_versions_it_ran_on(report: dict[str, Any]) -> None:
    assert set(report) == {"system", "packages", "devices", "checks"}
    assert {"os", "python", "cpu", "logical_cpus", "memory_gib"} <= set(report["system"])
    assert report["packages"]["phi3-aipc"] and report["packages"]["openvino-genai"]
    cpu = next(entry for entry in report["devices"] if entry["device"] == "CPU")
    assert cpu["FULL_DEVICE_NAME"]


def test_the_cpu_and_the_npu_pipeline_pass_with_timings(report: dict[str, Any]) -> None:
    for check in report["checks"]:
        assert set(check) == CHECK_FIELDS
        assert check["status"] in ("pass", "fail", "skip")
        assert (check["error"] is None) == (check["status"] == "pass")
    passed = {(c["device"], c["backend"]): c for c in report["checks"] if c["status"] == "pass"}
    for key in (("CPU", "openvino"), (NPU_ON_CPU_LABEL, "openvino")):
        check = passed[key]
        assert check["model"] == "smollm2" and "Paris" in check["answer"]
        assert check["load_ms"] > 0 and check["warmup_ms"] > 0
        assert check["ttft_ms"] > 0 and check["tokens_per_second"] > 0


def test_a_backend_without_a_model_it_can_run_is_skipped_with_the_reason(report: dict[str, Any]) -> None:
    skipped = [c for c in report["checks"] if c["status"] == "skip"]
    # transformers, optimum-intel and ONNX Runtime GenAI need a checkpoint or an export, not the packaged GGUF.
    assert {c["backend"] for c in skipped} >= {"transformers"}
    assert all("ModelNotFoundError" in c["error"] for c in skipped)


def test_the_text_form_has_one_line_per_check(report: dict[str, Any]) -> None:
    text = format_report(report)
    assert text.startswith("phi3-aipc doctor --check")
    rows = [line for line in text.splitlines() if line.lstrip().startswith(("pass ", "fail ", "skip "))]
    assert len(rows) == len(report["checks"])


def test_json_without_check_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json"]) == 2
    assert "doctor --check --json" in capsys.readouterr().err


def test_plain_doctor_points_to_the_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "OpenVINO devices: CPU" in out and "phi3-aipc doctor --check" in out
    assert "docs/ai-pc-setup.md" in out, "without an NPU it says where the driver set-up is"


def test_the_text_form_is_aligned_and_uncut(report: dict[str, Any]) -> None:
    """Every column starts at the same place on every row (the batching backend's longer name included), and each
    detail is the whole message of the JSON form, advice and all."""
    lines = format_report(report).splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("result "))
    header, rows = lines[start], lines[start + 1 :]
    assert len(rows) == len(report["checks"])
    for heading in ("device", "backend", "model", "detail"):
        column = header.index(heading)
        for row, check in zip(rows, report["checks"], strict=True):
            key = {"device": "device", "backend": "backend", "model": "model"}.get(heading)
            expected = check[key] if key else (check["error"] or repr(check["answer"]))
            assert row[column:].startswith(expected), (heading, row)
    for row, check in zip(rows, report["checks"], strict=True):
        assert row.endswith(check["error"] or repr(check["answer"]))
    assert any(c["backend"] == "openvino-batching" for c in report["checks"])
