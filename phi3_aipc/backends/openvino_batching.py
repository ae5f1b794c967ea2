"""OpenVINO GenAI with continuous batching (``backend="openvino-batching"``), for the CPU and the Intel GPU.

One ``ContinuousBatchingPipeline`` (paged KV cache) serves every concurrent call: each call adds its request, and
one stepper thread runs ``step()``, which advances all running requests by a token together (prompts prefill in
chunks beside them). The engine lets every call through at once for a backend that declares ``concurrent``; the
stateful NPU pipeline cannot batch, so this backend refuses the NPU (``backend="openvino"`` serialises there).

Per request, as on the serialising backend: the prompt, sampling settings, constraint (structured output, tool-call
grammars) and ``max_new_tokens`` are its own; stop strings are cut by the engine at the exact character, and a stop,
a cancel or a deadline stops that request alone (``GenerationHandle.stop()``) at its next token.

Options (besides OpenVINO properties): ``KV_CACHE_SIZE`` (GB of KV cache, default 1), ``MAX_NUM_SEQS`` (requests
decoded in one step, default 32), ``MAX_NUM_BATCHED_TOKENS`` (tokens per step, prefill included, default 256),
``ENABLE_PREFIX_CACHING`` (default True: a shared system prompt is computed once; ``prefix_reuse`` is the same).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Mapping
from typing import Any

import openvino_genai as ov_genai

from phi3_aipc.backends.base import TextCallback
from phi3_aipc.backends.openvino_genai import (
    OpenVINOGenAIBackend,
    _grammar_error,
    _pick_target,
    _pipeline_config,
    _upper_keys,
    available_devices,
)
from phi3_aipc.devices import device_kind
from phi3_aipc.errors import InvalidParameterError, Phi3AIPCError, UnsupportedFeatureError
from phi3_aipc.models import Artifact
from phi3_aipc.params import BackendOutput, Constraint, GenerationParams, Timings

SCHEDULER_DEFAULTS: dict[str, Any] = {
    "KV_CACHE_SIZE": 1,
    "MAX_NUM_SEQS": 32,
    "MAX_NUM_BATCHED_TOKENS": 256,
    "ENABLE_PREFIX_CACHING": True,
}
_SCHEDULER_FIELDS = {
    "KV_CACHE_SIZE": "cache_size",
    "MAX_NUM_SEQS": "max_num_seqs",
    "MAX_NUM_BATCHED_TOKENS": "max_num_batched_tokens",
    "ENABLE_PREFIX_CACHING": "enable_prefix_caching",
}
#: After each step the stepper sleeps this long, 0: a release of the GIL. OpenVINO GenAI 2026.4's Python ``step()``
#: holds the GIL for the whole step, and a thread that never blocks hands it on only when forced, so the other
#: threads (callers adding requests, readers of new tokens, the server's event loop) ran in turns of one per step.
#: Measured with SmolLM2 on 2 quiet cores (benchmarks/concurrency.py, 8 streams of 32 tokens, one run each): median
#: TTFT through the server 484 ms without it, 176 ms with it; in process 113 against 71 ms; one stream's tokens/s the
#: same (176.5 / 177.3). A 1 ms sleep cut TTFT as much but cost one stream 20% of its tokens/s.
YIELD_AFTER_STEP_S = 0.0
_ENDED = {
    ov_genai.GenerationStatus.FINISHED,
    ov_genai.GenerationStatus.STOP,
    ov_genai.GenerationStatus.CANCEL,
}
_ENDED.add(
    ov_genai.GenerationStatus.IGNORED
)  # refused by the scheduler (e.g. the prompt outgrows the KV cache)


class BatchingBackend(OpenVINOGenAIBackend):
    name = "openvino-batching"
    #: Generations may run at the same time: the engine lets every call through (see phi3_aipc.engine.jobs).
    concurrent = True

    def __init__(
        self, make_pipeline: Any, artifact: Artifact, device: str, config: dict[str, Any], make_probe: Any
    ):
        self._steps = _Stepper(make_pipeline)
        self._grammars = _GrammarCheck(make_probe)
        super().__init__(_PipelineView(self._steps), artifact, device, config)
        self._tokenizer_lock = threading.Lock()

    @classmethod
    def pick_device(cls, requested: str, options: Mapping[str, Any]) -> str:
        device = _pick_target(requested, _upper_keys(options))
        if device_kind(device) == "NPU" and requested == "AUTO":
            # 'auto' means the best device this backend runs on: the GPU, else the CPU.
            return next(d for d in (*available_devices(), "CPU") if device_kind(d) in ("GPU", "CPU"))
        if device_kind(device) == "NPU":
            raise UnsupportedFeatureError(
                "Continuous batching does not run on the NPU (its pipeline is stateful, one request at a time): "
                "use backend='openvino' there, or device='cpu' / 'gpu' with backend='openvino-batching'."
            )
        return device

    @classmethod
    def load(cls, artifact: Artifact, device: str, options: dict[str, Any]) -> BatchingBackend:
        properties = _upper_keys(options)
        if "PREFIX_REUSE" in properties:  # the serialising backend's name for the same switch
            properties["ENABLE_PREFIX_CACHING"] = properties.pop("PREFIX_REUSE")
        scheduler = _scheduler_config(
            {k: properties.pop(k) for k in list(properties) if k in SCHEDULER_DEFAULTS}
        )
        config = _pipeline_config(device, properties)
        started = time.perf_counter()

        def make_pipeline() -> Any:
            return ov_genai.ContinuousBatchingPipeline(str(artifact.path), scheduler, device, config)

        backend = cls(
            make_pipeline, artifact, device, config, lambda: _probe_pipeline(artifact, device, config)
        )
        backend.load_ms = (time.perf_counter() - started) * 1000
        return backend

    def count_tokens(self, prompt: str) -> int:
        with self._tokenizer_lock:  # called from every caller's thread at once
            return super().count_tokens(prompt)

    def apply_chat_template(self, messages: Any, tools: Any = None) -> str:
        with self._tokenizer_lock:
            return super().apply_chat_template(messages, tools)

    def generate(
        self,
        prompt: str,
        params: GenerationParams,
        on_text: TextCallback,
        constraint: Constraint | None = None,
    ) -> BackendOutput:
        config = self._generation_config(params, constraint)
        if constraint is not None:
            self._grammars.check(constraint, self._generation_config(_PROBE, constraint))
        prompt_tokens = self.count_tokens(prompt)
        started = time.perf_counter()
        try:
            handle, epoch = self._steps.add(prompt, config)
            reader = _Reader(self, handle, on_text)
            try:
                self._steps.follow(handle, epoch, reader.take)
            except BaseException:
                handle.stop()  # never leave a request decoding for nobody
                raise
        except RuntimeError as exc:
            if constraint is not None and "xgrammar" in str(exc):
                raise _grammar_error(constraint, exc) from exc
            raise Phi3AIPCError(
                f"The batch this request ran in failed ({str(exc).strip()[:300]}); the pipeline was reloaded. "
                f"Retry the request."
            ) from exc
        generated = len(reader.ids)
        first = reader.first_token_s
        ttft = None if first is None else (first - started) * 1000
        total_ms = (time.perf_counter() - started) * 1000
        tpot = (total_ms - ttft) / (generated - 1) if ttft is not None and generated > 1 else None
        return BackendOutput(
            prompt_tokens=prompt_tokens,
            completion_tokens=generated,
            timings=Timings(
                ttft_ms=ttft,
                tpot_ms=tpot,
                tokens_per_second=1000.0 / tpot if tpot else None,
                generate_ms=total_ms,
            ),
        )

    def decode(self, ids: list[int]) -> str:
        with self._tokenizer_lock:
            return self._tokenizer.decode(ids)

    def close(self) -> None:
        self._steps.close()


#: A constraint is tried with one token on its own before it joins the batch.
_PROBE = GenerationParams(max_new_tokens=1)


def _probe_pipeline(artifact: Artifact, device: str, config: dict[str, Any]) -> Any:
    """A second, small pipeline of the same model that only ever runs constraint probes."""
    scheduler = ov_genai.SchedulerConfig()
    scheduler.cache_size = 0
    scheduler.num_kv_blocks = 8  # a probe is a few prompt tokens and one generated token
    scheduler.enable_prefix_caching = False
    return ov_genai.ContinuousBatchingPipeline(str(artifact.path), scheduler, device, config)


class _GrammarCheck:
    """Each new constraint is compiled (one token generated under it) on a pipeline of its own before it joins the
    batch, so a schema xgrammar refuses fails its own request, never the batch.

    Why a separate pipeline: xgrammar compiles a request's grammar inside ``step()``, and a refusal there leaves the
    pipeline unusable for every request in it (checked on OpenVINO GenAI 2026.4: each later step fails). The probe
    pipeline is made on the first constraint and remade after a refusal; results are kept per constraint, so a
    tool set or schema used again is not probed again.
    """

    def __init__(self, make_pipeline: Any):
        self._make_pipeline = make_pipeline
        self._pipeline: Any = None
        self._passed: set[Constraint] = set()
        self._lock = threading.Lock()

    def check(self, constraint: Constraint, config: Any) -> None:
        if constraint in self._passed:
            return
        with self._lock:
            if constraint in self._passed:
                return
            if self._pipeline is None:
                self._pipeline = self._make_pipeline()
            try:
                self._pipeline.generate(["Hi"], [config])
            except RuntimeError as exc:
                self._pipeline = None  # broken by the refusal: the next probe makes a fresh one
                if "xgrammar" in str(exc):
                    raise _grammar_error(constraint, exc) from exc
                raise
            self._passed.add(constraint)


class _Reader:
    """One request's new tokens as text deltas: the whole answer decoded, less what was already sent, holding back a
    trailing partial UTF-8 character (a byte-level token can end mid-character)."""

    def __init__(self, backend: BatchingBackend, handle: Any, on_text: TextCallback):
        self._backend = backend
        self._handle = handle
        self._on_text = on_text
        self.ids: list[int] = []
        self._sent = ""
        self._stopped = False
        self.first_token_s: float | None = None

    def take(self, outputs: Mapping[int, Any], final: bool) -> None:
        for output in outputs.values():
            self.ids.extend(output.generated_ids)
        if self.ids and self.first_token_s is None:
            self.first_token_s = time.perf_counter()
        if self._stopped:
            return
        text = self._backend.decode(self.ids)
        if text.endswith("\ufffd") and not final:
            text = text[:-1]
        delta = text[len(self._sent) :] if text.startswith(self._sent) else ""
        if not delta:
            return
        self._sent += delta
        if not self._on_text(delta):
            self._stopped = True
            self._handle.stop()


class _Stepper:
    """Drives the pipeline: one thread calls ``step()`` while any request runs; callers add requests and wait for
    their own tokens. One lock keeps ``add_request`` and ``step`` apart.

    A step that raises (e.g. xgrammar refusing one request's schema, which only surfaces inside ``step()``) leaves
    the pipeline unusable: every request then in it fails with that error, and a fresh pipeline takes its place, so
    one bad request never poisons the engine. ``epoch`` counts those failures.
    """

    def __init__(self, make_pipeline: Any):
        self._make_pipeline = make_pipeline
        self.pipeline = make_pipeline()
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._stepped = threading.Condition()
        self._work = threading.Event()
        self._closed = False
        self._epoch = 0
        self._failures: dict[int, BaseException] = {}
        self._thread = threading.Thread(target=self._run, name="phi3-aipc-batching", daemon=True)
        self._thread.start()

    def add(self, prompt: str, config: Any) -> tuple[Any, int]:
        with self._lock:
            handle = self.pipeline.add_request(next(self._ids), prompt, config)
            epoch = self._epoch
        self._work.set()
        return handle, epoch

    def follow(self, handle: Any, epoch: int, take: Any) -> None:
        """Hand ``take`` each batch of new tokens (on the caller's thread) until the request ends."""
        while True:
            with self._stepped:
                while not handle.can_read() and handle.get_status() not in _ENDED:
                    if self._epoch != epoch:
                        raise self._failures[epoch]
                    self._stepped.wait(0.1)
            status = handle.get_status()
            if handle.can_read():
                take(handle.read(), False)
            if status == ov_genai.GenerationStatus.IGNORED:
                raise Phi3AIPCError(
                    "The batching scheduler refused the request: its prompt does not fit the KV cache. Load the "
                    "model with a larger options={'KV_CACHE_SIZE': <GB>}, or shorten the prompt."
                )
            if status in _ENDED and not handle.can_read():
                take({}, True)
                return

    def _run(self) -> None:
        while not self._closed:
            self._work.wait(0.1)
            with self._lock:
                busy = self.pipeline.has_non_finished_requests()
                if busy:
                    try:
                        self.pipeline.step()
                    except Exception as exc:  # noqa: BLE001 - handed to every request of this pipeline
                        self._failures[self._epoch] = exc
                        self._epoch += 1
                        self.pipeline = self._make_pipeline()
                else:
                    self._work.clear()  # under the lock: an add() after this sets it again
            with self._stepped:
                self._stepped.notify_all()
            if busy:
                time.sleep(YIELD_AFTER_STEP_S)

    def close(self) -> None:
        self._closed = True
        self._work.set()


class _PipelineView:
    """The current ContinuousBatchingPipeline under the two names the serialising backend's helpers call."""

    def __init__(self, steps: _Stepper):
        self._steps = steps

    def get_generation_config(self) -> Any:
        return self._steps.pipeline.get_config()

    def get_tokenizer(self) -> Any:
        return self._steps.pipeline.get_tokenizer()


def _scheduler_config(given: dict[str, Any]) -> Any:
    values = {**SCHEDULER_DEFAULTS, **given}
    scheduler = ov_genai.SchedulerConfig()
    for key, value in values.items():
        wanted = bool if key == "ENABLE_PREFIX_CACHING" else int
        if not isinstance(value, wanted) or (wanted is int and (isinstance(value, bool) or value < 1)):
            raise InvalidParameterError(
                f"{key} must be {'True or False' if wanted is bool else 'a positive integer'}, got {value!r}."
            )
        setattr(scheduler, _SCHEDULER_FIELDS[key], value)
    return scheduler
