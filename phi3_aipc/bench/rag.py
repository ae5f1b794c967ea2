"""The RAG scenario: what prompt lookup (and a draft model, where one is given) does to a copy-heavy answer.

A RAG answer quotes its retrieved context, so its tokens can be drafted by copying from the prompt. The scenario
builds a ~``context_tokens`` context (product sheets in the user message, sized with the engine's own tokenizer)
and asks for an answer that quotes it; a second prompt asks for an answer that copies nothing (a short story), which is prompt lookup's
worst case: every step verifies drafts that are never found. Each prompt runs on one engine per variant, loaded
side by side in this process: ``prompt_lookup=False`` (the baseline), the default (``prompt_lookup`` unset: off
unless ``PROMPT_LOOKUP_AUTO_KINDS`` turns its 1-draft setting on), ``prompt_lookup=True`` (5 draft tokens a step), and ``draft_model=...``
when one is given. Greedy, natural end, at most ``max_new_tokens``.

Figures: TTFT (the backend's, tokenization included) and decode tokens/s (1000 / TPOT, the first token excluded),
the median of ``runs`` runs after one warm-up per engine, the variants taking turns run by run; each run's context
starts with a different line, so prefix caching never shortens a prefill. ``same`` says whether the text equals the baseline's. ``accepted`` is the
share of verified draft tokens the model kept (``GenerationResult.assisted``).

Beside llama.cpp (``llamacpp_python``: the Python of a benchmark-only venv with llama-cpp-python): the same GGUF
(the packaged SmolLM2's, a ``.gguf`` model path, or ``llamacpp_gguf``) answers the same rendered prompts in that
venv's process (``phi3_aipc/bench/llamacpp_worker.py``), plain and with llama.cpp's own prompt lookup
(``LlamaPromptLookupDecoding``, the same draft length and n-gram size as ours), after phi3-aipc's runs. Its rows'
ratios are to phi3-aipc's baseline; their ``same`` compares with llama.cpp's own plain answer.
"""

from __future__ import annotations

import json
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from phi3_aipc.backends.openvino_assist import DEFAULT_ASSISTANT_TOKENS, DEFAULT_NGRAM_SIZE
from phi3_aipc.bench.targets import Target
from phi3_aipc.engine import Engine, get_engine, release_engine
from phi3_aipc.params import GenerationParams, GenerationResult

SHEET = (
    "Product sheet {i}: the Orion-{i} laptop ships with an Intel Core Ultra {cpu} processor, {ram} GB of LPDDR5X "
    "memory, a {ssd} TB NVMe SSD and a 14-inch 2.8K OLED display. Its battery is rated at {wh} Wh and lasts up to "
    "{hours} hours of video playback. The warranty covers parts and labour for {years} years; accidental damage is "
    "covered only with the Care Plus plan, which costs {price} dollars."
)
RAG_QUESTION = "Copy the sentences of product sheet 1 and product sheet 2 word for word."
FREE_QUESTION = "Write a short story about a lighthouse keeper who finds a message in a bottle."
PROMPTS = {"rag": RAG_QUESTION, "free": FREE_QUESTION}


@dataclass(frozen=True)
class RagSettings:
    context_tokens: int = 1000
    max_new_tokens: int = 160
    runs: int = 2
    #: A draft model (path, repo id or catalogue name) to measure beside prompt lookup; None skips that variant.
    draft_model: str | None = None
    #: The Python of a venv with llama-cpp-python: measure llama.cpp on the same GGUF too; None skips it.
    llamacpp_python: str | None = None
    #: The GGUF llama.cpp loads, where the model is not one (e.g. an IR converted from it).
    llamacpp_gguf: str | None = None


