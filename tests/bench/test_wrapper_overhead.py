"""benchmarks/wrapper_overhead.py: LangChain and LlamaIndex against the raw engine, on one shared tiny Phi-3.

No timed assertions: the numbers are only checked for consistency (ratios are the ratios of the reported means,
every run counted its own tokens), never against a speed.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from phi3_aipc.bench.measure import StreamTiming

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "wrapper_overhead.py"
MAX_NEW_TOKENS = 10
RUNS = 2


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wrapper_overhead", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and typing look modules up by name
    spec.loader.exec_module(module)
    return module


def _check_stat(stat: dict[str, Any], runs: int) -> None:
    assert len(stat["values"]) == runs
    assert all(v > 0 for v in stat["values"])
    assert stat["mean"] == pytest.approx(sum(stat["values"]) / runs)


def test_both_wrappers_measured_against_the_raw_engine(
    script: ModuleType, tiny_phi3_ov: Path, tmp_path: Path
) -> None:
    pytest.importorskip("openvino_genai")
    pytest.importorskip("langchain_phi3_aipc")
    pytest.importorskip("llama_index_phi3_aipc")
    out = tmp_path / "wrappers.json"
    argv = ["--model", str(tiny_phi3_ov), "--device", "cpu", "--runs", str(RUNS), "--input-tokens", "40"]
    argv += ["--max-new-tokens", str(MAX_NEW_TOKENS), "--label", "tiny", "--json", str(out)]
    assert script.main(argv) == 0
    (entry,) = json.loads(out.read_text())["results"]
    assert entry["engine"]["backend"] == "openvino"
    (row,) = entry["inputs"]
    assert row["input_tokens"] == 40
    assert set(row["through"]) == {"langchain", "llamaindex"}
    for wrap in row["through"].values():
        for counts in (wrap["output_tokens"], wrap["raw_output_tokens"]):
            assert len(counts) == RUNS and all(1 <= n <= MAX_NEW_TOKENS for n in counts)
        assert all(c >= 1 for c in wrap["chunks"])
        for side in ("", "raw_"):
            for key in ("stream_tokens_per_s", "e2e_tokens_per_s", "first_chunk_ms"):
                _check_stat(wrap[side + key], RUNS)
        assert wrap["tokens_per_s_ratio"] == pytest.approx(
            wrap["stream_tokens_per_s"]["mean"] / wrap["raw_stream_tokens_per_s"]["mean"]
        )
        assert wrap["e2e_ratio"] == pytest.approx(
            wrap["e2e_tokens_per_s"]["mean"] / wrap["raw_e2e_tokens_per_s"]["mean"]
        )
        assert wrap["first_chunk_extra_ms"] == pytest.approx(
            wrap["first_chunk_ms"]["mean"] - wrap["raw_first_chunk_ms"]["mean"]
        )
    table = script.format_wrapper_table([entry])
    assert "| tiny | langchain | 40 |" in table and "| tiny | llamaindex | 40 |" in table


def test_rates_use_each_runs_own_tokens_and_times(script: ModuleType) -> None:
    raw = [(StreamTiming(10.0, 100.0, 5), 10), (StreamTiming(20.0, 200.0, 5), 10)]
    wrapped = [(StreamTiming(20.0, 100.0, 4), 5), (StreamTiming(10.0, 50.0, 3), 5)]
    result = script.summarise(wrapped, raw)
    assert result["raw_stream_tokens_per_s"]["values"] == [100.0, 50.0]  # 9 tokens in 90 ms, in 180 ms
    assert result["stream_tokens_per_s"]["values"] == [50.0, 100.0]  # 4 tokens in 80 ms, in 40 ms
    assert result["tokens_per_s_ratio"] == pytest.approx(1.0)
    assert result["raw_e2e_tokens_per_s"]["values"] == [100.0, 50.0]
    assert result["e2e_tokens_per_s"]["values"] == [50.0, 100.0]
    assert result["first_chunk_extra_ms"] == pytest.approx(15.0 - 15.0)
    assert result["output_tokens"] == [5, 5] and result["raw_output_tokens"] == [10, 10]


@pytest.mark.parametrize(
    "run",
    [(StreamTiming(None, 5.0, 0), 0), (StreamTiming(5.0, 5.0, 1), 1), (StreamTiming(None, 9.0, 3), 3)],
    ids=["no token", "one token", "no visible chunk"],
)
def test_a_run_without_a_streaming_rate_is_explained(
    script: ModuleType, run: tuple[StreamTiming, int]
) -> None:
    from phi3_aipc.errors import Phi3AIPCError

    with pytest.raises(Phi3AIPCError, match="ended before its second token"):
        script.summarise([run], [(StreamTiming(1.0, 5.0, 2), 2)])


def test_unknown_wrapper_is_refused(script: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        script.main(["--model", "smollm2", "--through", "haystack"])
    assert "invalid choice: 'haystack'" in capsys.readouterr().err
