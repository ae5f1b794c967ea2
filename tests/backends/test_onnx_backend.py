"""The ONNX Runtime GenAI backend on real models: the tiny fp32 Phi-3 (parity with transformers and OpenVINO GenAI)
and SmolLM2 exported to int4 (real answers, guidance, exact stops). DirectML cannot run on Linux: its tests at the
end check only device selection and error messages, with test doubles standing in for Windows."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jsonschema
import pytest

pytest.importorskip("onnxruntime_genai")

from phi3_aipc import (  # noqa: E402
    DeviceNotFoundError,
    Engine,
    GenerationParams,
    InvalidParameterError,
    ModelNotFoundError,
    PromptTooLongError,
    UnsupportedFeatureError,
    get_engine,
)
from phi3_aipc.backends import onnx_genai, resolve_backend_name  # noqa: E402
from phi3_aipc.errors import ExecutionProviderNotInstalledError  # noqa: E402
from phi3_aipc.export import export_cache_path, plan_export, read_manifest  # noqa: E402
from phi3_aipc.export.onnx import export_onnx  # noqa: E402
from phi3_aipc.models import resolve  # noqa: E402
from phi3_aipc.params import Constraint, TaggedSchema  # noqa: E402
from phi3_aipc.testing import build_smollm2_hf, cached_model_dir  # noqa: E402
from phi3_aipc.testing.precision import LLM_F32

CHAT = [{"role": "user", "content": "Tell me about the weather in Paris"}]
GREEDY = GenerationParams(max_new_tokens=24, ignore_eos=True)
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
    "additionalProperties": False,
}


# -- fixtures: models exported once per session (or once ever, with PHI3_AIPC_TEST_CACHE) -------------------------
@pytest.fixture(scope="session")
def tiny_phi3_ort(model_cache: Path, tiny_phi3_hf: Path) -> Path:
    pytest.importorskip("onnx_ir")
    return cached_model_dir(
        model_cache,
        "tiny-phi3-bytelevel-s0-ort-fp32-v1",
        lambda out: export_onnx(tiny_phi3_hf, out, "fp32", "cpu"),
    )


@pytest.fixture(scope="session")
def smollm2_ort(model_cache: Path, smollm2_gguf: Path) -> Path:
    pytest.importorskip("onnx_ir")
    pytest.importorskip("gguf")
    hf = cached_model_dir(model_cache, "smollm2-135m-instruct-hf-v1", build_smollm2_hf)
    return cached_model_dir(
        model_cache, "smollm2-135m-instruct-ort-int4-v1", lambda out: export_onnx(hf, out, "int4", "cpu")
    )


@pytest.fixture(scope="module")
def ort_tiny(tiny_phi3_ort: Path) -> Engine:
    return get_engine(str(tiny_phi3_ort), "cpu", backend="onnx")


@pytest.fixture(scope="module")
def smollm2(smollm2_ort: Path) -> Engine:
    return get_engine(str(smollm2_ort), "cpu", backend="ort")


# -- parity on the tiny fp32 Phi-3 ---------------------------------------------------------------------------------
def test_greedy_output_matches_transformers_and_openvino_token_for_token(
    ort_tiny: Engine, tiny_phi3_hf: Path, tiny_phi3_ov: Path
) -> None:
    hf = get_engine(str(tiny_phi3_hf), "cpu", backend="transformers")
    # OpenVINO computes in bf16 on CPUs that support it; token-exact parity with fp32 needs f32 compute.
    ov = get_engine(str(tiny_phi3_ov), "cpu", backend="openvino", options=LLM_F32)
    # Random weights give flat logits: on most prompts two tokens tie within 1e-4 somewhere, and float noise picks
    # either. On this one the top two stay >= 4e-3 apart over the 24 tokens (checked in transformers), so any
    # mismatch is a real difference.
    chat = [{"role": "user", "content": "Hello!"}]
    prompt = ort_tiny.format_chat(chat)
    assert prompt == hf.format_chat(chat) == ov.format_chat(chat)
    assert ort_tiny.count_tokens(prompt) == hf.count_tokens(prompt) == ov.count_tokens(prompt)
    results = {e.backend_name: e.generate(prompt, GREEDY) for e in (ort_tiny, hf, ov)}
    assert len({r.text for r in results.values()}) == 1, {k: r.text for k, r in results.items()}
    # Same text and the same number of tokens: the same tokens, one by one.
    assert {(r.prompt_tokens, r.completion_tokens) for r in results.values()} == {
        (results["onnx"].prompt_tokens, 24)
    }
    assert hf.count_tokens(results["onnx"].text) == 24


def test_usage_timings_and_context_window(ort_tiny: Engine, tiny_phi3_ort: Path) -> None:
    result = ort_tiny.generate(CHAT, GenerationParams(max_new_tokens=9, ignore_eos=True))
    assert (result.completion_tokens, result.finish_reason) == (9, "length")
    assert result.prompt_tokens == ort_tiny.count_tokens(ort_tiny.format_chat(CHAT))
    t = result.timings
    assert t.ttft_ms > 0 and t.tpot_ms > 0 and t.generate_ms >= t.ttft_ms and t.load_ms > 0
    assert t.tokens_per_second == pytest.approx(1000 / t.tpot_ms)
    genai_config = json.loads((tiny_phi3_ort / "genai_config.json").read_text())
    assert ort_tiny.context_window == genai_config["model"]["context_length"] == 4096
    assert ort_tiny.model_family == "phi3"


def test_special_tokens_come_from_the_folders_tokenizer(ort_tiny: Engine) -> None:
    assert ort_tiny.special_tokens == {"<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"}
    assert ort_tiny.model_family == "phi3"


def test_max_new_tokens_counts_only_new_tokens(ort_tiny: Engine) -> None:
    # ORT's max_length counts the prompt: a long prompt must still get its full max_new_tokens.
    long_chat = [{"role": "user", "content": "weather " * 300}]
    result = ort_tiny.generate(long_chat, GenerationParams(max_new_tokens=5, ignore_eos=True))
    assert result.prompt_tokens > 300 and result.completion_tokens == 5


def test_prompt_longer_than_the_context_is_refused(ort_tiny: Engine) -> None:
    with pytest.raises(PromptTooLongError, match="context window of 4096"):
        ort_tiny.generate("weather " * 5000, GREEDY)


def test_stream_deltas_keep_multibyte_characters_whole(ort_tiny: Engine) -> None:
    # The regex forces accented characters, which the tiny byte-level vocabulary splits into one token per byte.
    text = "café über naïve"
    stream = ort_tiny.stream(CHAT, GenerationParams(max_new_tokens=40), constraint=Constraint("regex", text))
    deltas = list(stream)
    assert "".join(deltas) == stream.result.text == text
    assert stream.result.completion_tokens > len(text.split())  # really split across tokens
    assert not any("\ufffd" in d for d in deltas)


def test_guidance_failure_on_three_byte_characters_is_explained(ort_tiny: Engine) -> None:
    # onnxruntime-genai 0.18's llguidance fails on some 3-byte characters with byte-level vocabularies (upstream
    # bug, seen on the tiny model and on SmolLM2). The raw "Error committing tokens" must come out explained.
    with pytest.raises(UnsupportedFeatureError, match="backend='openvino'"):
        ort_tiny.generate(CHAT, GenerationParams(max_new_tokens=40), constraint=Constraint("regex", "日本語"))


def test_regex_and_lark_grammar_constraints(ort_tiny: Engine) -> None:
    regex = ort_tiny.generate(
        CHAT, GenerationParams(max_new_tokens=8), constraint=Constraint("regex", "(yes|no)")
    )
    assert regex.text in ("yes", "no")
    lark = 'start: "Temp: " NUM " C"\nNUM: /[0-9]{2}/\n'
    grammar = ort_tiny.generate(
        CHAT, GenerationParams(max_new_tokens=16), constraint=Constraint("grammar", lark)
    )
    assert grammar.text.startswith("Temp: ") and grammar.text.endswith(" C") and grammar.text[6:8].isdigit()


def test_sampling_follows_the_seed(ort_tiny: Engine) -> None:
    def sample(seed: int) -> str:
        return ort_tiny.generate(CHAT, GenerationParams(max_new_tokens=24, temperature=1.5, seed=seed)).text

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_hf_folder_is_exported_once_into_the_cache(
    tiny_phi3_hf: Path, ort_tiny: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHI3_AIPC_CACHE", str(tmp_path))
    engine = get_engine(str(tiny_phi3_hf), "cpu", backend="onnx", options={"precision": "fp32"})
    export = export_cache_path(tiny_phi3_hf, plan_export("onnx", "cpu", "fp32"))
    assert export.parent == tmp_path / "exports" / "onnx" and (export / "genai_config.json").is_file()
    assert engine.backend.artifact.path == export
    # The same manifest as an OpenVINO export: one cache, one fingerprint for both formats.
    assert read_manifest(export)["options"]["provider"] == "cpu"
    stamp = (export / "model.onnx").stat().st_mtime_ns
    again = resolve(str(tiny_phi3_hf), "CPU", "onnx", precision="fp32")
    assert again.path == export and again.format == "onnx"
    assert (export / "model.onnx").stat().st_mtime_ns == stamp
    assert [p.name for p in export.parent.iterdir()] == [export.name]  # no staging folder left
    assert engine.generate(CHAT, GREEDY).text == ort_tiny.generate(CHAT, GREEDY).text


# -- SmolLM2 int4: real answers ----------------------------------------------------------------------------------
@pytest.mark.smollm2
def test_smollm2_answers(smollm2: Engine) -> None:
    result = smollm2.generate(FRANCE, GenerationParams(max_new_tokens=40))
    assert "Paris" in result.text
    assert result.finish_reason in ("stop", "length")


@pytest.mark.smollm2
def test_smollm2_stop_strings_are_exact(smollm2: Engine) -> None:
    full = smollm2.generate(FRANCE, GenerationParams(max_new_tokens=40)).text
    for stop in ("Paris", "apital"):  # a whole word, and one that ends inside a token
        cut = smollm2.generate(FRANCE, GenerationParams(max_new_tokens=40, stop=(stop,)))
        assert cut.text == full[: full.index(stop)]
        assert (cut.finish_reason, cut.stop_string) == ("stop_string", stop)


@pytest.mark.smollm2
def test_smollm2_json_schema_guidance(smollm2: Engine) -> None:
    chat = [{"role": "user", "content": "Give the capital of France and its country as JSON."}]
    result = smollm2.generate(
        chat,
        GenerationParams(max_new_tokens=60),
        constraint=Constraint("json_schema", json.dumps(CITY_SCHEMA)),
    )
    jsonschema.validate(json.loads(result.text), CITY_SCHEMA)


@pytest.mark.smollm2
def test_smollm2_structural_tags(smollm2: Engine) -> None:
    # Once the model writes the trigger, it must finish the tag: JSON for the schema, then the end string.
    schema = {"type": "object", "properties": {"country": {"type": "string"}}, "required": ["country"]}
    tag = TaggedSchema(begin="Paris <info>", schema=json.dumps(schema), end="</info>")
    constraint = Constraint("structural_tags", tags=(tag,), triggers=("Paris",))
    answer = smollm2.generate(FRANCE, GenerationParams(max_new_tokens=60), constraint=constraint).text
    assert "Paris <info>" in answer, answer
    inner = answer.split("Paris <info>", 1)[1].split("</info>", 1)[0]
    jsonschema.validate(json.loads(inner), schema)
    # Text without the trigger stays free, and the trigger cannot appear outside a tag.
    free = smollm2.generate(
        [{"role": "user", "content": "Say hello."}],
        GenerationParams(max_new_tokens=30),
        constraint=constraint,
    ).text
    assert free and ("Paris" not in free or "Paris <info>" in free)


# -- errors --------------------------------------------------------------------------------------------------------
def test_model_inputs_it_cannot_load(tmp_path: Path, smollm2_gguf: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="build_smollm2_hf"):
        get_engine("smollm2", "cpu", backend="onnx")
    # The packaged GGUF by path is the same catalogue model as 'smollm2', with the same explanation.
    with pytest.raises(ModelNotFoundError, match="quantized GGUF"):
        get_engine(str(smollm2_gguf), "cpu", backend="onnx")
    with pytest.raises(ModelNotFoundError, match="genai_config.json"):
        get_engine(str(tmp_path), "cpu", backend="onnx")
    with pytest.raises(InvalidParameterError, match="precision"):
        get_engine(str(tmp_path), "cpu", backend="onnx", options={"MAX_PROMPT_LEN": 10})


def test_export_refuses_what_the_builder_cannot_make(tiny_phi3_hf: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="fp16 model for cpu"):
        export_onnx(tiny_phi3_hf, tmp_path / "out", "fp16", "cpu")
    with pytest.raises(InvalidParameterError, match="precision"):
        export_onnx(tiny_phi3_hf, tmp_path / "out", "int3", "cpu")
    with pytest.raises(ModelNotFoundError, match="config.json"):
        export_onnx(tmp_path, tmp_path / "out", "int4", "cpu")


def test_known_models_map_to_microsofts_subfolders(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_phi3_ort: Path
) -> None:
    # A Hugging Face cache laid out as the Hub lays it (the Hub is unreachable here), holding only the CPU variant.
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--microsoft--Phi-3-mini-4k-instruct-onnx"
    cpu = repo / "snapshots" / commit / "cpu_and_mobile" / "cpu-int4-rtn-block-32-acc-level-4"
    shutil.copytree(tiny_phi3_ort, cpu)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert resolve("microsoft/Phi-3-mini-4k-instruct", "CPU", "onnx").path == cpu
    engine = get_engine("phi-3-mini", "cpu", backend="onnx")
    assert engine.model_family == "phi3"
    assert engine.generate(CHAT, GenerationParams(max_new_tokens=3, ignore_eos=True)).completion_tokens == 3
    # The other devices' variants are not cached: the error names the repo and subfolder that would be fetched.
    for target, subfolder in (
        ("DML", "directml/directml-int4-awq-block-128"),
        ("CUDA", "cuda/cuda-int4-rtn-block-32"),
    ):
        with pytest.raises(
            ModelNotFoundError, match=f"Phi-3-mini-4k-instruct-onnx'? \\(subfolder {subfolder}\\)"
        ):
            resolve("phi-3-mini", target, "onnx")


# -- DirectML and CUDA selection --------------------------------------------------------------------------------
# DirectML runs only on Windows and CUDA needs onnxruntime-genai-cuda: neither can run here. These tests check
# device selection and the error messages only, on the real CPU build of onnxruntime-genai, with test doubles
# standing in for "this is Windows" and "the installed build has DirectML". They say nothing about DirectML itself.
def windows_double(monkeypatch: pytest.MonkeyPatch, *, dml_build: bool) -> None:
    """Test double: pretend to be Windows, optionally with the DirectML build of onnxruntime-genai installed."""
    monkeypatch.setattr(onnx_genai, "is_windows", lambda: True)
    if dml_build:
        real = onnx_genai.provider_available
        monkeypatch.setattr(onnx_genai, "provider_available", lambda t: True if t == "DML" else real(t))


def test_devices_that_cannot_run_here_get_clear_errors() -> None:
    assert onnx_genai.pick_target("AUTO") == onnx_genai.pick_target("CPU") == "CPU"
    with pytest.raises(DeviceNotFoundError, match="only on Windows"):
        onnx_genai.pick_target("DML")
    with pytest.raises(DeviceNotFoundError, match="DirectML on Windows and CUDA elsewhere"):
        onnx_genai.pick_target("GPU")
    with pytest.raises(ExecutionProviderNotInstalledError, match="onnxruntime-genai-cuda.*side by side"):
        onnx_genai.pick_target("CUDA")
    with pytest.raises(DeviceNotFoundError, match="backend='openvino'"):
        onnx_genai.pick_target("NPU")


def test_gpu_on_windows_without_the_directml_build_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    windows_double(monkeypatch, dml_build=False)
    for device in ("GPU", "DML", "DIRECTML"):
        with pytest.raises(ExecutionProviderNotInstalledError) as info:
            onnx_genai.pick_target(device)
        message = str(info.value)
        assert "onnxruntime-genai-directml" in message and "side by side" in message
        assert "onnxruntime-genai 0.18" in message and "pip uninstall -y onnxruntime-genai" in message
    assert onnx_genai.pick_target("AUTO") == "CPU"


def test_gpu_on_windows_with_the_directml_build_appends_the_dml_provider(
    monkeypatch: pytest.MonkeyPatch, tiny_phi3_ort: Path
) -> None:
    windows_double(monkeypatch, dml_build=True)
    assert (
        onnx_genai.pick_target("GPU")
        == onnx_genai.pick_target("DIRECTML")
        == onnx_genai.pick_target("AUTO")
        == "DML"
    )
    # The real CPU build then refuses the "dml" provider when the model is created; that error is translated.
    with pytest.raises(ExecutionProviderNotInstalledError, match="not been built with DML support"):
        onnx_genai.load_model(tiny_phi3_ort, "DML", {})


def test_backend_none_picks_onnx_for_dml_and_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    import phi3_aipc.devices as registry

    for device in ("dml", "DirectML", "cuda", "cuda:0"):
        assert resolve_backend_name(None, device) == "onnx"
    assert resolve_backend_name(None, "auto") == resolve_backend_name(None, "gpu") == "openvino"
    assert resolve_backend_name("onnxruntime-genai") == resolve_backend_name("ORT") == "onnx"
    # Test doubles for a Windows PC: 'auto' goes to DirectML only when OpenVINO sees no NPU or GPU.
    monkeypatch.setattr(registry, "_is_windows", lambda: True)
    monkeypatch.setattr(registry, "_directml_available", lambda: True)
    monkeypatch.setattr(registry, "_openvino_accelerator", lambda: False)
    assert resolve_backend_name(None, "auto") == "onnx"
    assert resolve_backend_name(None, "cpu") == "openvino"
    monkeypatch.setattr(registry, "_openvino_accelerator", lambda: True)
    assert resolve_backend_name(None, "auto") == "openvino"


def test_a_top_k_above_the_vocabulary_samples_as_if_unset(ort_tiny: Engine) -> None:
    """ONNX Runtime GenAI refuses a top_k above the vocabulary with a raw RuntimeError; it keeps every token anyway."""
    huge = GenerationParams(max_new_tokens=6, do_sample=True, top_k=10**6, seed=7, ignore_eos=True)
    unset = GenerationParams(max_new_tokens=6, do_sample=True, seed=7, ignore_eos=True)
    chat = [{"role": "user", "content": "Hello"}]
    # Same seed, same engine: a clamped top_k samples exactly as no top_k does (both keep the whole vocabulary).
    assert ort_tiny.generate(chat, huge).text == ort_tiny.generate(chat, unset).text


@pytest.mark.smollm2
@pytest.mark.parametrize("stop_after_first", [False, True])
def test_smollm2_tags_only_constraint_is_one_or_more_tags(smollm2: Engine, stop_after_first: bool) -> None:
    # A forced call (issue 22): nothing but tags, joined by the separator; exactly one with stop_after_first.
    schema = {
        "type": "object",
        "properties": {"city": {"enum": ["Paris", "Rome"]}},
        "required": ["city"],
        "additionalProperties": False,
    }
    tags = tuple(
        TaggedSchema(
            begin=f'<tool_call>\n{{"name": "{n}", "arguments": ',
            schema=json.dumps(schema),
            end="}\n</tool_call>",
        )
        for n in ("get_weather", "get_time")
    )
    constraint = Constraint(
        "structural_tags",
        tags=tags,
        triggers=("<tool_call>",),
        at_least_one=True,
        stop_after_first=stop_after_first,
    )
    chat = [{"role": "user", "content": "Weather and time in Paris and in Rome?"}]
    text = smollm2.generate(chat, GenerationParams(max_new_tokens=120), constraint=constraint).text
    one = r'<tool_call>\n\{"name": "(get_weather|get_time)", "arguments": \{"city": ?"(Paris|Rome)"\}\}\n</tool_call>'
    if stop_after_first:
        assert re.fullmatch(one, text), text
    else:  # more than one call is allowed (SmolLM2 goes on writing them up to max_new_tokens)
        assert re.match(rf"{one}(\n{one})+", text), text


def test_end_after_tags_grammar_builds_and_runs(ort_tiny: Engine) -> None:
    """``Constraint.end_after_tags`` as a Lark grammar (tests/tools/test_end_after_tags.py checks the behaviour
    on OpenVINO): a random model writes noise, so this checks llguidance accepts it (a bad grammar raises)."""
    tag = TaggedSchema(begin="Paris <info>", schema=json.dumps({"type": "object"}), end="</info>")
    constraint = Constraint("structural_tags", tags=(tag,), triggers=("Paris",), end_after_tags=True)
    result = ort_tiny.generate(
        [{"role": "user", "content": "Hi"}], GenerationParams(max_new_tokens=8), constraint=constraint
    )
    assert result.completion_tokens > 0