def rag_messages(engine: Engine, tokens: int, question: str, run: int | str = 0) -> list[dict[str, Any]]:
    """A user message holding as many product sheets as make the prompt ~``tokens`` long, then ``question``.

    The sheets go in the user message, as a RAG chain puts retrieved text: a 135M model asked about a system
    prompt this long answered in loops; asked about the user's own text, it quoted it.
    """
    system = {
        "role": "system",
        "content": "Answer from the product sheets the user gives, quoting them exactly.",
    }
    sheets: list[str] = []
    while True:
        context = f"Context set {run}. Retrieved product sheets:\n" + "\n".join(sheets)
        messages = [system, {"role": "user", "content": f"{context}\n\n{question}"}]
        if engine.count_tokens(engine.format_chat(messages)) >= tokens or len(sheets) > 200:
            return messages
        sheets.append(_sheet(len(sheets) + 1))


def _sheet(i: int) -> str:
    return SHEET.format(
        i=i,
        cpu=f"{5 + i % 3} {150 + i}H",
        ram=16 * (1 + i % 2),
        ssd=1 + i % 2,
        wh=60 + i,
        hours=10 + i % 5,
        years=1 + i % 3,
        price=99 + 10 * i,
    )


def variants(target: Target, settings: RagSettings) -> dict[str, dict[str, Any]]:
    """The engines' options per variant: the baseline first (the others are compared with it)."""
    found = {
        "baseline": {**target.options, "prompt_lookup": False},
        "default (auto)": {k: v for k, v in target.options.items() if k != "prompt_lookup"},
        "prompt lookup": {**target.options, "prompt_lookup": True},
    }
    if settings.draft_model:
        found["draft model"] = {**target.options, "prompt_lookup": False, "draft_model": settings.draft_model}
    return found


def run_rag_scenario(
    targets: list[Target], settings: RagSettings, log: Callable[[str], None] = lambda _: None
) -> list[dict[str, Any]]:
    """One entry per target: a row per (prompt, variant), or the error that stopped the target."""
    results = []
    for target in targets:
        log(f"rag scenario: {target.name} ({target.model})")
        try:
            rows = _run_target(target, settings, log)
            results.append({"name": target.name, "model": target.model, "rows": rows})
        except Exception as exc:  # noqa: BLE001 - one target's failure is reported in its row, the rest go on
            results.append(
                {"name": target.name, "model": target.model, "error": f"{type(exc).__name__}: {exc}"}
            )
    return results


def _run_target(target: Target, settings: RagSettings, log: Callable[[str], None]) -> list[dict[str, Any]]:
    engines = {
        name: get_engine(target.model, target.device, target.backend, options)
        for name, options in variants(target, settings).items()
    }
    try:
        params = GenerationParams(max_new_tokens=settings.max_new_tokens)
        baseline = engines["baseline"]
        for engine in engines.values():  # a first request compiles: keep it out of the figures
            engine.generate(rag_messages(baseline, 64, "Hello!", run=-1), GenerationParams(max_new_tokens=4))
        rows = []
        rendered: dict[str, list[str]] = {}
        for prompt, question in PROMPTS.items():
            # Runs alternate between the variants, so a change in the machine's load hits them all alike.
            results: dict[str, list[GenerationResult]] = {name: [] for name in engines}
            rendered[prompt] = []
            for run in range(settings.runs):
                messages = rag_messages(baseline, settings.context_tokens, question, f"{prompt} {run}")
                rendered[prompt].append(baseline.format_chat(messages))
                for name, engine in engines.items():
                    results[name].append(engine.generate(messages, params))
            for name, measured in results.items():
                rows.append(_row(prompt, name, measured, results["baseline"][0].text))
                log(f"   {prompt} / {name}: {_tps(rows[-1]['decode_tps'])} tok/s")
    finally:
        for engine in engines.values():
            release_engine(engine)
    if settings.llamacpp_python:
        rows += _llamacpp_rows(target, settings, rendered, log)
    return rows


