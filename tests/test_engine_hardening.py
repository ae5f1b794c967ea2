"""The engine under stress, on real backends: interrupts, cancellation, abandoned streams, the context window,
parameter checks and deadlines. Every test ends by running one more generation: a stopped call leaves the engine
usable.

``BackendWatch`` wraps a real backend's ``generate`` to record what each generation was asked for and produced
(the backend still does all the work), so a test can tell that a call stopped early, or never ran, without timing
anything.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from phi3_aipc import Engine, GenerationParams, InvalidParameterError, PromptTooLongError, get_engine
from phi3_aipc.testing.precision import LLM_F32

F32 = LLM_F32
NPU_ON_CPU = {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 256, "MIN_RESPONSE_LEN": 64}
CHAT = [{"role": "user", "content": "Tell me about the weather in Paris"}]
GREEDY = GenerationParams(max_new_tokens=24, ignore_eos=True)
# Long enough that a call which is not stopped runs for seconds; a stopped one generates a handful of tokens.
LONG = GenerationParams(max_new_tokens=2000, ignore_eos=True)
# A stopped call may generate a few tokens past the stop: OpenVINO GenAI runs its streamer a few tokens behind.
STOPPED_EARLY = 200


@dataclass
class Call:
    max_new_tokens: int
    completion_tokens: int


class BackendWatch:
    """Records each generation of a real backend. ``hold()`` parks the next generation's first delta until
    ``release()``, so a test can keep the engine busy for as long as it needs, without racing it."""

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch):
        self.calls: list[Call] = []
        self.started = threading.Event()
        self._gate = threading.Event()
        self._gate.set()
        real = engine.backend.generate

        def generate(prompt: str, params: GenerationParams, on_text: Any, constraint: Any = None) -> Any:
            def tap(delta: str) -> bool:
                self.started.set()
                self._gate.wait()
                return on_text(delta)

            output = real(prompt, params, tap, constraint)
            self.calls.append(Call(params.max_new_tokens, output.completion_tokens))
            return output

        monkeypatch.setattr(engine.backend, "generate", generate)

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    async def until_started(self) -> None:
        while not self.started.is_set():
            await asyncio.sleep(0.01)


@pytest.fixture(scope="module")
def ov_cpu(tiny_phi3_ov: Path) -> Engine:
    return _warmed(get_engine(str(tiny_phi3_ov), "cpu", options=F32))


@pytest.fixture(scope="module")
def hf_cpu(tiny_phi3_hf: Path) -> Engine:
    return _warmed(get_engine(str(tiny_phi3_hf), "cpu", backend="transformers"))


@pytest.fixture(scope="module")
def npu_on_cpu(tiny_phi3_ov: Path) -> Engine:
    return _warmed(get_engine(str(tiny_phi3_ov), "npu", options=NPU_ON_CPU))


def _warmed(engine: Engine) -> Engine:
    """The engine once its warm-up (get_engine starts one) has ended, so that the backend calls a test watches are
    the test's own."""
    engine.wait_for_warm_up()
    return engine


@pytest.fixture
def watch(ov_cpu: Engine, monkeypatch: pytest.MonkeyPatch) -> BackendWatch:
    return BackendWatch(ov_cpu, monkeypatch)


def _assert_usable(engine: Engine) -> None:
    result = engine.generate(CHAT, GREEDY)
    assert (result.completion_tokens, result.finish_reason) == (24, "length")


