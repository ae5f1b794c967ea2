"""A benchmark report as Markdown: the machine and method, then one table row per target and input length."""

from __future__ import annotations

from typing import Any

_FAILURE_CHARS = 120


def format_machine(report: dict[str, Any]) -> str:
    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    s = report["settings"]
    return (
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, {m['memory_gib']} GiB RAM, {m['os']}, "
        f"Python {m['python']}\nDate: {m['date']}\nVersions: {versions}\n"
        f"Method: {s['runs']} run(s) after {s['warmup']} discarded warm-up, mean ± std; {s['output_tokens']} output "
        f"tokens forced past EOS, greedy."
    )


def format_table(report: dict[str, Any]) -> str:
    """A Markdown table: one row per target and input length; a failed target gets one row with its error."""
    lines = [
        "| target | in | out | TTFT ms | TPOT ms | decode tok/s | e2e tok/s | cold load s | warm load s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in report["results"]:
        if "error" in entry:
            first_line = entry["error"].splitlines()[0][:_FAILURE_CHARS]
            lines.append(f"| {entry['name']} | failed: {first_line} |||||||||")
            continue
        lines += [_row(entry, row) for row in entry["inputs"]]
    return "\n".join(lines)


def _row(entry: dict[str, Any], row: dict[str, Any]) -> str:
    rss = entry.get("peak_rss_mb")
    return (
        f"| {entry['name']} | {row['input_tokens']} | {row['output_tokens'][0]} | {pm(row['ttft_ms'], 0)} "
        f"| {pm(row['tpot_ms'])} | {pm(row['decode_tokens_per_s'])} | {pm(row['e2e_tokens_per_s'])} "
        f"| {_seconds(entry.get('cold_load_ms'))} | {_seconds(entry.get('warm_load_ms'))} "
        f"| {'-' if rss is None else f'{rss:.0f}'} |"
    )


def pm(stat: dict[str, Any] | None, digits: int = 1) -> str:
    """'mean ± std' of a summary(), or '-'."""
    if not stat:
        return "-"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _seconds(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f}"
