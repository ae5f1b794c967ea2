"""Phi3AIPC, the LlamaIndex FunctionCallingLLM, against real engines and real LlamaIndex components (no mocks).

SmolLM2-135M-Instruct (GGUF, OpenVINO GenAI on the CPU) gives real answers; the tiny random Phi-3 IR checks metadata
and the NPU code path (the NPU's static pipeline executed on the CPU via NPUW_DEVICES=CPU, not a real NPU).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_index.core")

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ImageBlock, MessageRole, ToolCallBlock
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel, ValidationError

from llama_index_phi3_aipc import NoToolCallError, Phi3AIPC, StructuredOutputError
from phi3_aipc import GenerationResult, Timings
from phi3_aipc.chat import ChatTurn
from phi3_aipc.errors import (
    InvalidParameterError,
    ModelNotFoundError,
    PromptTooLongError,
    UnsupportedFeatureError,
)

# The NPU's static-shape pipeline run on the CPU: the prompt limit and context come from these two numbers.
NPU_ON_CPU = {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 256, "MIN_RESPONSE_LEN": 64}
QUESTION = [ChatMessage(role="user", content="What is the capital of France?")]


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def get_weather(city: str) -> str:
    """Get today's weather for a city."""
    return f"Snow in {city}."


TOOLS = [FunctionTool.from_defaults(multiply), FunctionTool.from_defaults(get_weather)]


class Person(BaseModel):
    name: str
    age: int


@pytest.fixture(scope="module")
def smol() -> Phi3AIPC:
    pytest.importorskip("openvino_genai")
    llm = Phi3AIPC(model="smollm2", device="cpu", max_new_tokens=12)
    try:
        llm.engine  # noqa: B018 - load once for the module
    except ModelNotFoundError as exc:
        pytest.skip(f"SmolLM2 is not installed: {exc}")
    return llm


@pytest.fixture(scope="module")
def tiny(tiny_phi3_ov: Path) -> Phi3AIPC:
    return Phi3AIPC(model=str(tiny_phi3_ov), device="cpu", max_new_tokens=8)


@pytest.fixture(scope="module")
def npu(tiny_phi3_ov: Path) -> Phi3AIPC:
    return Phi3AIPC(model=str(tiny_phi3_ov), device="npu", options=NPU_ON_CPU, max_new_tokens=8)


# -- construction --------------------------------------------------------------------------------------------------
def test_importing_loads_no_backend_and_no_torch() -> None:
    code = (
        "import sys, llama_index_phi3_aipc; "
        "loaded = [m for m in ('torch', 'openvino', 'openvino_genai', 'transformers') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_construction_loads_nothing_and_the_first_call_reports_a_missing_model(tmp_path: Path) -> None:
    llm = Phi3AIPC(model=str(tmp_path / "no-such-model"), device="cpu")
    assert llm._engine is None
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        llm.complete("hi")


def test_fields_and_aliases() -> None:
    llm = Phi3AIPC(model="smollm2", num_output=77, temperature=0.5, top_k=5, stop=["END"], options={"A": 1})
    assert (llm.max_new_tokens, llm.temperature, llm.top_k, llm.stop, llm.options) == (
        77,
        0.5,
        5,
        ["END"],
        {"A": 1},
    )
    assert Phi3AIPC(max_tokens=9).max_new_tokens == 9
    assert Phi3AIPC.class_name() == "Phi3AIPC"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": -1}, "temperature must be at least 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        ({"top_p": 1.5}, "top_p must be"),
        ({"stop": [""]}, "non-empty string"),
        ({"options": "MAX_PROMPT_LEN=2048"}, "options must be a dict"),
        ({"num_output": 5, "max_new_tokens": 6}, "Pass only one of"),
        ({"device": ""}, "non-empty string"),
        ({"context_window": 0}, "context_window must be a positive"),
    ],
)
def test_bad_construction_arguments_say_what_to_fix(kwargs: dict, message: str) -> None:
    with pytest.raises((InvalidParameterError, ValidationError), match=message):
        Phi3AIPC(model="smollm2", **kwargs)


