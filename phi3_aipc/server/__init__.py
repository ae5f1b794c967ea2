"""``phi3-aipc serve``: an OpenAI-compatible HTTP server over one loaded engine (needs ``phi3-aipc[serve]``).

- ``app``: the FastAPI app factory (endpoints, errors, API key, limits, loading, disconnects);
- ``schemas``: the request bodies, which refuse unknown fields;
- ``mapping``: OpenAI requests to a ChatTurn and its results and events back to OpenAI responses and chunks;
- ``background``: run the app on a loopback port in a background thread (tests, benchmarks, notebooks).

Only this package imports FastAPI; ``import phi3_aipc`` does not.
"""

from phi3_aipc.server.app import ServerConfig, create_app
from phi3_aipc.server.background import BackgroundServer
from phi3_aipc.server.mapping import Limits

__all__ = ["BackgroundServer", "Limits", "ServerConfig", "create_app"]
