"""Tool calls on the Berkeley Function Calling Leaderboard (BFCL v4): its own data and its own AST checker.

For each model and category, phi3-aipc (``ChatPhi3AIPC(...).bind_tools(tools, tool_choice=...)``, greedy) is scored
beside a reference: the same model artifact run by OpenVINO GenAI directly through the model's OWN chat template
(``Tokenizer.apply_chat_template(messages, add_generation_prompt=True, tools=[...])``, generated with
``config.apply_chat_template=False``, its ``<tool_call>\\n{...}\\n</tool_call>`` blocks parsed). A model whose template
does not render tools (SmolLM2) has no reference: the table says n/a. It is a benchmark, never a timed test.

Categories: simple_python, multiple, parallel, irrelevance (right = the answer holds no call, valid or invalid).
Modes: ``auto`` (the model decides) and ``forced`` (``tool_choice="any"``, ``parallel_tool_calls=True``: one or more
calls). Irrelevance is run in auto mode only; the reference has no forced mode (a chat template cannot force a call).
Default entries: the first 30 of each category, the first 20 of irrelevance (the entries issue 22 measured).

Usage (from a checkout; the script imports phi3_aipc / langchain_phi3_aipc the ordinary way, so
``PYTHONPATH=/other/worktree`` runs it against another checkout's code)::

    HF_HUB_OFFLINE=1 nice -n 10 python benchmarks/tool_calls_bfcl.py \\
        [--models smollm2,qwen] [--qwen PATH] [--categories simple_python,multiple,parallel,irrelevance] \\
        [--modes auto,forced] [--limit N] [--max-tokens 160] [--no-reference] \\
        [--out results.json] [--results-md benchmarks/RESULTS.md] [--machine-note "2 cores, shared"]
    python benchmarks/tool_calls_bfcl.py --from-json results.json [--results-md ...]   # report a saved run

Against another checkout's code, with this file: ``PYTHONPATH=/path/to/other/checkout python
/path/to/tool_calls_bfcl.py ...``; the Markdown names the folder phi3_aipc was imported from, so check it there.
Per-entry progress goes to stderr; --out is rewritten after every cell, so a run that stops keeps what it measured.

``--qwen``: Qwen2.5-Coder-0.5B-Instruct to load (a model folder or a GGUF). Default: the Q4_K_M GGUF assembled from
its pinned PyPI wheels by ``phi3_aipc.testing.qwen.qwen_coder_gguf`` under $PHI3_AIPC_TEST_CACHE (else
./.cache/test-models); it loads once phi3-aipc can convert K-quant GGUFs. Until then pass an OpenVINO IR folder, e.g.
``--qwen /work/models/qwen-coder-ov``. The reference runs the artifact phi3-aipc resolves for the same model (for a
GGUF: the IR it was converted to), so both sides run the same weights at OpenVINO's default CPU precision.
``--results-md``: replace (or append) the section "## Tool calls on BFCL" of that Markdown file with this run's table.

How bfcl-eval is used (``pip install --no-deps bfcl-eval==2026.3.23``): three modules are replaced in
``sys.modules`` before it is imported, because they import what a local benchmark does not need:
``bfcl_eval.constants.model_config`` (imports every API client; the checker only reads ``underscore_to_dot`` of one
entry, given here for the name "phi3-aipc"), and the Java / JavaScript call parsers (tree-sitter) that
``bfcl_eval.model_handler.utils`` imports. BFCL's own ``convert_to_tool(functions, GORILLA_TO_OPENAPI,
ModelStyle.OPENAI_COMPLETIONS)`` then makes the OpenAI tools, as BFCL does for every function-calling model: BFCL
types become JSON-schema types ("dict" -> object, "float" -> number with a note in the description, "tuple" ->
array, "any" -> string) and dots in tool names become underscores; ``underscore_to_dot=True`` makes the checker map
them back. Scoring is BFCL's ``ast_checker`` with Language.PYTHON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import time
import types
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

CHECKER_MODEL_NAME = "phi3-aipc"  # the key the shimmed MODEL_CONFIG_MAPPING answers for
CATEGORIES = ("simple_python", "multiple", "parallel", "irrelevance")
MODES = ("auto", "forced")
DEFAULT_LIMITS = {"simple_python": 30, "multiple": 30, "parallel": 30, "irrelevance": 20}
SECTION_TITLE = "## Tool calls on BFCL"
_SHIMMED = (
    "bfcl_eval.constants.model_config",
    "bfcl_eval.model_handler.parser.java_parser",
    "bfcl_eval.model_handler.parser.js_parser",
)
_TOOL_CALL_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


# ---------------------------------------------------------------- bfcl-eval, shimmed
def install_bfcl_shims() -> None:
    """Stand-ins for the three bfcl-eval modules whose imports a local run does not need (see the module doc)."""
    if all(name in sys.modules for name in _SHIMMED):
        return
    config = types.ModuleType(_SHIMMED[0])
    config.MODEL_CONFIG_MAPPING = {CHECKER_MODEL_NAME: types.SimpleNamespace(underscore_to_dot=True)}  # type: ignore[attr-defined]
    java = types.ModuleType(_SHIMMED[1])
    java.parse_java_function_call = _no_parser  # type: ignore[attr-defined]
    js = types.ModuleType(_SHIMMED[2])
    js.parse_javascript_function_call = _no_parser  # type: ignore[attr-defined]
    for module in (config, java, js):
        sys.modules[module.__name__] = module
    try:
        import bfcl_eval  # noqa: F401
    except ImportError as error:
        raise SystemExit(
            "This benchmark needs bfcl-eval: pip install --no-deps bfcl-eval==2026.3.23 filelock"
        ) from error


def _no_parser(*_: Any, **__: Any) -> Any:
    raise NotImplementedError(
        "Java/JavaScript call parsing is not part of this benchmark (Python categories only)."
    )


def bfcl_data_dir() -> Path:
    install_bfcl_shims()
    import bfcl_eval

    return Path(bfcl_eval.__file__).parent / "data"


def load_category(category: str, limit: int | None) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """The first ``limit`` (entry, possible answer) pairs of a BFCL v4 category (irrelevance has no answers)."""
    data = bfcl_data_dir()
    entries = _read_jsonl(data / f"BFCL_v4_{category}.json", limit)
    answer_file = data / "possible_answer" / f"BFCL_v4_{category}.json"
    answers = {a["id"]: a for a in _read_jsonl(answer_file, None)} if answer_file.is_file() else {}
    return [(entry, answers.get(entry["id"])) for entry in entries]


def _read_jsonl(path: Path, limit: int | None) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                rows.append(json.loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def to_openai_tools(functions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """BFCL's own conversion of its function docs to OpenAI tools (as it does for function-calling models)."""
    install_bfcl_shims()
    from bfcl_eval.constants.enums import ModelStyle
    from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI
    from bfcl_eval.model_handler.utils import convert_to_tool

    converted = convert_to_tool(functions, GORILLA_TO_OPENAPI, ModelStyle.OPENAI_COMPLETIONS)
    return [t if t.get("type") == "function" else {"type": "function", "function": t} for t in converted]


