"""`phi3-aipc bench` and phi3_aipc.bench on the tiny Phi-3: every metric present and sane, several targets in one run.

No timed assertions: the numbers are only checked for consistency (positive, TPOT below the end-to-end time,
token counts as asked), never against a speed.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from phi3_aipc import InvalidParameterError, get_engine
from phi3_aipc.bench import (
    Settings,
    Target,
    exact_chat,
    exact_prompt,
    format_table,
    options_for,
    run_benchmark,
    summary,
    targets_for,
)
from phi3_aipc.bench.worker import read_job
from phi3_aipc.cli import main
from phi3_aipc.testing.precision import LLM_F32

pytest.importorskip("openvino_genai")

NPU_ON_CPU = ["-o", "NPUW_DEVICES=CPU", "-o", "MAX_PROMPT_LEN=64", "-o", "MIN_RESPONSE_LEN=32"]
OUTPUT_TOKENS = 12
RUNS = 2


@pytest.fixture(scope="module")
def cli_report(tiny_phi3_ov: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One CLI call comparing the CPU and the NPU pipeline on the CPU (its MAX_PROMPT_LEN caps the long prompt)."""
    out = tmp_path_factory.mktemp("bench") / "report.json"
    code = main(
        [
            "bench",
            "--model",
            str(tiny_phi3_ov),
            "--device",
            "cpu",
            "npu",
            *NPU_ON_CPU,
            "--runs",
            str(RUNS),
            "--input-tokens",
            "16",
            "100",
            "--output-tokens",
            str(OUTPUT_TOKENS),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    return json.loads(out.read_text())


def _check_stat(stat: dict[str, Any], runs: int) -> None:
    assert len(stat["values"]) == runs
    assert all(v > 0 and math.isfinite(v) for v in stat["values"])
    assert stat["mean"] == pytest.approx(sum(stat["values"]) / runs)
    assert stat["std"] >= 0


def _check_row(row: dict[str, Any], runs: int, output_tokens: int) -> None:
    assert row["runs"] == runs
    assert row["prompt_tokens"] == [row["input_tokens"]] * runs
    assert row["output_tokens"] == [output_tokens] * runs
    for key in ("ttft_ms", "tpot_ms", "decode_tokens_per_s", "e2e_ms", "e2e_tokens_per_s", "first_chunk_ms"):
        _check_stat(row[key], runs)
    for tpot, e2e, ttft, rate in zip(
        row["tpot_ms"]["values"],
        row["e2e_ms"]["values"],
        row["ttft_ms"]["values"],
        row["decode_tokens_per_s"]["values"],
        strict=True,
    ):
        assert tpot < e2e
        assert ttft < e2e
        assert rate == pytest.approx(1000 / tpot)
    for e2e, rate in zip(row["e2e_ms"]["values"], row["e2e_tokens_per_s"]["values"], strict=True):
        assert rate == pytest.approx(output_tokens * 1000 / e2e)


def test_cli_json_has_every_metric_for_every_target(cli_report: dict[str, Any]) -> None:
    results = cli_report["results"]
    assert [r["target"]["device"] for r in results] == ["cpu", "npu"]
    assert "NPUW_DEVICES" not in results[0]["target"]["options"]  # NPU options only go to NPU targets
    assert results[1]["target"]["options"]["MAX_PROMPT_LEN"] == 64
    for entry in results:
        assert "error" not in entry
        for key in ("cold_load_ms", "warm_load_ms", "import_ms", "peak_rss_mb", "cold_peak_rss_mb"):
            assert entry[key] > 0
        assert [row["input_tokens_requested"] for row in entry["inputs"]] == [16, 100]
        for row in entry["inputs"]:
            _check_row(row, RUNS, OUTPUT_TOKENS)
    cpu, npu = results
    assert [row["input_tokens"] for row in cpu["inputs"]] == [16, 100]
    assert [row["input_tokens"] for row in npu["inputs"]] == [16, 64]  # capped by MAX_PROMPT_LEN
    assert npu["engine"]["device"] == "NPU"
    machine = cli_report["machine"]
    assert machine["logical_cpus"] >= 1 and "openvino-genai" in machine["versions"]
    assert cli_report["settings"]["output_tokens"] == OUTPUT_TOKENS


def test_table_lists_each_target_and_length(cli_report: dict[str, Any]) -> None:
    table = format_table(cli_report).splitlines()
    rows = [line for line in table if line.startswith("| openvino")]
    assert len(rows) == 4
    assert rows[0].startswith("| openvino cpu | 16 | 12 |")
    assert rows[3].startswith(
        "| openvino npu MAX_PROMPT_LEN=64 MIN_RESPONSE_LEN=32 NPUW_DEVICES=CPU | 64 | 12 |"
    )


def test_transformers_target_and_failure_reported_in_one_run(
    tiny_phi3_hf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every temporary folder the run makes goes here, so the test can see that none is left behind.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    targets = [
        Target(str(tiny_phi3_hf), "cpu", "transformers"),
        # A model that does not exist: this target fails, and the run goes on.
        Target(str(tiny_phi3_hf / "missing"), "cpu", "openvino", label="bad"),
    ]
    report = run_benchmark(
        targets, Settings(runs=1, input_tokens=(20,), output_tokens=6, cold=False), log=lambda _: None
    )
    good, bad = report["results"]
    assert "cold_load_ms" not in good
    assert good["warm_load_ms"] > 0 and good["engine"]["backend"] == "transformers"
    _check_row(good["inputs"][0], 1, 6)
    assert "ModelNotFoundError" in bad["error"] and "the path does not exist" in bad["error"]
    assert "| bad | failed: ModelNotFoundError" in format_table(report)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("tokens", [8, 32, 33, 100, 257])
def test_prompts_have_exactly_the_requested_length(tiny_phi3_ov: Path, tokens: int) -> None:
    engine = get_engine(str(tiny_phi3_ov), "cpu")
    prompts = {exact_prompt(engine, tokens, variant) for variant in range(3)}
    assert len(prompts) == 3  # each run gets its own prompt, so prefix caching cannot help
    assert {engine.count_tokens(p) for p in prompts} == {tokens}
    chat = exact_chat(engine, max(tokens, 40), variant=1)
    assert engine.count_tokens(engine.format_chat(chat)) == max(tokens, 40)


def test_smollm2_raw_prompt_shorter_than_its_chat_template() -> None:
    engine = get_engine("smollm2", "cpu")
    assert engine.count_tokens(exact_prompt(engine, 32)) == 32
    # SmolLM2's template adds a system prompt of ~30 tokens: the chat prompt grows past it instead of failing.
    chat = exact_chat(engine, 32)
    assert engine.count_tokens(engine.format_chat(chat)) > 32


def test_bad_settings_and_arguments_are_explained(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InvalidParameterError, match="output_tokens at least 2"):
        Settings(output_tokens=1)
    with pytest.raises(InvalidParameterError, match="at least 8 tokens"):
        Settings(input_tokens=(4,))
    assert main(["bench", "--device", "cpu"]) == 2
    assert "Pass --model" in capsys.readouterr().err
    assert main(["bench", "--model", "smollm2", "--synthetic", "phi-3-mini"]) == 2
    assert "either --model or --synthetic" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--synthetic", "phi-5"])


def test_through_points_to_the_wrapper_script(capsys: pytest.CaptureFixture[str]) -> None:
    """The wrapper comparison left the engine package; the old flag says where it went instead of failing oddly."""
    assert main(["bench", "--model", "smollm2", "--through", "langchain"]) == 2
    err = capsys.readouterr().err
    assert "benchmarks/wrapper_overhead.py" in err and "--through langchain" in err


def test_options_for_keeps_npu_options_off_other_devices() -> None:
    options = {
        "NPUW_DEVICES": "CPU",
        "MAX_PROMPT_LEN": 64,
        "CACHE_DIR": "/x",
        **LLM_F32,
    }
    assert options_for("npu", options) == options
    assert options_for(" NPU ", options) == options
    assert options_for("cpu", options) == {"CACHE_DIR": "/x", **LLM_F32}
    assert options_for("GPU.1", options) == {"CACHE_DIR": "/x", **LLM_F32}


def test_targets_for_pairs_every_backend_with_every_device() -> None:
    targets = targets_for("m", ["cpu", "npu"], ["openvino", "onnx"], {"NPUW_DEVICES": "CPU"})
    assert [(t.backend, t.device, t.options) for t in targets] == [
        ("openvino", "cpu", {}),
        ("openvino", "npu", {"NPUW_DEVICES": "CPU"}),
        ("onnx", "cpu", {}),
        # NPU pipeline options belong to OpenVINO GenAI on the NPU: ONNX Runtime GenAI never gets them.
        ("onnx", "npu", {}),
    ]


def test_worker_job_round_trips_through_json(tmp_path: Path) -> None:
    target = Target("m", "npu", "openvino", {"MAX_PROMPT_LEN": 64}, label="x")
    settings = Settings(runs=2, input_tokens=(16, 100), output_tokens=12, cold=False)
    job = {
        "mode": "measure",
        "target": asdict(target),
        "settings": asdict(settings),
        "out": str(tmp_path / "r"),
    }
    assert read_job(json.dumps(job)) == ("measure", target, settings, tmp_path / "r")


def test_summary_statistics() -> None:
    assert summary([2.0, 4.0]) == {"mean": 3.0, "std": pytest.approx(math.sqrt(2)), "values": [2.0, 4.0]}
    assert summary([5.0])["std"] == 0.0


def test_importing_bench_loads_no_backend_or_framework() -> None:
    code = (
        "import sys, phi3_aipc.bench, phi3_aipc.bench.measure, phi3_aipc.bench.worker, phi3_aipc.cli.bench; "
        "bad = [m for m in ('openvino_genai', 'torch', 'transformers', 'langchain_core', 'llama_index') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
