"""optimum-intel backend (the recipe's OVModelForCausalLM): parity, streaming, stops, usage, ov_config, devices."""

from __future__ import annotations

from pathlib import Path

import pytest

from phi3_aipc.backends import load_backend, resolve_backend_name
from phi3_aipc.engine import Engine
from phi3_aipc.errors import DeviceNotFoundError, InvalidParameterError, ModelNotFoundError
from phi3_aipc.params import GenerationParams
from phi3_aipc.testing.precision import LLM_F32

pytest.importorskip("optimum.intel")
pytest.importorskip("openvino_genai")

# OpenVINO runs fp32 models in bf16 on CPUs with AVX512-BF16/AMX; exact parity with torch needs f32 inference.
F32 = LLM_F32
GREEDY = GenerationParams(max_new_tokens=24)
PROMPTS = (
    [{"role": "user", "content": "Hello there, how are you?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name three colours."}],
)


@pytest.fixture(scope="module")
def user_cache(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("user-cache")
        mp.setenv("PHI3_AIPC_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def optimum(tiny_phi3_ov: Path, user_cache: Path) -> Engine:
    return Engine(load_backend("optimum-intel", str(tiny_phi3_ov), "cpu", dict(F32)))


@pytest.fixture(scope="module")
def references(tiny_phi3_ov: Path, tiny_phi3_hf: Path, user_cache: Path) -> dict[str, Engine]:
    return {
        "openvino": Engine(load_backend("openvino", str(tiny_phi3_ov), "cpu", dict(F32))),
        "transformers": Engine(load_backend("transformers", str(tiny_phi3_hf), "cpu", {})),
    }


def test_names_and_aliases() -> None:
    assert resolve_backend_name("optimum") == "optimum-intel"
    assert resolve_backend_name("Optimum-Intel") == "optimum-intel"


@pytest.mark.parametrize("messages", PROMPTS)
def test_greedy_parity_with_openvino_and_transformers(
    optimum: Engine, references: dict[str, Engine], messages: list[dict]
) -> None:
    prompt = optimum.format_chat(messages)
    assert prompt == references["transformers"].format_chat(messages)
    ours = optimum.generate(prompt, GREEDY)
    assert ours.completion_tokens > 0
    for name, engine in references.items():
        theirs = engine.generate(prompt, GREEDY)
        assert ours.text == theirs.text, name
        assert ours.completion_tokens == theirs.completion_tokens, name
        assert ours.prompt_tokens == theirs.prompt_tokens, name


def test_streaming_deltas_join_to_the_text(optimum: Engine) -> None:
    params = GenerationParams(max_new_tokens=16, ignore_eos=True)
    stream = optimum.stream(PROMPTS[0], params)
    chunks = list(stream)
    assert len(chunks) >= 2
    assert "".join(chunks) == stream.result.text
    assert stream.result.completion_tokens == 16


def test_streamer_hands_over_each_token_and_can_stop(optimum: Engine) -> None:
    """The callback sees the first token while generate() is still running: returning False stops it there."""
    seen: list[str] = []

    def first_only(delta: str) -> bool:
        seen.append(delta)
        return False

    prompt = optimum.format_chat(PROMPTS[0])
    output = optimum.backend.generate(
        prompt, GenerationParams(max_new_tokens=32, ignore_eos=True), first_only
    )
    assert len(seen) == 1
    assert output.completion_tokens <= 2


def test_stop_string_and_usage(optimum: Engine) -> None:
    full = optimum.generate(PROMPTS[0], GenerationParams(max_new_tokens=24, ignore_eos=True))
    assert full.prompt_tokens == optimum.count_tokens(optimum.format_chat(PROMPTS[0]))
    assert full.completion_tokens == 24 and full.finish_reason == "length"
    assert full.timings.ttft_ms is not None and full.timings.tokens_per_second is not None
    stop = full.text[5:9]
    assert stop.strip()
    cut = optimum.generate(PROMPTS[0], GenerationParams(max_new_tokens=24, ignore_eos=True, stop=(stop,)))
    assert cut.finish_reason == "stop_string"
    assert cut.text == full.text[: full.text.index(stop)]


def test_recipe_ov_config_reaches_the_compiled_model(optimum: Engine, user_cache: Path) -> None:
    backend = optimum.backend
    assert backend.ov_config["PERFORMANCE_HINT"] == "LATENCY"
    assert backend.ov_config["NUM_STREAMS"] == "1"
    cache_dir = Path(backend.ov_config["CACHE_DIR"])
    assert cache_dir.is_dir() and user_cache in cache_dir.parents
    compiled = backend._model.request.get_compiled_model()
    assert str(compiled.get_property("PERFORMANCE_HINT")).endswith("LATENCY")
    assert int(compiled.get_property("NUM_STREAMS")) == 1
    assert any(cache_dir.iterdir()), "the compile cache should hold the compiled blob"


def test_ov_config_can_be_overridden(tiny_phi3_ov: Path, user_cache: Path) -> None:
    backend = load_backend(
        "optimum-intel", str(tiny_phi3_ov), "CPU", {"ov_config": {"PERFORMANCE_HINT": "THROUGHPUT"}, **F32}
    )
    compiled = backend._model.request.get_compiled_model()
    assert str(compiled.get_property("PERFORMANCE_HINT")).endswith("THROUGHPUT")
    assert backend.device == "CPU"


@pytest.mark.parametrize(
    ("device", "error", "message"),
    [
        ("npu", DeviceNotFoundError, "backend='openvino'"),
        ("GPU.0", DeviceNotFoundError, "Devices present: CPU"),
        ("dml", DeviceNotFoundError, "backend='onnx'"),
    ],
)
def test_device_errors(tiny_phi3_ov: Path, device: str, error: type, message: str) -> None:
    import openvino as ov

    if device == "GPU.0" and "GPU.0" in ov.Core().available_devices:
        pytest.skip("this machine has a GPU.0")
    with pytest.raises(error, match=message):
        load_backend("optimum-intel", str(tiny_phi3_ov), device, {})


def test_option_and_model_errors(tiny_phi3_ov: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="Unknown option"):
        load_backend("optimum-intel", str(tiny_phi3_ov), "cpu", {"num_streams": 1})
    with pytest.raises(InvalidParameterError, match="ov_config must be a dict"):
        load_backend("optimum-intel", str(tiny_phi3_ov), "cpu", {"ov_config": "LATENCY"})
    with pytest.raises(ModelNotFoundError, match="GGUF"):
        load_backend("optimum-intel", "smollm2", "cpu", {})
    with pytest.raises(ModelNotFoundError, match="no OpenVINO model"):
        load_backend("optimum-intel", str(tmp_path), "cpu", {})