def score(
    entry: dict[str, Any],
    answer: dict[str, Any] | None,
    category: str,
    calls: list[dict[str, Any]],
    invalid: int,
) -> tuple[bool, str]:
    """(correct, why not) by BFCL's AST checker; irrelevance is right when the answer holds no call at all."""
    if category == "irrelevance":
        if calls or invalid:
            return False, f"called {[c['name'] for c in calls]} ({invalid} invalid)"
        return True, ""
    assert answer is not None, f"no possible answer for {entry['id']}"
    install_bfcl_shims()
    from bfcl_eval.constants.enums import Language
    from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker

    output = [{c["name"]: c["args"]} for c in calls]
    if not output:
        return False, f"no call ({invalid} invalid)"
    result = ast_checker(
        entry["function"], output, answer["ground_truth"], Language.PYTHON, category, CHECKER_MODEL_NAME
    )
    return bool(result["valid"]), "" if result["valid"] else "; ".join(map(str, result.get("error", [])))[
        :300
    ]


# ---------------------------------------------------------------- the two runners
@dataclass
class Answer:
    calls: list[dict[str, Any]]  # [{"name": ..., "args": {...}}], valid calls only
    invalid: int  # calls begun but not valid (bad JSON, unknown tool, arguments off the schema)
    text: str
    invalid_errors: list[str] = field(default_factory=list)  # why each invalid call is invalid (phi3-aipc)


