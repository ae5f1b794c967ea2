"""Benchmarks of the engine with the metrics Intel's published tables use, for any backend and device.

Method (what every number means):

- Each target (model, device, backend, options) runs in **its own worker processes** (``worker``), so peak memory
  and load times belong to that target alone and one backend's libraries never slow another's.
- **Cold load**: ``get_engine`` in a fresh process with an empty phi3-aipc cache (a new temporary
  ``PHI3_AIPC_CACHE``, so nothing compiled is reused). The model files may still be in the OS page cache.
- **Warm load**: ``get_engine`` in a second fresh process that reuses that cache (OpenVINO's compiled blobs).
  Importing the backend's library is measured apart (``import_ms``) and excluded from both.
- Generation: raw prompts of exactly ``input_tokens`` tokens (``prompts``: counted with the engine's own tokenizer;
  capped by the NPU's MAX_PROMPT_LEN), ``output_tokens`` new tokens forced past EOS with
  ``GenerationParams(ignore_eos=True)``, greedy. One discarded warm-up run, then ``runs`` measured runs, each with a
  different prompt so that prefix caching cannot shorten the prefill.
- **TTFT** and **TPOT** come from the backend's own timings (OpenVINO GenAI's PerfMetrics; the transformers
  backend's per-token times). TTFT counts from the start of generation, tokenization included; TPOT is the mean
  gap between tokens, the first excluded. **Decode tokens/s** = 1000 / TPOT.
  **End-to-end tokens/s** = generated tokens / wall time of the whole stream (``time.perf_counter`` around it).
- **Peak RSS**: the measuring process's peak resident memory (``stats.peak_rss_mb``).

Modules: ``targets`` (what to measure), ``prompts`` (exact-length prompts), ``measure`` (timing inside a worker),
``stats`` (mean ± std, peak RSS), ``worker`` (the process protocol), ``run`` (orchestration), ``machine`` and
``report`` (the Markdown). The LangChain / LlamaIndex overhead is measured by ``benchmarks/wrapper_overhead.py``:
this package imports no framework.
"""

from phi3_aipc.bench.machine import machine_info
from phi3_aipc.bench.prompts import effective_input_tokens, exact_chat, exact_prompt
from phi3_aipc.bench.report import format_machine, format_table
from phi3_aipc.bench.run import run_benchmark
from phi3_aipc.bench.stats import peak_rss_mb, summary
from phi3_aipc.bench.targets import Settings, Target, options_for, targets_for

__all__ = [
    "Settings",
    "Target",
    "effective_input_tokens",
    "exact_chat",
    "exact_prompt",
    "format_machine",
    "format_table",
    "machine_info",
    "options_for",
    "peak_rss_mb",
    "run_benchmark",
    "summary",
    "targets_for",
]
