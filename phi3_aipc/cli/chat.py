"""`phi3-aipc chat`: an interactive terminal chat that streams, keeps (and trims) history, /reset and /exit.

Ctrl-C while an answer streams stops that answer (the generation is cancelled and the engine released) and keeps
the session; Ctrl-C at the prompt, Ctrl-D or /exit ends it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from phi3_aipc.cli.common import add_model_arguments, parse_options
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
    engine = get_engine(args.model, args.device, args.backend, parse_options(args.option))
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    session = ChatSession(engine, params, system=args.system)
    print(f"{engine.model_name} on {engine.device} ({engine.backend_name}). {COMMANDS_HELP}", file=sys.stderr)
    session.loop(sys.stdin, sys.stdout)
    return 0


class ChatSession:
    """History plus the loop. History is trimmed, oldest exchanges first, to fit the prompt budget."""

    def __init__(self, engine: Engine, params: GenerationParams, system: str | None = None):
        self.engine = engine
        self.params = params
        self.system = system
        self.history: list[dict[str, str]] = []

    # -- the prompt budget -------------------------------------------------------------------------------------
    def budget(self) -> int | None:
        """Most prompt tokens allowed: the NPU's MAX_PROMPT_LEN, or the context window minus the answer."""
        limits = []
        if self.engine.max_prompt_tokens is not None:
            limits.append(self.engine.max_prompt_tokens)
        if self.engine.context_window is not None:
            limits.append(self.engine.context_window - self.params.max_new_tokens)
        return min(limits) if limits else None

    def _budget_name(self) -> str:
        if self.engine.max_prompt_tokens is not None:
            return f"the {self.engine.device} prompt limit (MAX_PROMPT_LEN={self.engine.max_prompt_tokens})"
        return f"the context window ({self.engine.context_window} tokens, {self.params.max_new_tokens} kept for the answer)"

    def messages(self) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history

    def prompt_tokens(self) -> int:
        return self.engine.count_tokens(self.engine.format_chat(self.messages()))

    def trim(self) -> int:
        """Drop the oldest messages until the prompt fits; returns how many were dropped.

        Whole exchanges go (a user message with the answers after it), so the history never starts with an
        answer. The newest user message always stays; if it alone does not fit, PromptTooLongError says so.
        """
        limit = self.budget()
        if limit is None:
            return 0
        dropped = 0
        while self.prompt_tokens() > limit and len(self.history) > 1:
            self.history.pop(0)
            dropped += 1
            while len(self.history) > 1 and self.history[0]["role"] != "user":
                self.history.pop(0)
                dropped += 1
        tokens = self.prompt_tokens()
        if tokens > limit:
            raise PromptTooLongError(
                tokens,
                limit,
                "chat's prompt budget",
                f"It must fit {self._budget_name()}; send a shorter message.",
            )
        return dropped

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
            dropped = self.trim()
        except PromptTooLongError as exc:
            self.history.pop()
            stdout.write(f"[{exc}]\n")
            return None
        if dropped:
            stdout.write(
                f"[history trimmed: dropped the {dropped} oldest message(s) to fit {self._budget_name()}]\n"
            )
        answer = self._stream(stdout)
        self.history.append({"role": "assistant", "content": answer})
        return answer

    def _stream(self, stdout: TextIO) -> str:
        parts: list[str] = []
        stream = self.engine.stream(self.messages(), self.params)
        try:
            for delta in stream:
                parts.append(delta)
                stdout.write(delta)
                stdout.flush()
        except KeyboardInterrupt:
            # Cancel at the next token and wait until the engine is free; the partial answer stays in the history.
            stream.close()
            stdout.write(" [stopped]")
        stdout.write("\n")
        return "".join(parts)