class Phi3AIPCRunner:
    """phi3-aipc through its LangChain door, greedy."""

    def __init__(self, model: str, max_tokens: int) -> None:
        from langchain_phi3_aipc import ChatPhi3AIPC

        self.llm = ChatPhi3AIPC(model=model, device="cpu", max_tokens=max_tokens, temperature=0)

    def answer(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], mode: str) -> Answer:
        choice = "any" if mode == "forced" else "auto"
        bound = self.llm.bind_tools(tools, tool_choice=choice, parallel_tool_calls=True)
        message = bound.invoke(messages)
        calls = [{"name": c["name"], "args": c["args"]} for c in message.tool_calls]
        errors = [str(c.get("error")) for c in message.invalid_tool_calls]
        return Answer(calls, len(message.invalid_tool_calls), str(message.content), errors)


class TemplateReference:
    """The model's own chat template and call format, run by OpenVINO GenAI directly (outside phi3-aipc)."""

    def __init__(self, model: str, max_tokens: int) -> None:
        import openvino_genai as ov_genai

        from phi3_aipc.models.resolve import resolve

        path = resolve(model, "CPU", "openvino").path
        self.pipe = ov_genai.LLMPipeline(str(path), "CPU")
        self.tokenizer = self.pipe.get_tokenizer()
        self.config = ov_genai.GenerationConfig()
        self.config.max_new_tokens = max_tokens
        self.config.do_sample = False
        self.config.apply_chat_template = False  # the prompt below is already templated
        self.renders_tools = self._renders_tools()

    def _renders_tools(self) -> bool:
        """Whether the model's own template knows tools at all (SmolLM2's does not).

        Read from the template text, not from a rendered prompt: OpenVINO GenAI's template engine adds its own
        generic "You can call any of the following tools" system prompt to a template that ignores ``tools``,
        which is not the model's format.
        """
        return "tools" in self.tokenizer.chat_template

    def answer(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], mode: str) -> Answer:
        prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tools=tools)
        text = str(self.pipe.generate(prompt, self.config))
        calls, invalid = parse_tool_call_blocks(text, {t["function"]["name"] for t in tools})
        return Answer(calls, invalid, text)


def parse_tool_call_blocks(text: str, tool_names: set[str]) -> tuple[list[dict[str, Any]], int]:
    """Hermes/Qwen ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks: (valid calls, invalid count).

    A block that is not a JSON object with a known tool name and an object of arguments counts as invalid; a last
    block cut off by max_tokens is parsed too (and is invalid when its JSON is incomplete).
    """
    calls: list[dict[str, Any]] = []
    invalid = 0
    for body in _TOOL_CALL_BLOCK.findall(text):
        try:
            call = json.loads(body)
        except json.JSONDecodeError:
            invalid += 1
            continue
        args = call.get("arguments", call.get("parameters")) if isinstance(call, dict) else None
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except json.JSONDecodeError:
                args = None
        if not isinstance(args, dict) or call.get("name") not in tool_names:
            invalid += 1
            continue
        calls.append({"name": call["name"], "args": args})
    return calls, invalid