# -- metadata ------------------------------------------------------------------------------------------------------
@pytest.mark.smollm2
def test_metadata_on_smollm2(smol: Phi3AIPC) -> None:
    meta = smol.metadata
    # The GGUF's context_length (8192) less the answer, in LlamaIndex's tokens (see the packing tests), plus num_output.
    assert smol.engine.context_window == 8192
    ratio = smol._tokens_per_llama_index_token(smol.engine)
    assert meta.context_window == int((8192 - 12 - 32) / ratio) + 12
    assert meta.num_output == 12
    assert meta.is_chat_model and meta.is_function_calling_model
    assert meta.model_name == "smollm2"
    assert Phi3AIPC(model="smollm2", device="cpu", context_window=2048).metadata.context_window == 2048


def test_metadata_of_an_openvino_ir_comes_from_its_config(tiny: Phi3AIPC, tiny_phi3_ov: Path) -> None:
    config = json.loads((tiny_phi3_ov / "config.json").read_text())
    assert tiny.engine.context_window == config["max_position_embeddings"]
    room = tiny.metadata.context_window - tiny.metadata.num_output
    assert room * tiny._tokens_per_llama_index_token(tiny.engine) <= config["max_position_embeddings"] - 8
    assert tiny.metadata.model_name == str(tiny_phi3_ov)


@pytest.mark.npu_on_cpu
def test_metadata_on_the_npu_pipeline_leaves_room_for_no_more_than_max_prompt_len(npu: Phi3AIPC) -> None:
    meta = npu.metadata
    assert npu.engine.context_window == 256 + 64
    # What LlamaIndex may fill (window less num_output), in the engine's tokens, stays within MAX_PROMPT_LEN.
    assert (meta.context_window - meta.num_output) * npu._tokens_per_llama_index_token(npu.engine) <= 256
    assert meta.num_output == 8
    assert meta.is_function_calling_model
    assert npu.engine.device == "NPU"


@pytest.mark.npu_on_cpu
def test_npu_chat_streams_and_refuses_an_over_long_prompt(npu: Phi3AIPC) -> None:
    chunks = list(npu.stream_chat(QUESTION))
    assert "".join(c.delta or "" for c in chunks) == chunks[-1].message.content
    assert chunks[-1].additional_kwargs["completion_tokens"] == 8
    with pytest.raises(PromptTooLongError, match="MAX_PROMPT_LEN"):
        npu.chat([ChatMessage(role="user", content="weather " * 400)])


# -- generation ----------------------------------------------------------------------------------------------------
@pytest.mark.smollm2
def test_chat_answers_and_reports_usage_and_timings(smol: Phi3AIPC) -> None:
    response = smol.chat(QUESTION)
    assert "Paris" in response.message.content
    assert response.message.role == MessageRole.ASSISTANT
    usage = response.additional_kwargs
    prompt = smol.engine.format_chat([{"role": "user", "content": QUESTION[0].content}])
    assert usage["prompt_tokens"] == smol.engine.count_tokens(prompt)
    assert (
        usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > usage["prompt_tokens"]
    )
    assert usage["finish_reason"] in ("stop", "length")
    assert usage["ttft_ms"] > 0 and usage["tokens_per_second"] > 0
    assert response.raw["text"] == response.message.content
    assert response.raw["device"] == "CPU" and response.raw["backend"] == "openvino"


@pytest.mark.smollm2
def test_stream_chat_deltas_join_to_the_final_text(smol: Phi3AIPC) -> None:
    whole = smol.chat(QUESTION).message.content
    chunks = list(smol.stream_chat(QUESTION))
    deltas = [c.delta for c in chunks]
    assert "".join(deltas) == chunks[-1].message.content == whole
    completion_tokens = chunks[-1].additional_kwargs["completion_tokens"]
    # Every token is passed on as it comes (the old integration batched every 4th): about one delta per token.
    assert len([d for d in deltas if d]) >= completion_tokens // 2
    assert all(c.message.content == "".join(deltas[: i + 1]) for i, c in enumerate(chunks))


@pytest.mark.smollm2
def test_complete_stream_complete_and_formatted_prompts_agree(smol: Phi3AIPC) -> None:
    whole = smol.complete("What is the capital of France?")
    chunks = list(smol.stream_complete("What is the capital of France?"))
    assert "".join(c.delta for c in chunks) == chunks[-1].text == whole.text
    assert whole.additional_kwargs["completion_tokens"] == chunks[-1].additional_kwargs["completion_tokens"]
    # formatted=True: the caller already applied the template, so the prompt is used as is, not wrapped twice.
    prompt = smol.engine.format_chat([{"role": "user", "content": "What is the capital of France?"}])
    raw = smol.complete(prompt, formatted=True)
    assert raw.text == whole.text
    assert raw.additional_kwargs["prompt_tokens"] == whole.additional_kwargs["prompt_tokens"]


