"""What every HTTP request must pass before a route reads it: who may call (Host, Origin, API key) and what it sends.

A keyless server on loopback trusts whoever can reach the port, and a web page in the user's browser can reach it.
Two ways in are closed here, as Ollama (``OLLAMA_ORIGINS``, its allowed-hosts check) and llama.cpp's server
(``--cors-origins``) close them:

- DNS rebinding: a page on ``rebind.evil.example`` whose name the attacker points at 127.0.0.1 is same-origin to the
  browser, so no CORS rule applies; only the ``Host`` header gives it away. A request's Host must name the bound
  address, a loopback name or address (``localhost``, ``*.localhost``, 127.0.0.0/8, ::1), any address when bound to
  all interfaces (a page reached by a bare IP address is that address's own origin, not a rebinding), or a name
  given with ``--allow-host`` (``*`` turns the check off).
- Cross-site requests: a page may POST to any URL without a preflight when the type is ``text/plain``. A request
  that carries an ``Origin`` (browsers send it on every cross-origin request and on every POST) is refused unless
  that origin was allowed with ``--allow-origin`` (``*`` allows all), and a body must be ``application/json``, which
  a page cannot send cross-site without a preflight that only an allowed origin passes.

Clients that are not browsers (the openai SDK, LangChain, LlamaIndex, curl) send no Origin and a Host naming the
address they dialled, so they pass.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request

from phi3_aipc.server.mapping import RequestError

LOOPBACK_NAMES = ("localhost", "localhost.")


@dataclass(frozen=True)
class Access:
    """Which Hosts and Origins the server answers (see the module's docstring)."""

    bound: str = "127.0.0.1"
    allow_hosts: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = ()

    def check_host(self, header: str | None) -> None:
        host = _host_of(header or "")
        if "*" in self.allow_hosts or self._host_allowed(host):
            return
        raise RequestError(
            f"Requests for host {host!r} are refused: this server answers for {self.bound!r} and loopback names "
            f"only (a protection against DNS rebinding). If you reach it by that name on purpose, start it with "
            f"`phi3-aipc serve --allow-host {host or 'NAME'}`.",
            code="host_not_allowed",
            status=403,
        )

    def check_origin(self, origin: str | None) -> None:
        if origin is None or self.origin_allowed(origin):
            return
        raise RequestError(
            f"Cross-origin requests from {origin!r} are refused (a web page must not use this server unless you "
            f"allow it). To allow that page, start the server with `phi3-aipc serve --allow-origin {origin}`.",
            code="origin_not_allowed",
            status=403,
        )

    def origin_allowed(self, origin: str) -> bool:
        return "*" in self.allow_origins or origin.rstrip("/").lower() in self._origins

    @property
    def _origins(self) -> frozenset[str]:
        return frozenset(o.rstrip("/").lower() for o in self.allow_origins)

    def _host_allowed(self, host: str) -> bool:
        if not host:
            return True  # (HTTP/1.0 without Host: no browser sends that)
        if host in LOOPBACK_NAMES or host.endswith(".localhost") or host == self.bound.lower():
            return True
        if host in (h.lower() for h in self.allow_hosts):
            return True
        address = _address(host)
        if address is None:
            return False
        bound = _address(self.bound)
        return address.is_loopback or (bound is not None and (bound.is_unspecified or address == bound))


def _host_of(header: str) -> str:
    """The host part of a Host header, lower-cased, without port or IPv6 brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else ""
    host, _, port = header.rpartition(":")
    if host and port.isdigit() and ":" not in host:
        return host
    return header


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_json_content_type(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json")):
        return
    raise RequestError(
        f"The request body must be sent as 'Content-Type: application/json' (got {kind or 'none'!r}).",
        code="unsupported_media_type",
        status=415,
    )


def check_api_key(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise RequestError(
            "Incorrect or missing API key: send it as 'Authorization: Bearer <key>' "
            "(the key given to `phi3-aipc serve --api-key` or PHI3_AIPC_API_KEY).",
            code="invalid_api_key",
            status=401,
        )


def check_declared_size(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)


def too_large(limit: int) -> RequestError:
    return RequestError(
        f"The request body is over this server's limit of {limit} bytes (`phi3-aipc serve --max-body-bytes`).",
        code="request_too_large",
        status=413,
    )


def is_preflight(scope: dict[str, Any]) -> bool:
    headers = dict(scope.get("headers") or ())
    return (
        scope["method"] == "OPTIONS" and b"origin" in headers and b"access-control-request-method" in headers
    )


def normalise_origins(origins: Iterable[str]) -> tuple[str, ...]:
    """Origins as a browser sends them (``scheme://host[:port]``); a value that is not one is refused now."""
    out = []
    for origin in origins:
        if origin == "*":
            out.append(origin)
            continue
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise RequestError(
                f"--allow-origin {origin!r} is not an origin: give scheme://host[:port], e.g. "
                f"http://localhost:3000 (or * for any).",
                param="allow_origin",
            )
        out.append(f"{parts.scheme}://{parts.netloc}".lower())
    return tuple(out)
