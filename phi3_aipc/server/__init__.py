"""``phi3-aipc serve``: an OpenAI-compatible HTTP server over one loaded engine (needs ``phi3-aipc[serve]``).

- ``app``: the FastAPI app factory (endpoints, errors, API key, limits, loading, disconnects);
- ``guard``: who may call (Host, Origin, API key) and what a request must send (JSON, within the size limit);
- ``schemas``: the request bodies, which refuse unknown fields;
- ``mapping``: OpenAI requests to a ChatTurn and its results and events back to OpenAI responses and chunks;
- ``background``: run the app with uvicorn, in the foreground or on a loopback port in a background thread.

Only this package imports FastAPI; ``import phi3_aipc`` does not.
"""

from phi3_aipc.server.app import ServerConfig, create_app
from phi3_aipc.server.background import BackgroundServer, serve
from phi3_aipc.server.guard import Access
from phi3_aipc.server.mapping import Limits

__all__ = ["Access", "BackgroundServer", "Limits", "ServerConfig", "create_app", "serve"]