@pytest.mark.smollm2
def test_stop_strings_and_per_call_overrides(smol: Phi3AIPC) -> None:
    full = smol.complete("Count from 1 to 10, separated by commas.", max_tokens=24).text
    assert "5" in full
    cut = smol.complete("Count from 1 to 10, separated by commas.", max_tokens=24, stop=["5"])
    assert cut.text == full[: full.index("5")]
    assert cut.additional_kwargs["finish_reason"] == "stop_string"
    short = smol.complete("Count from 1 to 10, separated by commas.", max_new_tokens=3)
    assert short.additional_kwargs["completion_tokens"] == 3
    assert short.additional_kwargs["finish_reason"] == "length"


@pytest.mark.smollm2
def test_system_prompt_field_reaches_the_chat_template(smol: Phi3AIPC) -> None:
    llm = Phi3AIPC(model="smollm2", device="cpu", max_new_tokens=2, system_prompt="Answer in one word.")
    # predict() adds the system prompt as a system message, which the model's own template formats.
    llm.predict(PromptTemplate("What is the capital of {country}?"), country="France")
    response = llm.chat(llm._extend_messages(QUESTION))
    prompt = smol.engine.format_chat(
        [
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": QUESTION[0].content},
        ]
    )
    assert response.additional_kwargs["prompt_tokens"] == smol.engine.count_tokens(prompt)


@pytest.mark.smollm2
def test_callbacks_record_llm_events(smol: Phi3AIPC) -> None:
    handler = LlamaDebugHandler()
    llm = Phi3AIPC(
        model="smollm2", device="cpu", max_new_tokens=4, callback_manager=CallbackManager([handler])
    )
    llm.chat(QUESTION)
    list(llm.stream_chat(QUESTION))
    llm.complete("Hi")
    pairs = handler.get_event_pairs(CBEventType.LLM)
    assert len(pairs) == 3
    assert all(end.payload for _, end in pairs)


# -- async ---------------------------------------------------------------------------------------------------------
@pytest.mark.smollm2
async def test_async_paths_match_the_sync_ones(smol: Phi3AIPC) -> None:
    sync_text = smol.chat(QUESTION).message.content
    assert (await smol.achat(QUESTION)).message.content == sync_text
    chunks = [c async for c in await smol.astream_chat(QUESTION)]
    assert "".join(c.delta for c in chunks) == chunks[-1].message.content == sync_text
    assert chunks[-1].additional_kwargs["completion_tokens"] > 0
    completions = [c async for c in await smol.astream_complete("What is the capital of France?")]
    assert "".join(c.delta for c in completions) == completions[-1].text
    assert (await smol.acomplete("What is the capital of France?")).text == completions[-1].text


@pytest.mark.smollm2
async def test_async_streaming_never_blocks_the_event_loop(smol: Phi3AIPC) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    seen: list[int] = []
    try:
        async for _ in await smol.astream_chat(QUESTION):
            seen.append(ticks)
    finally:
        task.cancel()
    # The ticker kept running between deltas: the loop was never held by the generation.
    assert seen[-1] > seen[0]
    assert len(set(seen)) > len(seen) // 2


@pytest.mark.smollm2
async def test_abandoning_an_async_stream_frees_the_engine(smol: Phi3AIPC) -> None:
    stream = await smol.astream_complete("Write a long story about a dragon.", max_tokens=200)
    async for _ in stream:
        break
    await stream.aclose()
    # The engine is free again at once: a new generation runs to completion.
    assert (await smol.acomplete("What is the capital of France?")).text