# -- 1. interrupts ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "engine_name", ["ov_cpu", "hf_cpu", pytest.param("npu_on_cpu", marks=pytest.mark.npu_on_cpu)]
)
def test_keyboard_interrupt_from_the_text_sink_stops_generation_and_propagates(
    engine_name: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine: Engine = request.getfixturevalue(engine_name)
    watch = BackendWatch(engine, monkeypatch)
    seen: list[str] = []

    def sink(delta: str) -> None:
        seen.append(delta)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        engine.generate(CHAT, LONG, on_text=sink)
    assert len(seen) == 3, "no delta reaches the sink after it raised"
    [call] = watch.calls
    assert call.completion_tokens < STOPPED_EARLY < call.max_new_tokens, (
        "generation stopped, not ran to the end"
    )
    _assert_usable(engine)


def test_the_openvino_backend_raises_what_its_streamer_callback_raised(ov_cpu: Engine) -> None:
    # OpenVINO GenAI itself prints such an exception and generates on to max_new_tokens.
    calls = 0

    def on_text(delta: str) -> bool:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise KeyboardInterrupt
        return True

    with pytest.raises(KeyboardInterrupt):
        ov_cpu.backend.generate(ov_cpu.format_chat(CHAT), LONG, on_text)
    assert calls == 3
    _assert_usable(ov_cpu)


CTRL_C = """
import json, os, signal, sys
from phi3_aipc import GenerationParams, get_engine

engine = get_engine(sys.argv[1], "cpu")
deltas = []

def press_ctrl_c(delta):
    deltas.append(delta)
    # At the first delta: the random model's byte-level text may come in few deltas (the streamer holds back bytes
    # that do not yet decode), and a later one might never come.
    if len(deltas) == 1:
        os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C: the signal goes to the whole process

try:
    engine.generate("Hello", GenerationParams(max_new_tokens=3000, ignore_eos=True), on_text=press_ctrl_c)
    outcome = "returned"
except KeyboardInterrupt:
    outcome = "interrupted"
after = engine.generate("Hello", GenerationParams(max_new_tokens=5, ignore_eos=True))
print(json.dumps({"outcome": outcome, "deltas": len(deltas), "after": after.completion_tokens}))
"""


def test_ctrl_c_stops_a_generate_in_the_main_thread(tiny_phi3_ov: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", CTRL_C, str(tiny_phi3_ov)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["outcome"] == "interrupted", report
    assert report["deltas"] < 1000, "the generation stopped soon after Ctrl-C, not at max_new_tokens"
    assert report["after"] == 5


# -- 2. cancellation and asyncio's thread pool ----------------------------------------------------------------------
async def test_cancelled_agenerate_tasks_stop_at_the_next_token(ov_cpu: Engine, watch: BackendWatch) -> None:
    tasks = [asyncio.create_task(ov_cpu.agenerate(CHAT, LONG)) for _ in range(4)]
    await watch.until_started()
    for task in tasks:
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, asyncio.CancelledError) for o in outcomes)
    after = await ov_cpu.agenerate(CHAT, GREEDY)
    assert (after.completion_tokens, after.finish_reason) == (24, "length")
    *cancelled, last = watch.calls
    assert 1 <= len(cancelled) <= 4 and last.completion_tokens == 24
    assert all(c.completion_tokens < STOPPED_EARLY for c in cancelled), watch.calls


async def test_a_cancelled_astream_task_stops_generation(ov_cpu: Engine, watch: BackendWatch) -> None:
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in ov_cpu.astream(CHAT, LONG):
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    after = await ov_cpu.agenerate(CHAT, GREEDY)
    assert after.completion_tokens == 24
    assert watch.calls[0].completion_tokens < STOPPED_EARLY


async def test_queued_engine_calls_leave_asyncio_default_thread_pool_free(
    ov_cpu: Engine, watch: BackendWatch
) -> None:
    watch.hold()  # the first call keeps the engine until released; the other seven queue behind it
    tasks = [asyncio.create_task(ov_cpu.agenerate(CHAT, GREEDY)) for _ in range(8)]
    tasks.append(asyncio.create_task(_astream_text(ov_cpu)))
    await watch.until_started()
    loop = asyncio.get_running_loop()
    assert await asyncio.to_thread(lambda: 1) == 1
    assert await loop.getaddrinfo("localhost", 80)
    assert not any(t.done() for t in tasks), "the engine was busy all along"
    watch.release()
    results = await asyncio.gather(*tasks)
    assert [r.completion_tokens for r in results[:8]] == [24] * 8
    assert results[8].completion_tokens == 24


async def _astream_text(engine: Engine) -> Any:
    stream = engine.astream(CHAT, GREEDY)
    text = "".join([d async for d in stream])
    assert stream.result is not None and stream.result.text == text
    return stream.result


# -- 3. abandoned streams --------------------------------------------------------------------------------------------
def test_a_stream_runs_only_once_iterated(ov_cpu: Engine, watch: BackendWatch) -> None:
    kept = ov_cpu.stream(CHAT, LONG)
    ov_cpu.stream(CHAT, LONG)  # created and dropped at once
    _assert_usable(ov_cpu)
    assert watch.calls == [Call(24, 24)], "neither stream generated anything"
    assert kept.result is None
    kept.close()
    _assert_usable(ov_cpu)


