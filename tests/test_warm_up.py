"""The engine's warm-up (issue 24, item 4): ``get_engine`` starts one tiny generation in the background, first in
line, so that a process's first answer does not pay OpenVINO's first-inference work; it never changes an answer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from phi3_aipc import GenerationParams, get_engine
from phi3_aipc.backends import load_backend
from phi3_aipc.engine import Engine, clear_engines
from phi3_aipc.engine.core import WARM_UP_PROMPT
from phi3_aipc.testing.precision import LLM_F32

pytest.importorskip("openvino_genai")

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = GenerationParams(max_new_tokens=8, ignore_eos=True)


@pytest.fixture(autouse=True)
def _fresh_engines():
    clear_engines()
    yield
    clear_engines()


def _record_prompts(engine: Engine) -> list[str]:
    """The prompts the real backend is asked to generate from, in order (the backend itself runs unchanged)."""
    prompts: list[str] = []
    generate = engine.backend.generate

    def recording(prompt: str, *args: Any, **kwargs: Any) -> Any:
        prompts.append(prompt)
        return generate(prompt, *args, **kwargs)

    engine.backend.generate = recording  # type: ignore[method-assign]
    return prompts


def test_get_engine_warms_up_a_new_engine_once(tiny_phi3_ov: Path) -> None:
    engine = get_engine(str(tiny_phi3_ov), "cpu", options=LLM_F32)
    warm = engine.wait_for_warm_up()
    assert warm is not None and warm.completion_tokens == 1
    prompts = _record_prompts(engine)
    assert get_engine(str(tiny_phi3_ov), "cpu", options=LLM_F32) is engine
    engine.generate(QUESTION, GREEDY)
    assert prompts == [engine.format_chat(QUESTION)]  # the cached engine is not warmed up again


def test_warm_up_off_runs_nothing_before_the_first_request(tiny_phi3_ov: Path) -> None:
    engine = get_engine(str(tiny_phi3_ov), "cpu", options=LLM_F32, warm_up=False)
    assert engine.wait_for_warm_up() is None
    prompts = _record_prompts(engine)
    engine.generate(QUESTION, GREEDY)
    assert prompts == [engine.format_chat(QUESTION)]


def test_a_request_made_at_once_waits_behind_the_warm_up_and_gets_the_same_answer(tiny_phi3_ov: Path) -> None:
    backend = load_backend("openvino", str(tiny_phi3_ov), "cpu", dict(LLM_F32))
    cold = Engine(backend)
    without = cold.generate(QUESTION, GREEDY)

    warmed = Engine(load_backend("openvino", str(tiny_phi3_ov), "cpu", dict(LLM_F32)))
    prompts = _record_prompts(warmed)
    warmed.warm_up()  # then at once, from this thread: the warm-up is already first in line
    with_warm_up = warmed.generate(QUESTION, GREEDY)
    assert prompts == [WARM_UP_PROMPT, warmed.format_chat(QUESTION)]
    assert with_warm_up.timings.queued_ms is not None
    # The warm-up's prompt fills no KV block: nothing of it is reused, and the answer is the one without it.
    assert with_warm_up.cached_prompt_tokens in (0, None)
    assert with_warm_up.text == without.text
    assert with_warm_up.completion_tokens == without.completion_tokens == 8


@pytest.mark.npu_on_cpu
def test_the_npu_pipeline_on_the_cpu_warms_up_too(tiny_phi3_ov: Path) -> None:
    options = {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 128, "MIN_RESPONSE_LEN": 32}
    engine = get_engine(str(tiny_phi3_ov), "npu", options=options)
    warm = engine.wait_for_warm_up()
    assert warm is not None and warm.completion_tokens == 1
    assert engine.generate(QUESTION, GREEDY).completion_tokens == 8


def test_a_failed_warm_up_is_logged_and_the_engine_still_answers(
    tiny_phi3_ov: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Engine(load_backend("openvino", str(tiny_phi3_ov), "cpu", dict(LLM_F32)))
    generate = engine.backend.generate
    calls = []

    def first_call_fails(prompt: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(prompt)
        if len(calls) == 1:
            raise RuntimeError("the first inference failed")
        return generate(prompt, *args, **kwargs)

    engine.backend.generate = first_call_fails  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="phi3_aipc"):
        engine.warm_up()
        assert engine.wait_for_warm_up() is None
    assert "warm-up generation failed (RuntimeError: the first inference failed)" in caplog.text
    assert engine.generate(QUESTION, GREEDY).completion_tokens == 8