# -- bad inputs at call time --------------------------------------------------------------------------------------
@pytest.mark.smollm2
def test_bad_call_arguments_say_what_to_fix(smol: Phi3AIPC) -> None:
    with pytest.raises(InvalidParameterError, match="does not understand the argument"):
        smol.complete("hi", frequency_penalty=1.0)
    with pytest.raises(InvalidParameterError, match="prompt must be a string"):
        smol.complete(["hi"])  # type: ignore[arg-type]
    # LlamaIndex's own callback layer already refuses a string where messages belong.
    with pytest.raises((InvalidParameterError, ValidationError), match="list"):
        smol.chat("hi")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameterError, match="messages is empty"):
        smol.chat([])
    with pytest.raises(InvalidParameterError, match="not a llama_index ChatMessage"):
        smol.chat([{"role": "user", "content": "hi"}])  # type: ignore[list-item]
    with pytest.raises(InvalidParameterError, match="temperature must be"):
        smol.chat(QUESTION, temperature=-2)
    with pytest.raises(InvalidParameterError, match="could not be decoded"):  # a broken image, at the door
        smol.chat([ChatMessage(role="user", blocks=[ImageBlock(image=b"\x89PNG\r\n\x1a\n")])])
    image = ChatMessage(role="user", blocks=[ImageBlock(image=_tiny_png(), image_mimetype="image/png")])
    with pytest.raises(UnsupportedFeatureError, match="text only"):  # a good one, which SmolLM2 cannot see
        smol.chat([image])
    with pytest.raises(InvalidParameterError, match="not bound"):
        smol.chat_with_tools(TOOLS, user_msg="hi", tool_choice="send_email")


# -- function calling -----------------------------------------------------------------------------------------------
@pytest.mark.smollm2
def test_required_tool_call_has_the_right_arguments(smol: Phi3AIPC) -> None:
    response = smol.chat_with_tools(TOOLS, user_msg="What is 12 times 7?", tool_required=True, max_tokens=48)
    calls = smol.get_tool_calls_from_response(response)
    assert [(c.tool_name, c.tool_kwargs) for c in calls] == [("multiply", {"a": 12, "b": 7})]
    assert calls[0].tool_id.startswith("call_")
    # The call is also where LlamaIndex's other readers look for it.
    assert isinstance(response.message.blocks[-1], ToolCallBlock)
    assert response.message.additional_kwargs["tool_calls"][0]["function"]["name"] == "multiply"


@pytest.mark.smollm2
async def test_async_and_streamed_tool_calls_match(smol: Phi3AIPC) -> None:
    expected = smol.get_tool_calls_from_response(
        smol.chat_with_tools(
            TOOLS, user_msg="What is the weather in Oslo?", tool_choice="get_weather", max_tokens=48
        )
    )
    assert [(c.tool_name, c.tool_kwargs) for c in expected] == [("get_weather", {"city": "Oslo"})]
    response = await smol.achat_with_tools(
        TOOLS, user_msg="What is the weather in Oslo?", tool_choice="get_weather", max_tokens=48
    )
    assert [(c.tool_name, c.tool_kwargs) for c in smol.get_tool_calls_from_response(response)] == [
        ("get_weather", {"city": "Oslo"})
    ]
    chunks = list(
        smol.stream_chat_with_tools(
            TOOLS, user_msg="What is the weather in Oslo?", tool_choice="get_weather", max_tokens=48
        )
    )
    streamed = smol.get_tool_calls_from_response(chunks[-1])
    assert [(c.tool_name, c.tool_kwargs) for c in streamed] == [("get_weather", {"city": "Oslo"})]
    assert "get_weather" not in "".join(c.delta or "" for c in chunks), "call markup is not shown as text"
    achunks = [
        c
        async for c in await smol.astream_chat_with_tools(
            TOOLS, user_msg="Weather in Oslo?", tool_choice="get_weather", max_tokens=48
        )
    ]
    assert smol.get_tool_calls_from_response(achunks[-1])[0].tool_name == "get_weather"


@pytest.mark.smollm2
def test_tool_choice_names_the_tool_and_predict_and_call_runs_it(smol: Phi3AIPC) -> None:
    output = smol.predict_and_call(
        TOOLS, user_msg="What is 6 times 7?", tool_choice="multiply", max_tokens=48
    )
    assert output.sources[0].tool_name == "multiply"
    assert output.sources[0].raw_input["kwargs"] == {"a": 6, "b": 7}
    assert output.response == "42"


@pytest.mark.smollm2
def test_no_tool_call_is_reported_clearly(smol: Phi3AIPC) -> None:
    response = smol.chat_with_tools(TOOLS, user_msg="Hi", tool_choice="none")
    assert smol.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    with pytest.raises(NoToolCallError, match="Expected at least one tool call"):
        smol.get_tool_calls_from_response(response)


