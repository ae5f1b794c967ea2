"""The Engine: one loaded backend, generations served one at a time, exact stop strings, the context window."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from phi3_aipc.backends.base import Backend, Message
from phi3_aipc.engine.jobs import Job, Run, TextSink, Turnstile
from phi3_aipc.engine.streams import GAVE_WAY, AsyncGenerationStream, GenerationStream, JobFactory, settle
from phi3_aipc.errors import InvalidParameterError, PromptTooLongError, UnsupportedFeatureError
from phi3_aipc.images import has_images, place_images, prompt_with_images, refuse_images_unless_taken
from phi3_aipc.messages import check_messages, control_spellings, neutralise_messages, neutralise_value
from phi3_aipc.params import (
    MAX_INT_PARAM,
    BackendOutput,
    Constraint,
    FinishReason,
    GenerationParams,
    GenerationResult,
    Timings,
)

PromptInput = str | Sequence[Message]
log = logging.getLogger("phi3_aipc")
#: The warm-up's raw prompt: a few tokens, fewer than one KV-cache block, so the prefix cache keeps nothing of it and
#: no later answer is computed from its cache.
WARM_UP_PROMPT = "Hello"
#: How the error for a prompt that does not fit names the policy that fits it instead.
TRIM_HINT = (
    "context_overflow='trim' on a chat turn, ChatPhi3AIPC or Phi3AIPC does it: the oldest turns go, then long "
    "tool results and retrieved context are shortened; the default, context_overflow='error', refuses"
)


class Engine:
    """A loaded model. Thread-safe: generations run one at a time, in arrival order, on worker threads.

    Stopping: every call stops at the next token when its caller goes away: Ctrl-C in the calling thread (re-raised
    once the engine is free), a cancelled asyncio task, a stream closed or no longer referenced, an exception raised
    by ``on_text``, or the ``timeout_s`` deadline in GenerationParams (finish_reason "timeout"). A call that is
    stopped while it waits for its turn never runs.

    The context window: a prompt that leaves no room for one new token raises PromptTooLongError with both counts.
    When the prompt plus ``max_new_tokens`` exceed the window, the engine generates what fits: ``max_new_tokens`` is
    lowered to the room left, the result ends with finish_reason "length" if it fills that room, and
    ``result.notes`` says what was lowered.
    """

    def __init__(self, backend: Backend):
        self.backend = backend
        self._turns = Turnstile()
        self._warm_up: Job | None = None

    # -- what callers may ask about ---------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.backend.model_name

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def context_window(self) -> int | None:
        return self.backend.context_window

    @property
    def max_prompt_tokens(self) -> int | None:
        return self.backend.max_prompt_tokens

    @property
    def model_family(self) -> str:
        return self.backend.model_family

    @property
    def special_tokens(self) -> frozenset[str]:
        return self.backend.special_tokens

    @property
    def chat_template(self) -> str | None:
        """The model's chat template source, where the backend can read it (it picks the tool-call format)."""
        return self.backend.chat_template

    @property
    def takes_images(self) -> bool:
        """Whether the backend takes images with a prompt (``backend="openvino-vlm"``)."""
        return bool(getattr(self.backend, "takes_images", False))

    @property
    def constraint_kinds(self) -> frozenset[str]:
        return self.backend.constraint_kinds

    @property
    def load_ms(self) -> float | None:
        return self.backend.load_ms

    def format_chat(self, messages: Sequence[Message], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt the model sees for ``messages``: the message rules (``phi3_aipc.messages``: roles, text
        content, control-token text neutralised, in tool definitions too) applied, then the model's own chat
        template. Messages with images give an ``ImagePrompt`` carrying them (a model that takes no images refuses
        them)."""
        tokens = control_spellings(self.special_tokens)
        shown = neutralise_value(tools, tokens) if tools and tokens else tools
        checked = neutralise_messages(check_messages(messages), tokens)
        if not has_images(checked):
            return self.render(checked, shown)
        refuse_images_unless_taken(self)
        placed, images = place_images(checked)
        return prompt_with_images(self.render(placed, shown), images)

    def render(self, messages: Sequence[Message], tools: list[dict[str, Any]] | None = None) -> str:
        """The chat template over messages taken as they are: for callers that already applied the message rules
        (the chat turn, whose tool protocol adds the model's own markup). Prefer ``format_chat``."""
        return self.backend.apply_chat_template(list(messages), tools)

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` becomes, however long: a count that reaches the model's context length is redone in
        pieces (see ``_count_uncapped``), so trimming and the window checks see the real size."""
        counted = self.backend.count_tokens(text)
        cap = self.backend.artifact.context_window or self.context_window
        return self._count_uncapped(text, counted, cap) if cap is not None else counted

    # -- generation ---------------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Generate one token from a tiny prompt on a worker thread, now, and return at once.

        A process pays its first inference's one-off work (OpenVINO prepares its kernels for the first input shapes:
        on the CPU most of the first answer's TTFT, 0.4 s of 0.45 s for SmolLM2) in whatever it runs first. Run at
        load (``get_engine`` does), the warm-up pays it while the caller builds its chain or the user types. A request
        that comes sooner waits its turn behind it, as behind any request (``timings.queued_ms`` says how long), which
        costs no more than paying it in the request itself. A second call does nothing. A failure is logged: the
        first request meets the same failure and raises it.
        """
        if self._warm_up is not None:
            return
        job = Job(self, WARM_UP_PROMPT, GenerationParams(max_new_tokens=1), None)
        job.add_done_callback(functools.partial(_log_failed_warm_up, job))
        self._warm_up = job
        self._turns.join(job)  # first in line: a request made right after load waits for it, never races it
        job.start()

    def wait_for_warm_up(self) -> GenerationResult | None:
        """Wait until the warm-up has ended; its result, or None if none was started or it failed (logged)."""
        if self._warm_up is None:
            return None
        self._warm_up.wait()
        return self._warm_up.result

    def generate(
        self,
        prompt: PromptInput,
        params: GenerationParams | None = None,
        *,
        constraint: Constraint | None = None,
        on_text: TextSink | None = None,
    ) -> GenerationResult:
        """Generate the whole answer. ``prompt`` is chat messages, or a raw, already formatted prompt string.

        ``on_text``, if given, receives each delta as it is generated (on the generating thread); an exception it
        raises stops the generation and is raised here.
        """
        job = self._job_factory(prompt, params, constraint)(on_text=on_text)
        job.start()
        return job.wait_for_result()

    def stream(
        self,
        prompt: PromptInput,
        params: GenerationParams | None = None,
        *,
        constraint: Constraint | None = None,
    ) -> GenerationStream:
        """Stream text deltas as tokens arrive; ``.result`` holds the GenerationResult once the stream ends."""
        return GenerationStream(self._job_factory(prompt, params, constraint))

    async def agenerate(
        self,
        prompt: PromptInput,
        params: GenerationParams | None = None,
        *,
        constraint: Constraint | None = None,
    ) -> GenerationResult:
        """``generate`` without blocking the event loop; cancelling the task stops the generation."""
        loop = asyncio.get_running_loop()
        finished = loop.create_future()
        make_job = self._job_factory(prompt, params, constraint)
        job = make_job(on_finish=lambda: loop.call_soon_threadsafe(settle, finished))
        job.start()
        try:
            await finished
        except BaseException:
            job.cancel()
            raise
        return job.outcome()

    def astream(
        self,
        prompt: PromptInput,
        params: GenerationParams | None = None,
        *,
        constraint: Constraint | None = None,
    ) -> AsyncGenerationStream:
        """Async twin of ``stream``: deltas arrive on the event loop as the generating thread produces them."""
        return AsyncGenerationStream(self._job_factory(prompt, params, constraint))

    def check_prompt_length(self, prompt: str) -> int:
        """Count the prompt's tokens and refuse one that is empty or cannot fit, before the backend sees it."""
        tokens = self.count_tokens(prompt)
        if tokens == 0:
            raise InvalidParameterError("The prompt is empty (0 tokens); pass some text or chat messages.")
        limit = self.max_prompt_tokens
        if limit is not None and tokens > limit:
            raise PromptTooLongError(
                tokens,
                limit,
                f"{self.device} prompt limit (MAX_PROMPT_LEN)",
                f"Shorten the prompt or trim the chat history ({TRIM_HINT}), or load the model with a larger "
                f"options={{'MAX_PROMPT_LEN': {_round_up(tokens)}}} (a larger limit compiles a larger model).",
            )
        window = self.context_window
        if window is not None and tokens >= window:
            raise PromptTooLongError(
                tokens,
                window,
                "model's context window",
                f"Shorten the prompt or trim the chat history ({TRIM_HINT}); at least one new token must fit.",
            )
        return tokens

    # -- internals ----------------------------------------------------------------------------------------------
    def _job_factory(
        self, prompt: PromptInput, params: GenerationParams | None, constraint: Constraint | None
    ) -> JobFactory:
        """Check a request now, in the caller's thread and before any backend sees it; make its job later."""
        if params is not None and not isinstance(params, GenerationParams):
            raise InvalidParameterError(f"params must be a GenerationParams, got {type(params).__name__}.")
        text = self._to_prompt(prompt)
        if getattr(text, "images", None):
            refuse_images_unless_taken(self)
        self._check_constraint(constraint)
        return functools.partial(Job, self, text, params or GenerationParams(), constraint)

    def _to_prompt(self, prompt: PromptInput) -> str:
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidParameterError("The prompt is an empty string; pass some text or chat messages.")
            return prompt
        return self.format_chat(prompt)

    def _check_constraint(self, constraint: Constraint | None) -> None:
        if constraint is not None and constraint.kind not in self.constraint_kinds:
            raise UnsupportedFeatureError(
                f"The '{self.backend_name}' backend cannot constrain decoding with a {constraint.kind}; it supports "
                f"{sorted(self.constraint_kinds) or 'no constraints'}. Use backend='openvino' or backend='onnx'."
            )

    def _count_uncapped(self, text: str, counted: int, cap: int) -> int:
        """The real token count of a prompt whose count reached ``cap`` (the window).

        Some tokenizers stop counting at a cap (OpenVINO's, converted from a GGUF, stops at the model's context
        length), so a 20,000-token prompt would be reported as 8,192. Counting the halves, each below the cap, and
        splitting before a space (where byte-level tokenizers split anyway) gives the real length.
        """
        if counted < cap or len(text) < 2:
            return counted
        middle = text.rfind(" ", 1, len(text) // 2 + 1)
        middle = middle if middle > 0 else len(text) // 2
        left, right = text[:middle], text[middle:]
        added = self.backend.count_tokens("")  # e.g. a BOS token, added to each piece but once to the whole
        return (
            self._count_uncapped(left, self.backend.count_tokens(left), cap)
            + self._count_uncapped(right, self.backend.count_tokens(right), cap)
            - added
        )

    def _execute(self, job: Job) -> None:
        """The job's thread: wait for its turn, generate, and hand the result (or the exception) to its caller."""
        try:
            queued = time.perf_counter()
            if not self._turns.enter(job):
                job.result = self._unstarted(job)
                return
            job.queued_ms = (time.perf_counter() - queued) * 1000
            try:
                job.result = self._run(job)
            finally:
                self._turns.leave()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, which raises it
            job.error = exc
        finally:
            job.finish()

    def _run(self, job: Job) -> GenerationResult:
        tokens = self.check_prompt_length(job.prompt)
        params, notes = self._fit_window(tokens, with_fresh_seed(job.params))
        run = Run(job, params.stop)
        started = time.perf_counter()
        output = self.backend.generate(job.prompt, params, run.on_text, job.constraint)
        text = run.finish()
        if output.timings.generate_ms is None:
            output.timings.generate_ms = (time.perf_counter() - started) * 1000
        output.timings.load_ms = self.backend.load_ms
        output.timings.queued_ms = job.queued_ms
        if job.gave_way:
            notes = (*notes, GAVE_WAY)
        return self._result(text, output, params, run, notes)

    def _fit_window(
        self, prompt_tokens: int, params: GenerationParams
    ) -> tuple[GenerationParams, tuple[str, ...]]:
        """Lower max_new_tokens to the room the context window leaves after the prompt (at least 1, checked)."""
        window = self.context_window
        if window is None or prompt_tokens + params.max_new_tokens <= window:
            return params, ()
        room = window - prompt_tokens
        note = (
            f"max_new_tokens was lowered from {params.max_new_tokens} to {room}: the prompt's {prompt_tokens} tokens "
            f"and the answer must fit the {window}-token context window."
        )
        return replace(params, max_new_tokens=room), (note,)

    def _result(
        self,
        text: str,
        output: BackendOutput,
        params: GenerationParams,
        run: Run,
        notes: tuple[str, ...],
    ) -> GenerationResult:
        reason: FinishReason
        if run.matched is not None:
            reason = "stop_string"
        elif run.stopped_by is not None:
            reason = run.stopped_by
        elif output.completion_tokens >= params.max_new_tokens:
            reason = "length"
        else:
            reason = "stop"
        return GenerationResult(
            text=text,
            finish_reason=reason,
            prompt_tokens=output.prompt_tokens,
            completion_tokens=output.completion_tokens,
            timings=output.timings,
            stop_string=run.matched,
            model=self.model_name,
            device=self.device,
            backend=self.backend_name,
            notes=(*notes, *output.notes),
            cached_prompt_tokens=output.cached_prompt_tokens,
            assisted=output.assisted,
        )

    def _unstarted(self, job: Job) -> GenerationResult:
        """The result of a call stopped (cancelled, out of time) while it waited for its turn."""
        return GenerationResult(
            text="",
            finish_reason=job.stop_reason() or "cancelled",
            prompt_tokens=0,
            completion_tokens=0,
            timings=Timings(load_ms=self.backend.load_ms),
            model=self.model_name,
            device=self.device,
            backend=self.backend_name,
            notes=("The call ended while it waited for the engine: nothing was generated.",),
        )


def _log_failed_warm_up(job: Job) -> None:
    if job.error is not None:
        log.warning("The engine's warm-up generation failed (%s: %s).", type(job.error).__name__, job.error)


def with_fresh_seed(params: GenerationParams) -> GenerationParams:
    """``params`` with a seed of its own when it samples without one.

    The backends' generators start from a fixed seed when none is given (OpenVINO GenAI's rng_seed defaults to 0),
    so every unseeded temperature-1.0 request would sample the same answer. A fresh seed per request makes sampling
    random; a given seed still repeats exactly.
    """
    if not params.sampling or params.seed is not None:
        return params
    return replace(params, seed=secrets.randbelow(MAX_INT_PARAM + 1))


def _round_up(tokens: int) -> int:
    return ((tokens + 255) // 256) * 256