# ---------------------------------------------------------------- one run
@dataclass
class Cell:
    model: str
    category: str
    mode: str
    runner: str  # "phi3-aipc" or "reference"
    n: int = 0
    correct: int = 0
    no_call: int = 0
    invalid: int = 0  # answers with at least one invalid call
    seconds: float = 0.0
    entries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def percent(self) -> float:
        return 100.0 * self.correct / self.n if self.n else 0.0

    @property
    def per_entry(self) -> float:
        return self.seconds / self.n if self.n else 0.0


def run_cell(runner: Any, cell: Cell, data: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> Cell:
    started = time.perf_counter()
    for entry, answer in data:
        tools = to_openai_tools(entry["function"])
        messages = entry["question"][0]  # single-turn categories: the first (only) turn
        try:
            got = runner.answer(messages, tools, cell.mode)
        except Exception as error:  # recorded and counted wrong: one bad entry must not end a long run
            got = Answer([], 0, f"ERROR {type(error).__name__}: {error}")
        ok, why = score(entry, answer, cell.category, got.calls, got.invalid)
        cell.n += 1
        cell.correct += ok
        cell.no_call += not got.calls and not got.invalid
        cell.invalid += got.invalid > 0
        cell.entries.append({"id": entry["id"], "correct": ok, "why": why, **asdict(got)})
        mark = "ok " if ok else "BAD"
        print(
            f"  {mark} {entry['id']:<20} {got.calls} inv={got.invalid} {why[:120]}",
            file=sys.stderr,
            flush=True,
        )
    cell.seconds = time.perf_counter() - started
    return cell


def progress(cells: list[Cell], args: argparse.Namespace) -> None:
    """After each cell: its line on stderr, and the answers so far in --out (a long run that stops keeps them)."""
    c = cells[-1]
    print(
        f"== {c.model} {c.category} {c.mode} {c.runner}: {c.correct}/{c.n} = {c.percent:.1f}%, no call {c.no_call},"
        f" invalid {c.invalid}, {c.seconds:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    if args.out:
        args.out.write_text(json.dumps({"partial": True, "cells": [asdict(x) for x in cells]}, indent=1))


def default_qwen() -> str:
    from phi3_aipc.testing.qwen import qwen_coder_gguf

    cache = Path(os.environ.get("PHI3_AIPC_TEST_CACHE", ".cache/test-models"))
    return str(qwen_coder_gguf(cache))


MODEL_LABELS = {"smollm2": "SmolLM2-135M (packaged)", "qwen": "Qwen2.5-Coder-0.5B-Instruct"}


def run_model(
    name: str, model: str, args: argparse.Namespace, data: dict[str, list]
) -> tuple[list[Cell], bool]:
    """The model's cells, and whether its template renders tools (False where no reference was loaded)."""
    print(f"== {name}: {model}", file=sys.stderr, flush=True)
    ours = Phi3AIPCRunner(model, args.max_tokens)
    reference = None if args.no_reference else TemplateReference(model, args.max_tokens)
    cells: list[Cell] = args.all_cells  # shared with main, so --out holds every model's cells so far
    first = len(cells)
    for category in args.categories:
        for mode in args.modes:
            if category == "irrelevance" and mode == "forced":
                continue  # a forced call is never right on irrelevance
            print(f"-- {name} {category} {mode} phi3-aipc", file=sys.stderr, flush=True)
            cells.append(run_cell(ours, Cell(name, category, mode, "phi3-aipc"), data[category]))
            progress(cells, args)
            if reference is not None and reference.renders_tools and mode == "auto":
                print(f"-- {name} {category} {mode} reference", file=sys.stderr, flush=True)
                cells.append(run_cell(reference, Cell(name, category, mode, "reference"), data[category]))
                progress(cells, args)
    renders_tools = reference is not None and reference.renders_tools
    del ours, reference  # free one model before loading the next
    return cells[first:], renders_tools


# ---------------------------------------------------------------- report
def table(cells: list[Cell], args: argparse.Namespace, no_template_tools: set[str]) -> str:
    lines = [
        "| model | category | mode | n | phi3-aipc correct | no call | invalid | s/entry | own template (reference)"
        " | ref no call | ref invalid | ref s/entry |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    refs = {(c.model, c.category, c.mode): c for c in cells if c.runner == "reference"}
    for c in (c for c in cells if c.runner == "phi3-aipc"):
        ref = refs.get((c.model, c.category, c.mode))
        if ref is not None:
            ref_cols = f"{ref.correct}/{ref.n} = **{ref.percent:.1f}%** | {ref.no_call} | {ref.invalid} | {ref.per_entry:.1f}"
        elif args.no_reference:
            ref_cols = "not run | | | "
        elif c.model in no_template_tools:
            ref_cols = "n/a (template has no tools) | | | "
        else:
            ref_cols = "— (a template cannot force a call) | | | "
        label = MODEL_LABELS.get(c.model, c.model)
        lines.append(
            f"| {label} | {c.category} | {c.mode} | {c.n} | {c.correct}/{c.n} = **{c.percent:.1f}%** | {c.no_call} "
            f"| {c.invalid} | {c.per_entry:.1f} | {ref_cols} |"
        )
    return "\n".join(lines)


def environment() -> dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("phi3-aipc", "openvino", "openvino-genai", "langchain-core", "bfcl-eval"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    import phi3_aipc

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} logical CPUs",
        "python": platform.python_version(),
        "phi3_aipc_from": str(Path(phi3_aipc.__file__).parent.parent),
        **versions,
    }


def section(text_table: str, env: dict[str, str], args: argparse.Namespace, models: dict[str, str]) -> str:
    limits = ", ".join(f"{c} {args.limit or DEFAULT_LIMITS[c]}" for c in args.categories)
    return (
        f"{SECTION_TITLE}\n\n"
        f"`benchmarks/tool_calls_bfcl.py` (issue 22): BFCL v4 data and its own AST checker, greedy, max_tokens "
        f"{args.max_tokens}; first entries per category: {limits}. phi3-aipc = `ChatPhi3AIPC(...).bind_tools(tools, "
        f"tool_choice='auto' | 'any', parallel_tool_calls=True)`; reference = the same artifact through OpenVINO "
        f'GenAI with the model\'s own chat template and `<tool_call>` blocks. "no call": answers with no call at '
        f'all; "invalid": answers holding a call that did not validate. Irrelevance: right = no call. s/entry: '
        f"wall seconds per entry on this shared machine (side by side only, not speeds).\n\n"
        f"Run {env['date']} on {env['cpu']}{'; ' + args.machine_note if args.machine_note else ''}. Versions: "
        f"phi3-aipc {env['phi3-aipc']} (code from {env['phi3_aipc_from']}), openvino {env['openvino']}, "
        f"openvino-genai {env['openvino-genai']}, langchain-core {env['langchain-core']}, bfcl-eval "
        f"{env['bfcl-eval']}, Python {env['python']}. Models: "
        + "; ".join(f"{k} = `{v}`" for k, v in models.items())
        + f".\n\n{text_table}\n"
    )


def write_section(path: Path, text: str) -> None:
    """Replace the section (up to the next ``## `` heading) or append it."""
    old = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION_TITLE)}\n.*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    if pattern.search(old):
        new = pattern.sub(lambda _: text + "\n", old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new.rstrip("\n") + "\n", encoding="utf-8")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--models", default="smollm2,qwen", help="comma list of: smollm2, qwen")
    p.add_argument(
        "--qwen", default=None, help="Qwen2.5-Coder-0.5B-Instruct to load (default: its pinned GGUF)"
    )
    p.add_argument("--categories", default=",".join(CATEGORIES))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument(
        "--limit", type=int, default=None, help="entries per category (default: 30, irrelevance 20)"
    )
    p.add_argument("--max-tokens", type=int, default=160)
    p.add_argument("--no-reference", action="store_true", help="skip the own-template reference")
    p.add_argument("--out", type=Path, default=None, help="write every answer and figure as JSON here")
    p.add_argument(
        "--results-md", type=Path, default=None, help=f'replace/append "{SECTION_TITLE}" in this file'
    )
    p.add_argument(
        "--machine-note", default="", help="said after the CPU in the Markdown (e.g. 'shared, contended')"
    )
    p.add_argument(
        "--from-json", type=Path, default=None, help="report a saved --out file instead of running"
    )
    args = p.parse_args(argv)
    args.models = _choices(args.models, ("smollm2", "qwen"), p)
    args.categories = _choices(args.categories, CATEGORIES, p)
    args.modes = _choices(args.modes, MODES, p)
    return args