@pytest.mark.smollm2
def test_parallel_calls_are_all_returned_unless_parallel_calls_are_off(smol: Phi3AIPC) -> None:
    from llama_index_phi3_aipc.base import _response

    # Two calls written the way the engine's protocol asks the model to write them, parsed through that protocol.
    tools = [{"name": t.metadata.name, "parameters": t.metadata.get_parameters_dict()} for t in TOOLS]
    text = (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Lima"}}</tool_call>'
    )
    result = GenerationResult(
        text=text, finish_reason="stop", prompt_tokens=1, completion_tokens=40, timings=Timings()
    )

    def response(parallel: bool) -> ChatResponse:
        turn = ChatTurn([{"role": "user", "content": "x"}], tools, "auto", parallel_tool_calls=parallel)
        plan = turn.plan(smol.engine)
        plan.feed(text)
        return _response(plan.finish(result))

    both, one = response(True), response(False)
    assert [c.tool_kwargs["city"] for c in smol.get_tool_calls_from_response(both)] == ["Oslo", "Lima"]
    assert [c.tool_kwargs["city"] for c in smol.get_tool_calls_from_response(one)] == ["Oslo"]
    (dropped,) = one.message.additional_kwargs["invalid_tool_calls"]
    assert "parallel" in dropped["error"] and "Lima" in dropped["raw"]


@pytest.mark.smollm2
def test_tool_results_are_rendered_back_into_the_prompt(smol: Phi3AIPC) -> None:
    call = ToolCallBlock(tool_call_id="call_1", tool_name="get_weather", tool_kwargs={"city": "Oslo"})
    history = [
        ChatMessage(role="user", content="What is the weather in Oslo?"),
        ChatMessage(role="assistant", blocks=[call]),
        ChatMessage(
            role="tool", content="Snow in Oslo, -3 degrees.", additional_kwargs={"tool_call_id": "call_1"}
        ),
    ]
    request = smol._turn(history, {"tools": TOOLS}).plan(smol.engine)
    prompt = smol.engine.format_chat(request.prompt)
    assert '"name": "get_weather"' in prompt and '"city": "Oslo"' in prompt
    assert "Snow in Oslo, -3 degrees." in prompt and 'name="get_weather"' in prompt
    # Tool traffic in the history is rendered even when no tools are bound any more.
    assert "Snow in Oslo" in smol.engine.format_chat(smol._turn(history, {}).plan(smol.engine).prompt)
    answer = smol.chat_with_tools(TOOLS, chat_history=history, tool_choice="none")
    assert answer.message.content


# -- structured output ---------------------------------------------------------------------------------------------
EXTRACT = PromptTemplate("Extract the person from this text: {text}")


@pytest.mark.smollm2
def test_structured_predict_validates_into_the_class(smol: Phi3AIPC) -> None:
    person = smol.structured_predict(
        Person, EXTRACT, text="Alice is 31 years old.", llm_kwargs={"max_tokens": 40}
    )
    assert isinstance(person, Person)
    assert person.name == "Alice" and person.age == 31


@pytest.mark.smollm2
async def test_astructured_predict_and_streaming(smol: Phi3AIPC) -> None:
    person = await smol.astructured_predict(
        Person, EXTRACT, text="Bob is 45 years old.", llm_kwargs={"max_tokens": 40}
    )
    assert (person.name, person.age) == ("Bob", 45)
    partials = list(
        smol.stream_structured_predict(
            Person, EXTRACT, text="Bob is 45 years old.", llm_kwargs={"max_tokens": 40}
        )
    )
    assert partials[-1] == person and len(partials) > 2
    apartials = [
        p
        async for p in await smol.astream_structured_predict(
            Person, EXTRACT, text="Bob is 45 years old.", llm_kwargs={"max_tokens": 40}
        )
    ]
    assert apartials[-1] == person


@pytest.mark.smollm2
def test_as_structured_llm(smol: Phi3AIPC) -> None:
    structured = Phi3AIPC(model="smollm2", device="cpu", max_new_tokens=40).as_structured_llm(Person)
    response = structured.chat(
        [ChatMessage(role="user", content="Extract the person: Carol is 27 years old.")]
    )
    assert isinstance(response.raw, Person)
    assert Person.model_validate_json(response.message.content) == response.raw
    assert response.raw.age == 27


@pytest.mark.smollm2
def test_structured_output_errors_are_clear(smol: Phi3AIPC) -> None:
    with pytest.raises(StructuredOutputError, match="cut off after 3 tokens"):
        smol.structured_predict(Person, EXTRACT, text="Alice is 31.", llm_kwargs={"max_tokens": 3})
    with pytest.raises(InvalidParameterError, match="pydantic BaseModel subclass"):
        smol.structured_predict(dict, EXTRACT, text="x")  # type: ignore[arg-type]


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    return buffer.getvalue()
