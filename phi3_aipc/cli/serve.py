"""`phi3-aipc serve`: one loaded model behind an OpenAI-compatible HTTP server, for every app on the machine."""

from __future__ import annotations

import argparse
import functools
import ipaddress
import os
import sys

from phi3_aipc.cli.common import add_model_arguments, engine_options
from phi3_aipc.errors import BackendNotInstalledError, InvalidParameterError
from phi3_aipc.models import DEFAULT_MODEL
from phi3_aipc.models.catalogue import canonical_model_id, find

HELP = (
    "Serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions) for every app on this machine."
)
API_KEY_ENV = "PHI3_AIPC_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="Address to bind (default: loopback only).")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--api-key",
        default=None,
        help=f"Require 'Authorization: Bearer KEY' on every request (or set {API_KEY_ENV}).",
    )
    parser.add_argument(
        "--served-model-name", default=None, help="The model id clients see (default: the --model value)."
    )
    parser.add_argument(
        "--max-tokens-limit", type=int, default=4096, help="Most tokens one request may ask for."
    )
    parser.add_argument(
        "--default-max-tokens",
        type=int,
        default=512,
        help="Tokens generated when a request gives no max_tokens.",
    )
    parser.add_argument("--max-body-bytes", type=int, default=4 * 1024 * 1024, help="Largest request body.")
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="Also answer requests whose Host header is NAME (repeatable; '*' for any). By default only the bound "
        "address and loopback names are answered, which stops DNS-rebinding web pages.",
    )
    parser.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="Let web pages from ORIGIN (scheme://host[:port], repeatable; '*' for any) call the server from a "
        "browser (CORS). By default every cross-origin browser request is refused.",
    )


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401 - checked here, so a missing server stack is reported before the model loads

        from phi3_aipc.server import Access, Limits, ServerConfig, create_app, serve
        from phi3_aipc.server.guard import normalise_origins
    except ImportError as exc:
        raise BackendNotInstalledError("serve", exc.name or "fastapi", "serve", exc) from None
    from phi3_aipc.engine import get_engine

    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    _check_arguments(args, api_key)
    model = args.model or DEFAULT_MODEL
    config = ServerConfig(
        model_id=args.served_model_name or model,
        api_key=api_key,
        max_body_bytes=args.max_body_bytes,
        limits=Limits(max_tokens=args.max_tokens_limit, default_max_tokens=args.default_max_tokens),
        aliases=model_aliases(model),
        access=Access(
            bound=args.host,
            allow_hosts=tuple(args.allow_host),
            allow_origins=normalise_origins(args.allow_origin),
        ),
    )
    options = engine_options(args)
    backend = args.backend or _batching_default(args.device, options)
    load = functools.partial(get_engine, model, args.device, backend, options)
    app = create_app(load, config)
    print(
        f"phi3-aipc serve: http://{args.host}:{args.port}/v1 (model loads in the background; GET /health)",
        file=sys.stderr,
    )
    serve(app, args.host, args.port)
    return 0


def _batching_default(device: str | None, options: dict[str, object]) -> str | None:
    """Continuous batching where the device has it (CPU, GPU), unless --backend names one: a server's requests
    come at once, and the serialising pipeline would answer them one after another."""
    from phi3_aipc.backends import serving_backend

    backend = serving_backend(device, options)
    if backend is not None:
        print(
            f"phi3-aipc serve: continuous batching ({backend}): concurrent requests decode together "
            "(--backend openvino serves them one at a time).",
            file=sys.stderr,
        )
    return backend


def model_aliases(model: str) -> tuple[str, ...]:
    """The names a request's ``model`` may use besides the served name: what the user passed, the model's
    catalogue id and the catalogue's other names for it."""
    known = find(model)
    names = (model, *((known.id, *known.aliases) if known else (canonical_model_id(model),)))
    return tuple(dict.fromkeys(names))


def _check_arguments(args: argparse.Namespace, api_key: str | None) -> None:
    if (
        args.default_max_tokens > args.max_tokens_limit
        or min(args.default_max_tokens, args.max_body_bytes) < 1
    ):
        raise InvalidParameterError(
            "--default-max-tokens and --max-body-bytes must be positive, and --default-max-tokens at most "
            "--max-tokens-limit."
        )
    if not _is_loopback(args.host) and api_key is None:
        print(
            f"phi3-aipc serve: warning: listening on {args.host} without --api-key: anyone who can reach this "
            "port can use the model.",
            file=sys.stderr,
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
