"""The engine: a loaded model that serves one generation at a time, with exact stops, streams and deadlines.

- ``core``: :class:`Engine`, what callers ask of a loaded model;
- ``jobs``: one call's job, its worker thread, the first-come line to the backend, and how a job stops;
- ``streams``: sync and async streams of text deltas over a job;
- ``cache``: ``get_engine`` and the process-wide cache of engines.
"""

from phi3_aipc.engine.cache import EngineKey, aget_engine, clear_engines, get_engine, release_engine
from phi3_aipc.engine.core import Engine, PromptInput
from phi3_aipc.engine.streams import AsyncGenerationStream, GenerationStream

__all__ = [
    "AsyncGenerationStream",
    "Engine",
    "EngineKey",
    "GenerationStream",
    "PromptInput",
    "aget_engine",
    "clear_engines",
    "get_engine",
    "release_engine",
]
