"""One `phi3-aipc serve` app over the shared SmolLM2 engine, on a free loopback port, for the whole session."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest
from server_helpers import API_KEY, MAX_BODY_BYTES, MAX_TOKENS_LIMIT, NEEDS, SMOLLM2, Served


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
    served.engine.wait_for_warm_up()  # a warm-up still running would be counted as a request
    backend = served.engine.backend
    real = backend.generate
    counts: list[int] = []

    def generate(prompt: str, params: Any, on_text: Any, constraint: Any = None) -> Any:
        output = real(prompt, params, on_text, constraint)
        counts.append(output.completion_tokens)
        return output

    monkeypatch.setattr(backend, "generate", generate)
    return counts
