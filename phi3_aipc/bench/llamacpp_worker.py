"""The llama.cpp side of ``phi3-aipc bench --scenario rag``: run by the Python of a separate, benchmark-only
environment that has llama-cpp-python (``--llamacpp-python``), never imported by phi3-aipc itself.

It imports nothing but the standard library and llama_cpp, so it runs in a venv without phi3-aipc. Input on stdin,
one JSON object: ``gguf`` (path), ``prompts`` (already rendered chat prompts, the same strings phi3-aipc's engines
were given), ``max_new_tokens``, ``prompt_lookup`` (draft tokens a step, 0 = off) and ``max_ngram_size``. Output on
stdout: one JSON list, per prompt ``{"text", "completion_tokens", "ttft_ms", "decode_tps"}``.

Greedy (top_k 1, temperature 0) to the model's end-of-generation token or ``max_new_tokens``; every core; the KV
cache is reset before each prompt, so no prefix is reused. TTFT: the prompt's evaluation to the first token;
decode tok/s: the tokens after the first over the time after it (llama.cpp's own prompt lookup,
``LlamaPromptLookupDecoding``, verifies its drafts inside those steps).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def main() -> int:
    job = json.loads(sys.stdin.read())
    import llama_cpp
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    draft = None
    if job["prompt_lookup"]:
        draft = LlamaPromptLookupDecoding(
            max_ngram_size=job["max_ngram_size"], num_pred_tokens=job["prompt_lookup"]
        )
    threads = os.cpu_count() or 1
    llm = llama_cpp.Llama(
        job["gguf"],
        n_ctx=job.get("n_ctx", 4096),
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        draft_model=draft,
        # With a draft model llama-cpp-python keeps every position's logits, but (0.3.36) sizes that array by this
        # argument alone: a prompt longer than n_batch then fails to broadcast unless it is said here too.
        logits_all=draft is not None,
        verbose=False,
    )
    print(json.dumps([_answer(llm, llama_cpp, prompt, job["max_new_tokens"]) for prompt in job["prompts"]]))
    return 0


def _answer(llm: Any, llama_cpp: Any, prompt: str, max_new_tokens: int) -> dict[str, Any]:
    # The rendered chat prompt carries its own special tokens (and BOS where the template has one).
    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    llm.reset()
    started = time.perf_counter()
    stamps: list[float] = []
    generated: list[int] = []
    for token in llm.generate(tokens, top_k=1, top_p=1.0, temp=0.0, reset=True):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
            break
        generated.append(token)
        stamps.append(time.perf_counter())
        if len(generated) >= max_new_tokens:
            break
    decode = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else None
    return {
        "text": llm.detokenize(generated).decode(errors="replace"),
        "completion_tokens": len(generated),
        "prompt_tokens": len(tokens),
        "ttft_ms": (stamps[0] - started) * 1000 if stamps else None,
        "decode_tps": decode,
    }


if __name__ == "__main__":
    sys.exit(main())
