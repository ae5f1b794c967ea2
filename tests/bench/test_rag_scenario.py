"""`phi3-aipc bench --scenario rag`: each prompt runs on the baseline (prompt lookup off), the default, prompt lookup
on and a draft model, with the same messages; the table shows decode tok/s and TTFT beside the baseline's. Run here
on the tiny Phi-3 (its own draft) with a short context and one run: the figures themselves are not asserted."""

from __future__ import annotations

from pathlib import Path

from phi3_aipc import get_engine
from phi3_aipc.bench.rag import RAG_QUESTION, RagSettings, format_rag_table, rag_messages, run_rag_scenario
from phi3_aipc.bench.targets import Target


def test_context_is_sized_with_the_engines_tokenizer(tiny_phi3_ov: Path) -> None:
    engine = get_engine(str(tiny_phi3_ov), "cpu", "openvino")
    messages = rag_messages(engine, 400, RAG_QUESTION, run="x")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "Context set x." in messages[1]["content"] and "Product sheet 1:" in messages[1]["content"]
    assert messages[1]["content"].endswith(RAG_QUESTION)
    assert (
        400 <= engine.count_tokens(engine.format_chat(messages)) < 400 + 120
    )  # one sheet more than needed at most


def test_rag_scenario_measures_every_variant_against_the_baseline(tiny_phi3_ov: Path, tmp_path: Path) -> None:
    settings = RagSettings(context_tokens=300, max_new_tokens=12, runs=1, draft_model=str(tiny_phi3_ov))
    targets = [
        Target(str(tiny_phi3_ov), "cpu", "openvino"),
        Target(str(tmp_path / "missing"), "cpu", "openvino"),
    ]
    ok, failed = run_rag_scenario(targets, settings)
    variants = ["baseline", "default (auto)", "prompt lookup", "draft model"]
    assert [(r["prompt"], r["variant"]) for r in ok["rows"]] == [
        (p, v) for p in ("rag", "free") for v in variants
    ]
    assert all(r["ttft_ms"] > 0 and r["prompt_tokens"] >= 300 for r in ok["rows"])
    by_variant = {r["variant"]: r for r in ok["rows"] if r["prompt"] == "rag"}
    assert by_variant["baseline"]["accepted"] is None and by_variant["baseline"]["same"]
    assert by_variant["draft model"]["accepted"] == 1.0  # its own draft
    assert "error" in failed  # a target that cannot load gets a row with its error; the others still run
    table = format_rag_table([ok, failed])
    assert "| decode tok/s | × baseline | TTFT × baseline | accepted | same text |" in table
    assert "| rag | prompt lookup |" in table and "failed: " in table


def test_the_llamacpp_side_says_what_it_lacks(tiny_phi3_ov: Path, tmp_path: Path) -> None:
    """llama.cpp itself runs only in a benchmark venv (never a dependency, absent here); what the scenario does
    without it is checked: a model that is no GGUF, and a Python without llama-cpp-python, are each named."""
    import sys

    base = RagSettings(context_tokens=300, max_new_tokens=4, runs=1, llamacpp_python=sys.executable)
    [no_gguf] = run_rag_scenario([Target(str(tiny_phi3_ov), "cpu", "openvino")], base)
    assert "is not one: pass --llamacpp-gguf" in no_gguf["error"]
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    settings = RagSettings(**{**base.__dict__, "llamacpp_gguf": str(gguf)})
    [no_llamacpp] = run_rag_scenario([Target(str(tiny_phi3_ov), "cpu", "openvino")], settings)
    assert "llama.cpp (" in no_llamacpp["error"] and "No module named 'llama_cpp'" in no_llamacpp["error"]