def _llamacpp_rows(
    target: Target, settings: RagSettings, rendered: dict[str, list[str]], log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """llama.cpp on the same GGUF and the same rendered prompts, plain and with its own prompt lookup."""
    gguf = settings.llamacpp_gguf or _gguf_of(target.model)
    if gguf is None:
        raise ValueError(
            f"llama.cpp needs a GGUF and {target.model!r} is not one: pass --llamacpp-gguf with the GGUF it came from."
        )
    rows = []
    for prompt, prompts in rendered.items():
        plain = _llamacpp(settings, gguf, prompts, 0)
        lookup = _llamacpp(settings, gguf, prompts, DEFAULT_ASSISTANT_TOKENS)
        for variant, answers in (("llama.cpp", plain), ("llama.cpp + prompt lookup", lookup)):
            rows.append(
                {
                    "prompt": prompt,
                    "variant": variant,
                    "prompt_tokens": answers[0]["prompt_tokens"],
                    "completion_tokens": answers[0]["completion_tokens"],
                    "ttft_ms": _median([a["ttft_ms"] for a in answers]),
                    "decode_tps": _median([a["decode_tps"] for a in answers]),
                    "accepted": None,
                    "same": answers[0]["text"] == plain[0]["text"],
                    "text": answers[0]["text"],
                }
            )
            log(f"   {prompt} / {variant}: {_tps(rows[-1]['decode_tps'])} tok/s")
    return rows


def _llamacpp(settings: RagSettings, gguf: str, prompts: list[str], lookup: int) -> list[dict[str, Any]]:
    from phi3_aipc.bench import llamacpp_worker

    job = {
        "gguf": gguf,
        "prompts": prompts,
        "max_new_tokens": settings.max_new_tokens,
        "prompt_lookup": lookup,
        "max_ngram_size": DEFAULT_NGRAM_SIZE,
        "n_ctx": settings.context_tokens + settings.max_new_tokens + 512,
    }
    done = subprocess.run(
        [str(settings.llamacpp_python), llamacpp_worker.__file__],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"llama.cpp ({settings.llamacpp_python}) failed: {last[:300]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _gguf_of(model: str) -> str | None:
    if model == "smollm2":
        from phi3_aipc.models import smollm2_gguf

        return str(smollm2_gguf())
    return model if model.lower().endswith(".gguf") else None


def _row(prompt: str, variant: str, results: list[GenerationResult], baseline_text: str) -> dict[str, Any]:
    first = results[0]
    assisted = [r.assisted for r in results if r.assisted is not None]
    drafted = sum(a.draft_tokens for a in assisted)
    return {
        "prompt": prompt,
        "variant": variant,
        "prompt_tokens": first.prompt_tokens,
        "completion_tokens": first.completion_tokens,
        "ttft_ms": _median([r.timings.ttft_ms for r in results]),
        "decode_tps": _median([r.timings.tokens_per_second for r in results]),
        "accepted": sum(a.accepted_tokens for a in assisted) / drafted if drafted else None,
        "same": first.text == baseline_text,
        "text": first.text,
    }


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def format_rag_table(results: list[dict[str, Any]]) -> str:
    """Markdown: a row per target, prompt and variant, with the decode and TTFT ratios to that prompt's baseline."""
    lines = [
        "| target | prompt | variant | prompt tokens | answer tokens | TTFT ms | decode tok/s | × baseline | "
        "TTFT × baseline | accepted | same text |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in results:
        if "error" in entry:
            lines.append(f"| {entry['name']} | failed: {entry['error'].splitlines()[0][:120]} ||||||||||")
            continue
        base: dict[str, Any] = {}
        for row in entry["rows"]:
            if row["variant"] == "baseline":
                base = row
            accepted = "n/a" if row["accepted"] is None else f"{row['accepted']:.0%}"
            lines.append(
                f"| {entry['name']} | {row['prompt']} | {row['variant']} | {row['prompt_tokens']} | "
                f"{row['completion_tokens']} | {_ms(row['ttft_ms'])} | {_tps(row['decode_tps'])} | "
                f"{_ratio(row['decode_tps'], base.get('decode_tps'))} | {_ratio(row['ttft_ms'], base.get('ttft_ms'))} | "
                f"{accepted} | {'yes' if row['same'] else 'no'} |"
            )
    return "\n".join(lines)


def _ratio(value: float | None, baseline: float | None) -> str:
    return f"{value / baseline:.2f}×" if value and baseline else "n/a"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _tps(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"
