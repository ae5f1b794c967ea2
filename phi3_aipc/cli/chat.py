"""`phi3-aipc chat`: an interactive terminal chat that streams, keeps (and trims) history, /reset and /exit.

History is trimmed by the chat turn's own policy (``context_overflow="trim"``, ``phi3_aipc.context``), and the
engine reuses the KV cache of the conversation so far (on the backends that can), so a turn prefills only what is new.

Ctrl-C while an answer streams stops that answer (the generation is cancelled and the engine released) and keeps
the session; Ctrl-C at the prompt, Ctrl-D or /exit ends it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from phi3_aipc.chat import ChatTurn, TextDelta
from phi3_aipc.cli.common import add_model_arguments, engine_options
from phi3_aipc.context import TrimReport, describe, prompt_budget
from phi3_aipc.engine import Engine, get_engine
from phi3_aipc.errors import PromptTooLongError
from phi3_aipc.params import GenerationParams

HELP = (
    "Chat with the model in the terminal: streamed answers, history, /reset, /exit (Ctrl-C stops an answer)."
)
COMMANDS_HELP = (
    "Commands: /reset clears the history, /exit (or Ctrl-D) quits, Ctrl-C stops the current answer."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--system", default=None, help="An optional system message, kept through trimming.")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="Longest answer, in tokens.")
    parser.add_argument(
        "--temperature", type=float, default=None, help="Sample at this temperature (default: greedy)."
    )


def run(args: argparse.Namespace) -> int:
    print(f"Loading {args.model or 'microsoft/Phi-3-mini-4k-instruct'} on {args.device}...", file=sys.stderr)
    engine = get_engine(args.model, args.device, args.backend, engine_options(args))
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    session = ChatSession(engine, params, system=args.system)
    print(f"{engine.model_name} on {engine.device} ({engine.backend_name}). {COMMANDS_HELP}", file=sys.stderr)
    session.loop(sys.stdin, sys.stdout)
    return 0


class ChatSession:
    """History plus the loop. Every answer goes through the shared chat turn with ``context_overflow="trim"``, and
    what the trim keeps becomes the history: the prompt then only grows from turn to turn, so the engine's KV reuse
    keeps the conversation's prefix until the window fills again."""

    def __init__(self, engine: Engine, params: GenerationParams, system: str | None = None):
        self.engine = engine
        self.params = params
        self.system = system
        self.history: list[dict[str, str]] = []

    # -- the prompt budget -------------------------------------------------------------------------------------
    def budget(self) -> int | None:
        """Most prompt tokens allowed: the NPU's MAX_PROMPT_LEN, or the context window minus the answer."""
        return prompt_budget(self.engine, self.params.max_new_tokens)

    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history

    def prompt_tokens(self) -> int:
        return self.engine.count_tokens(self.engine.format_chat(self.messages()))

    def _turn(self) -> ChatTurn:
        return ChatTurn(self.messages(), params=self.params, context_overflow="trim")

    def trim(self) -> TrimReport | None:
        """Fit the history to the budget with the chat turn's policy (oldest turns first, then long messages
        shortened from the middle) and keep the result; None when it already fit.

        The system message and the newest user message always stay; if they cannot be made to fit,
        PromptTooLongError says so and the history is left as it was.
        """
        plan = self._turn().plan(self.engine)
        if plan.trimmed is None:
            return None
        self.history = [
            {"role": m["role"], "content": m["content"]} for m in plan.messages if m["role"] != "system"
        ]
        return plan.trimmed

    # -- the loop ------------------------------------------------------------------------------------------------
    def loop(self, stdin: TextIO, stdout: TextIO) -> None:
        while True:
            try:
                stdout.write("\n> ")
                stdout.flush()
                line = stdin.readline()
            except KeyboardInterrupt:
                stdout.write("\n")
                return
            if not line:  # end of input (Ctrl-D or the end of a script)
                stdout.write("\n")
                return
            text = line.strip()
            if not text:
                continue
            if text in ("/exit", "/quit"):
                return
            if text == "/reset":
                self.history.clear()
                stdout.write("[history cleared]\n")
                continue
            if text.startswith("/"):
                stdout.write(f"[unknown command {text.split()[0]}] {COMMANDS_HELP}\n")
                continue
            self.ask(text, stdout)

    def ask(self, text: str, stdout: TextIO) -> str | None:
        """Send one user message, stream the answer to ``stdout`` and keep both in the history."""
        self.history.append({"role": "user", "content": text})
        try:
            report = self.trim()
        except PromptTooLongError as exc:
            self.history.pop()
            stdout.write(f"[{exc}]\n")
            return None
        if report is not None:
            stdout.write(f"[{describe(report)}]\n")
        answer = self._stream(stdout)
        self.history.append({"role": "assistant", "content": answer})
        return answer

    def _stream(self, stdout: TextIO) -> str:
        parts: list[str] = []
        events = self._turn().stream(self.engine)
        try:
            for event in events:
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                    stdout.write(event.text)
                    stdout.flush()
        except KeyboardInterrupt:
            # Cancel at the next token and wait until the engine is free; the partial answer stays in the history.
            events.close()
            stdout.write(" [stopped]")
        stdout.write("\n")
        return "".join(parts)
