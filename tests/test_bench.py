"""`phi3-aipc bench` on the tiny Phi-3: every metric present and sane, for several targets in one run.

No timed assertions: the numbers are only checked for consistency (positive, TPOT below the end-to-end time,
token counts as asked), never against a speed.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
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
)
from phi3_aipc.cli import main

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


def test_transformers_target_and_failure_reported_in_one_run(tiny_phi3_hf: Path) -> None:
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
    with pytest.raises(InvalidParameterError, match="through must be among"):
        Settings(through=("haystack",))
    assert main(["bench", "--device", "cpu"]) == 2
    assert "Pass --model" in capsys.readouterr().err
    assert main(["bench", "--model", "smollm2", "--synthetic", "phi-3-mini"]) == 2
    assert "either --model or --synthetic" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--synthetic", "phi-5"])


def test_options_for_keeps_npu_options_off_other_devices() -> None:
    options = {
        "NPUW_DEVICES": "CPU",
        "MAX_PROMPT_LEN": 64,
        "CACHE_DIR": "/x",
        "INFERENCE_PRECISION_HINT": "f32",
    }
    assert options_for("npu", options) == options
    assert options_for("cpu", options) == {"CACHE_DIR": "/x", "INFERENCE_PRECISION_HINT": "f32"}


def test_summary_statistics() -> None:
    assert summary([2.0, 4.0]) == {"mean": 3.0, "std": pytest.approx(math.sqrt(2)), "values": [2.0, 4.0]}
    assert summary([5.0])["std"] == 0.0


def test_importing_bench_loads_no_backend_or_framework() -> None:
    code = (
        "import sys, phi3_aipc.bench, phi3_aipc.cli.bench, phi3_aipc.cli.chat, phi3_aipc.synthetic; "
        "bad = [m for m in ('openvino_genai', 'torch', 'transformers', 'langchain_core', 'llama_index') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# Parameter counts of the real models (Phi-3-mini from its model card; Phi-4-mini ties its embeddings).
@pytest.mark.parametrize(
    ("name", "params"),
    [("phi-3-mini", 3_821_079_552), ("phi-3.5-mini", 3_821_079_552), ("phi-4-mini", 3_836_021_760)],
)
def test_synthetic_architectures_have_the_real_sizes(name: str, params: int) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from phi3_aipc.synthetic import SPECS, _rope

    values = {**SPECS[name], "rope_parameters": _rope(SPECS[name])}
    with torch.device("meta"):
        model = transformers.Phi3ForCausalLM(transformers.Phi3Config(**values))
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.slow
def test_synthetic_model_builds_exports_and_generates(tmp_path: Path) -> None:
    """The real-size build takes minutes and 16 GB: this builds the same pipeline with shrunken shapes."""
    pytest.importorskip("optimum.intel")
    from phi3_aipc.synthetic import synthetic_model

    small = {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
    }
    path = synthetic_model("phi-3-mini", "int4", cache=tmp_path, overrides=small)
    assert (path / "openvino_model.xml").is_file() and (path / "openvino_tokenizer.xml").is_file()
    assert synthetic_model("phi-3-mini", "int4", cache=tmp_path, overrides=small) == path  # cached
    config = json.loads((path / "config.json").read_text())
    assert config["vocab_size"] == 32064 and config["hidden_size"] == 128
    engine = get_engine(str(path), "cpu")
    assert engine.count_tokens("<|user|>") == 1 + (
        engine.count_tokens("") or 0
    )  # the real Phi-3 special token
    from phi3_aipc import GenerationParams

    result = engine.generate("Hello", GenerationParams(max_new_tokens=20, ignore_eos=True))
    assert result.completion_tokens == 20


def test_unknown_synthetic_name_is_explained() -> None:
    from phi3_aipc.synthetic import synthetic_model

    with pytest.raises(InvalidParameterError, match="phi-3-mini, phi-3.5-mini, phi-4-mini"):
        synthetic_model("phi-2")


def test_through_wrappers_reports_ratio_and_first_chunk_delay(tiny_phi3_ov: Path) -> None:
    langchain = pytest.importorskip("langchain_phi3_aipc")
    llama_index = pytest.importorskip("llama_index_phi3_aipc")
    if not hasattr(langchain, "ChatPhi3AIPC") or not hasattr(llama_index, "Phi3AIPC"):
        pytest.skip("the LangChain / LlamaIndex adapters are not in this checkout")
    settings = Settings(
        runs=2, input_tokens=(40,), output_tokens=10, through=("langchain", "llamaindex"), cold=False
    )
    report = run_benchmark([Target(str(tiny_phi3_ov), "cpu", "openvino")], settings, log=lambda _: None)
    (entry,) = report["results"]
    assert "error" not in entry, entry.get("error")
    row = entry["inputs"][0]
    assert set(row["through"]) == {"langchain", "llamaindex"}
    for wrap in row["through"].values():
        assert wrap["output_tokens"] == [10, 10]  # forced past EOS through the wrapper too
        assert all(c >= 1 for c in wrap["chunks"])
        for key in ("e2e_tokens_per_s", "first_chunk_ms", "raw_e2e_tokens_per_s", "raw_first_chunk_ms"):
            _check_stat(wrap[key], 2)
        assert wrap["tokens_per_s_ratio"] == pytest.approx(
            wrap["e2e_tokens_per_s"]["mean"] / wrap["raw_e2e_tokens_per_s"]["mean"]
        )
        assert wrap["first_chunk_extra_ms"] == pytest.approx(
            wrap["first_chunk_ms"]["mean"] - wrap["raw_first_chunk_ms"]["mean"]
        )
    assert "| langchain | 40 |" in format_table(report)