def test_a_stream_dropped_after_its_first_chunk_is_cancelled(ov_cpu: Engine, watch: BackendWatch) -> None:
    stream = ov_cpu.stream(CHAT, LONG)
    next(stream)
    del stream  # no close(): only the last reference goes away
    _assert_usable(ov_cpu)
    abandoned, _ = watch.calls
    assert abandoned.completion_tokens < STOPPED_EARLY


async def test_an_async_stream_dropped_after_its_first_chunk_is_cancelled(
    ov_cpu: Engine, watch: BackendWatch
) -> None:
    stream = ov_cpu.astream(CHAT, LONG)
    await stream.__anext__()
    del stream
    assert (await ov_cpu.agenerate(CHAT, GREEDY)).completion_tokens == 24
    assert watch.calls[0].completion_tokens < STOPPED_EARLY


def test_a_closed_stream_reports_cancelled(ov_cpu: Engine) -> None:
    with ov_cpu.stream(CHAT, LONG) as stream:
        first = next(stream)
    assert stream.result is not None and stream.result.finish_reason == "cancelled"
    assert stream.result.text.startswith(first) and stream.result.completion_tokens < STOPPED_EARLY
    _assert_usable(ov_cpu)


# -- 4. the context window -------------------------------------------------------------------------------------------
def test_a_prompt_over_the_window_is_refused_with_both_numbers(ov_cpu: Engine, watch: BackendWatch) -> None:
    prompt = "word " * 5000
    tokens = ov_cpu.count_tokens(prompt)
    assert tokens > ov_cpu.context_window == 4096
    with pytest.raises(PromptTooLongError) as info:
        ov_cpu.generate(prompt, GREEDY)
    assert (info.value.prompt_tokens, info.value.limit) == (tokens, 4096)
    assert f"{tokens} tokens" in str(info.value) and "4096" in str(info.value)
    assert watch.calls == []
    _assert_usable(ov_cpu)


@pytest.mark.smollm2
def test_the_error_counts_every_token_of_a_prompt_the_tokenizer_caps(smollm2_gguf: Path) -> None:
    engine = get_engine("smollm2", "cpu")
    # OpenVINO's tokenizer for this GGUF stops counting at 8,192 (its context length); the engine's count does not.
    assert engine.backend.count_tokens("word " * 20000) == engine.context_window == 8192
    assert engine.count_tokens("word " * 20000) == 20001
    assert engine.count_tokens("word " * 100) == 101
    with pytest.raises(PromptTooLongError) as info:
        engine.generate("word " * 20000)
    assert info.value.prompt_tokens == 20001 and "20001 tokens" in str(info.value)


def test_max_new_tokens_is_lowered_to_what_fits_the_window(ov_cpu: Engine) -> None:
    prompt = "word " * 4080
    tokens = ov_cpu.count_tokens(prompt)
    room = 4096 - tokens
    assert 0 < room < 50
    result = ov_cpu.generate(prompt, GenerationParams(max_new_tokens=50, ignore_eos=True))
    assert (result.completion_tokens, result.finish_reason) == (room, "length")
    assert len(result.notes) == 1 and f"from 50 to {room}" in result.notes[0] and "4096" in result.notes[0]
    assert ov_cpu.generate(CHAT, GREEDY).notes == ()


@pytest.mark.npu_on_cpu
def test_the_npu_window_ends_generation_with_length(npu_on_cpu: Engine) -> None:
    prompt = "hello there " * 60
    tokens = npu_on_cpu.count_tokens(prompt)
    assert tokens <= 256 and npu_on_cpu.context_window == 320
    result = npu_on_cpu.generate(prompt, GenerationParams(max_new_tokens=200, ignore_eos=True))
    assert (result.completion_tokens, result.finish_reason) == (320 - tokens, "length")
    assert result.notes
    _assert_usable(npu_on_cpu)


