"""`phi3-aipc bench --scenario agent`: every turn is measured on an engine with KV reuse and one without, with the
same messages; the table shows both TTFTs and their ratio. Run here on the tiny Phi-3 with a short prefix and two
turns (the figures themselves are not asserted: no timed assertions)."""

from __future__ import annotations

from pathlib import Path

from phi3_aipc import get_engine
from phi3_aipc.bench.agent import AgentSettings, agent_prefix, format_agent_table, run_agent_scenario
from phi3_aipc.bench.targets import Target


def test_prefix_is_sized_with_the_engines_tokenizer(tiny_phi3_ov: Path) -> None:
    engine = get_engine(str(tiny_phi3_ov), "cpu", "openvino")
    prefix = agent_prefix(engine, 600)
    assert [m["role"] for m in prefix] == ["system"]
    assert "get_weather" in prefix[0]["content"] and "Document 0." in prefix[0]["content"]
    first = engine.count_tokens(engine.format_chat([*prefix, {"role": "user", "content": "Which tool?"}]))
    assert 600 <= first < 600 + 120  # one chunk more than needed at most


def test_agent_scenario_measures_each_turn_with_and_without_reuse(tiny_phi3_ov: Path) -> None:
    targets = [Target(str(tiny_phi3_ov), "cpu", "openvino"), Target(str(tiny_phi3_ov), "gpu", "onnx")]
    results = run_agent_scenario(targets, AgentSettings(prefix_tokens=600, turns=2, max_new_tokens=4))
    ok, failed = results
    assert [row["turn"] for row in ok["turns"]] == [1, 2]
    assert ok["turns"][1]["prompt_tokens"] > ok["turns"][0]["prompt_tokens"] >= 600
    assert all(row["ttft_on_ms"] > 0 and row["ttft_off_ms"] > 0 for row in ok["turns"])
    assert all(row["reused_tokens"] is None for row in ok["turns"])  # OpenVINO GenAI does not say how many
    assert "error" in failed  # a target that cannot load gets a row with its error; the others still run
    table = format_agent_table(results)
    assert "| TTFT reuse off ms | TTFT reuse on ms | on/off |" in table
    assert "| **2–2** |" in table and "failed: " in table
