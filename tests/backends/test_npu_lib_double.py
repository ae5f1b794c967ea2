"""npu-lib backend adapter, tested against FakeNPULibrary: a TEST DOUBLE of the Intel NPU Acceleration Library.

The real library is end of life and does not install here, and there is no NPU. The double records how our adapter
calls the library's entry points (NPUModelForCausalLM.from_pretrained, CompilerConfig, int4/int8) and returns the
real tiny transformers model, so generation and streaming are real; nothing here runs on an NPU.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from phi3_aipc.backends import load_backend, resolve_backend_name
from phi3_aipc.engine import Engine
from phi3_aipc.errors import BackendNotInstalledError, DeviceNotFoundError, InvalidParameterError
from phi3_aipc.params import GenerationParams

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

MESSAGES = [{"role": "user", "content": "Hello there, how are you?"}]
GREEDY = GenerationParams(max_new_tokens=20)


@dataclass(frozen=True)
class FakeDtype:
    """Stands in for the library's int4/int8 dtype objects."""

    name: str


@dataclass
class FakeCompilerConfig:
    """Double of intel_npu_acceleration_library.compiler.CompilerConfig."""

    dtype: Any
    training: bool = False


class FakeNPULibrary:
    """Test double of the library's entry points; ``calls`` records every from_pretrained call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.int4, self.int8 = FakeDtype("int4"), FakeDtype("int8")
        library = self

        class NPUModelForCausalLM:
            @staticmethod
            def from_pretrained(model_name_or_path: str, config: FakeCompilerConfig, **kwargs: Any) -> Any:
                library.calls.append({"model": model_name_or_path, "config": config, **kwargs})
                kwargs.pop("export", None)
                return transformers.AutoModelForCausalLM.from_pretrained(model_name_or_path, **kwargs)

        self.module = types.ModuleType("intel_npu_acceleration_library")
        self.module.NPUModelForCausalLM = NPUModelForCausalLM
        self.module.int4, self.module.int8 = self.int4, self.int8
        self.compiler = types.ModuleType("intel_npu_acceleration_library.compiler")
        self.compiler.CompilerConfig = FakeCompilerConfig
        self.module.compiler = self.compiler

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "intel_npu_acceleration_library", self.module)
        monkeypatch.setitem(sys.modules, "intel_npu_acceleration_library.compiler", self.compiler)


@pytest.fixture()
def fake_library(monkeypatch: pytest.MonkeyPatch) -> FakeNPULibrary:
    double = FakeNPULibrary()
    double.install(monkeypatch)
    return double


def _load(model: Path, options: dict[str, Any] | None = None, device: str = "npu") -> Any:
    with pytest.warns(FutureWarning, match="backend='openvino', device='npu'"):
        return load_backend("npu-lib", str(model), device, dict(options or {}))


def test_alias() -> None:
    assert resolve_backend_name("npu_lib") == "npu-lib"


def test_calls_the_recipe_entry_points(fake_library: FakeNPULibrary, tiny_phi3_hf: Path) -> None:
    backend = _load(tiny_phi3_hf)
    (call,) = fake_library.calls
    assert call["model"] == str(tiny_phi3_hf)
    assert call["use_cache"] is True and call["attn_implementation"] == "sdpa"
    assert isinstance(call["config"], FakeCompilerConfig) and call["config"].dtype is fake_library.int4
    assert "trust_remote_code" not in call
    assert backend.device == "NPU" and backend.name == "npu-lib"


@pytest.mark.parametrize(("dtype", "expected"), [("int8", "int8"), ("fp16", "fp16"), ("float16", "fp16")])
def test_dtype_option_maps_to_library_dtypes(
    fake_library: FakeNPULibrary, tiny_phi3_hf: Path, dtype: str, expected: str
) -> None:
    _load(tiny_phi3_hf, {"dtype": dtype})
    passed = fake_library.calls[-1]["config"].dtype
    if expected == "fp16":
        assert passed is torch.float16
    else:
        assert passed is fake_library.int8


def test_generation_streams_and_matches_transformers(
    fake_library: FakeNPULibrary, tiny_phi3_hf: Path
) -> None:
    engine = Engine(_load(tiny_phi3_hf))
    reference = Engine(load_backend("transformers", str(tiny_phi3_hf), "cpu", {}))
    stream = engine.stream(MESSAGES, GREEDY)
    chunks = list(stream)
    assert len(chunks) >= 2 and "".join(chunks) == stream.result.text
    expected = reference.generate(MESSAGES, GREEDY)
    assert stream.result.text == expected.text
    assert stream.result.completion_tokens == expected.completion_tokens
    assert stream.result.prompt_tokens == expected.prompt_tokens
    stop = expected.text[3:7]
    cut = engine.generate(MESSAGES, GenerationParams(max_new_tokens=20, stop=(stop,)))
    assert cut.finish_reason == "stop_string" and cut.text == expected.text[: expected.text.index(stop)]


def test_trust_remote_code_turns_off_the_library_cache(
    fake_library: FakeNPULibrary, tiny_phi3_hf: Path
) -> None:
    _load(tiny_phi3_hf, {"trust_remote_code": True})
    call = fake_library.calls[-1]
    assert call["trust_remote_code"] is True and call["export"] is False


def test_errors(fake_library: FakeNPULibrary, tiny_phi3_hf: Path) -> None:
    with pytest.raises(InvalidParameterError, match="dtype must be one of int4, int8, fp16"):
        _load(tiny_phi3_hf, {"dtype": "int2"})
    with pytest.raises(InvalidParameterError, match="Unknown option"):
        _load(tiny_phi3_hf, {"MAX_PROMPT_LEN": 64})
    with pytest.raises(DeviceNotFoundError, match="NPU only"):
        _load(tiny_phi3_hf, device="cpu")
    assert fake_library.calls == []


def test_missing_library_warns_then_says_what_to_use(
    monkeypatch: pytest.MonkeyPatch, tiny_phi3_hf: Path
) -> None:
    # None in sys.modules makes the import fail, whether or not the real library happens to be installed.
    monkeypatch.setitem(sys.modules, "intel_npu_acceleration_library", None)
    with pytest.raises(BackendNotInstalledError, match="end of life.*backend='openvino', device='npu'"):
        _load(tiny_phi3_hf)