# -- 5. parameters ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": float("inf")}, "temperature must be a finite number"),
        ({"temperature": float("nan")}, "temperature must be a finite number"),
        ({"temperature": 10**400}, "temperature must be a finite number"),
        ({"temperature": 1e300}, "temperature must be a finite number"),
        ({"top_p": float("nan")}, "top_p must be a finite number"),
        ({"top_p": float("inf")}, "top_p must be a finite number"),
        ({"repetition_penalty": float("inf")}, "repetition_penalty must be a finite number"),
        ({"repetition_penalty": float("nan")}, "repetition_penalty must be a finite number"),
        ({"max_new_tokens": 2**64}, "max_new_tokens must be at most 2147483647"),
        ({"max_new_tokens": 2**31}, "max_new_tokens must be at most 2147483647"),
        ({"top_k": 2**64}, "top_k must be at most 2147483647"),
        ({"seed": 2**64}, "seed must be at most 2147483647"),
        ({"seed": 2**31}, "seed must be at most 2147483647"),
        ({"max_new_tokens": True}, "max_new_tokens must be an integer"),
        ({"seed": False}, "seed must be an integer"),
        ({"temperature": True}, "temperature must be a number"),
        ({"do_sample": 1}, "do_sample must be True or False"),
        ({"ignore_eos": "yes"}, "ignore_eos must be True or False"),
        ({"timeout_s": 0}, "timeout_s must be above 0"),
        ({"timeout_s": float("nan")}, "timeout_s must be a finite number"),
    ],
)
def test_out_of_range_parameters_are_refused_before_any_backend(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        GenerationParams(**kwargs)


def test_a_long_number_is_shortened_in_the_error() -> None:
    with pytest.raises(InvalidParameterError) as info:
        GenerationParams(temperature=10**400)
    assert len(str(info.value)) < 120


def test_the_largest_accepted_integers_reach_the_backend(ov_cpu: Engine) -> None:
    top = 2**31 - 1
    prompt = "word " * 4080  # leaves a few tokens of the window: max_new_tokens=2**31-1 is lowered to them
    room = 4096 - ov_cpu.count_tokens(prompt)
    params = GenerationParams(max_new_tokens=top, top_k=top, seed=top, do_sample=True, ignore_eos=True)
    result = ov_cpu.generate(prompt, params)
    assert (result.completion_tokens, result.finish_reason) == (room, "length")


async def test_an_empty_raw_prompt_is_refused(ov_cpu: Engine, watch: BackendWatch) -> None:
    with pytest.raises(InvalidParameterError, match="empty"):
        ov_cpu.generate("")
    with pytest.raises(InvalidParameterError, match="empty"):
        ov_cpu.stream("")
    with pytest.raises(InvalidParameterError, match="empty"):
        await ov_cpu.agenerate("")
    with pytest.raises(InvalidParameterError, match="params must be a GenerationParams, got dict"):
        ov_cpu.generate(CHAT, {"max_new_tokens": 5})  # type: ignore[arg-type]
    assert watch.calls == []
    _assert_usable(ov_cpu)


# -- 6. deadlines ----------------------------------------------------------------------------------------------------
def test_a_deadline_stops_generation_with_finish_reason_timeout(ov_cpu: Engine, watch: BackendWatch) -> None:
    result = ov_cpu.generate(CHAT, GenerationParams(max_new_tokens=2000, ignore_eos=True, timeout_s=0.01))
    assert result.finish_reason == "timeout"
    assert result.completion_tokens == watch.calls[0].completion_tokens < STOPPED_EARLY
    stream = ov_cpu.stream(CHAT, GenerationParams(max_new_tokens=2000, ignore_eos=True, timeout_s=0.01))
    assert "".join(stream) == stream.result.text and stream.result.finish_reason == "timeout"
    _assert_usable(ov_cpu)


def test_a_deadline_that_passes_in_the_queue_never_runs(ov_cpu: Engine, watch: BackendWatch) -> None:
    watch.hold()
    busy = threading.Thread(target=ov_cpu.generate, args=(CHAT, GREEDY))
    busy.start()
    watch.started.wait()
    late = ov_cpu.generate(CHAT, GenerationParams(max_new_tokens=24, timeout_s=0.05))
    watch.release()
    busy.join()
    assert (late.finish_reason, late.completion_tokens, late.text) == ("timeout", 0, "")
    assert late.notes and "nothing was generated" in late.notes[0]
    assert len(watch.calls) == 1, "only the call that held the engine ran"
    _assert_usable(ov_cpu)
