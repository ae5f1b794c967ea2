"""Portable options: device='auto' leaves out options for a device it did not pick (with a notice); a named device
keeps the clear error; `phi3-aipc bench` hands each backend only its own options."""

from __future__ import annotations

import logging

import pytest

from phi3_aipc import GenerationParams, InvalidParameterError, get_engine
from phi3_aipc.backends import prepare
from phi3_aipc.backends.options import applies, route
from phi3_aipc.bench import targets_for

pytestmark = pytest.mark.smollm2
NPU_OPTIONS = {
    "MAX_PROMPT_LEN": 2048,
    "MIN_RESPONSE_LEN": 256,
    "GENERATE_HINT": "BEST_PERF",
    "NPUW_DEVICES": "CPU",
}


def test_auto_on_a_machine_without_npu_ignores_npu_options_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # This machine reports only the CPU, so 'auto' picks it: the README's own MAX_PROMPT_LEN advice must not fail.
    with caplog.at_level(logging.WARNING):
        request = prepare(None, "smollm2", "auto", {**NPU_OPTIONS, "PERFORMANCE_HINT": "LATENCY"})
    assert request.device == "CPU"
    assert request.options == {"PERFORMANCE_HINT": "LATENCY"}, "OpenVINO properties for the CPU are kept"
    (note,) = request.notes
    assert "GENERATE_HINT, MAX_PROMPT_LEN, MIN_RESPONSE_LEN, NPUW_DEVICES" in note and "CPU" in note
    assert any(note in record.getMessage() for record in caplog.records)

    engine = get_engine("smollm2", "auto", options={"MAX_PROMPT_LEN": 2048})
    assert engine.device == "CPU" and engine.max_prompt_tokens is None
    assert engine.generate("Hi", GenerationParams(max_new_tokens=2)).completion_tokens >= 1


@pytest.mark.parametrize("option", ["MAX_PROMPT_LEN", "NPUW_DEVICES"])
def test_a_named_cpu_with_an_npu_option_is_still_an_error(option: str) -> None:
    with pytest.raises(InvalidParameterError, match=f"{option} applies to the NPU only.*device='auto'"):
        get_engine("smollm2", "cpu", options={option: NPU_OPTIONS[option]})


def test_each_option_goes_to_the_backend_and_device_it_belongs_to() -> None:
    assert applies("NPUW_DEVICES", "openvino", "NPU") and not applies("NPUW_DEVICES", "openvino", "CPU")
    assert not applies("MAX_PROMPT_LEN", "transformers", "NPU")
    assert applies("PERFORMANCE_HINT", "optimum-intel", "GPU") and not applies(
        "PERFORMANCE_HINT", "onnx", "CPU"
    )
    assert applies("revision", "transformers", "CPU") and applies("dtype", "transformers", "CPU")
    kept, dropped = route({"CACHE_DIR": "/x", "trust_remote_code": True}, "transformers", "CPU")
    assert kept == {"trust_remote_code": True} and dropped == ["CACHE_DIR"]


def test_bench_gives_transformers_no_openvino_options() -> None:
    options = {"NPUW_DEVICES": "CPU", "CACHE_DIR": "/x", "revision": "main"}
    by_target = {
        (t.backend, t.device): t.options
        for t in targets_for("smollm2", ["cpu", "npu"], ["openvino", "transformers"], options)
    }
    assert by_target[("openvino", "npu")] == options
    assert by_target[("openvino", "cpu")] == {"CACHE_DIR": "/x", "revision": "main"}
    assert by_target[("transformers", "cpu")] == {"revision": "main"}
    assert by_target[("transformers", "npu")] == {"revision": "main"}