def _choices(text: str, allowed: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    picked = [t.strip() for t in text.split(",") if t.strip()]
    wrong = [t for t in picked if t not in allowed]
    if wrong or not picked:
        parser.error(f"{', '.join(wrong) or 'nothing'} given; choose from {', '.join(allowed)}")
    return picked


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.from_json:
        return report_saved(args)
    install_bfcl_shims()
    data = {c: load_category(c, args.limit or DEFAULT_LIMITS[c]) for c in args.categories}
    models = {name: ("smollm2" if name == "smollm2" else args.qwen or default_qwen()) for name in args.models}
    args.all_cells = []
    no_template_tools: set[str] = set()
    for name, model in models.items():
        _, renders_tools = run_model(name, model, args, data)
        if not args.no_reference and not renders_tools:
            no_template_tools.add(name)
    cells: list[Cell] = args.all_cells
    env = environment()
    report(cells, env, args, models, no_template_tools)
    if args.out:
        saved = {
            "env": env,
            "models": models,
            "no_template_tools": sorted(no_template_tools),
            "settings": {
                "limit": args.limit,
                "max_tokens": args.max_tokens,
                "no_reference": args.no_reference,
            },
            "cells": [asdict(c) for c in cells],
        }
        args.out.write_text(json.dumps(saved, indent=1, default=str))


def report(
    cells: list[Cell],
    env: dict[str, str],
    args: argparse.Namespace,
    models: dict[str, str],
    no_template_tools: set[str],
) -> None:
    text_table = table(cells, args, no_template_tools)
    print(text_table, flush=True)
    if args.results_md:
        write_section(args.results_md, section(text_table, env, args, models))


def report_saved(args: argparse.Namespace) -> None:
    """The table (and --results-md section) of a saved --out file, also one a stopped run left partial."""
    if not args.from_json.is_file():
        raise SystemExit(f"--from-json {args.from_json}: no such file (write one with --out).")
    saved = json.loads(args.from_json.read_text())
    cells = [Cell(**c) for c in saved["cells"]]
    settings = saved.get("settings", {})
    args.limit = settings.get("limit", args.limit)
    args.max_tokens = settings.get("max_tokens", args.max_tokens)
    args.no_reference = settings.get("no_reference", args.no_reference)
    args.categories = list(dict.fromkeys(c.category for c in cells))
    seen = list(dict.fromkeys(c.model for c in cells))
    # a partial file does not say which templates lack tools: a model with no reference cell at all had none
    with_ref = {c.model for c in cells if c.runner == "reference"}
    no_tools = set(saved.get("no_template_tools", [m for m in seen if m not in with_ref]))
    models = saved.get("models", {m: (args.qwen or "?") if m == "qwen" else m for m in seen})
    env = saved.get("env") or environment()
    if saved.get("partial"):
        env["date"] += " (partial run: only the cells listed)"
    report(cells, env, args, models, no_tools)


if __name__ == "__main__":
    main()
