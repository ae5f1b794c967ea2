"""A stand-in OpenAI-compatible server that misbehaves on purpose, for remote mode's tests (issue 23, 16-18).

What is under test is how remote mode treats a peer that breaks the protocol: a stream cut off, a web page, a whole
JSON body, a redirect, silence, an endless stream, a 429, a validation 500, llama-cpp-python's refusal of
``response_format`` json_schema. No real server does these on demand, so this one writes the raw bytes itself over
a loopback socket. Each connection runs ``behaviour(request, send)``; ``requests`` records what arrived. Every loop
here is bounded: a peer stops by itself.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: How long a silent peer keeps a connection open before it gives up (it never answers before that).
SILENT_FOR_S = 30.0
#: An endless peer stops after this many events or bytes (far past any bound remote mode should keep, short of
#: filling a small machine's memory when a client keeps it all).
ENDLESS_EVENTS = 200_000
ENDLESS_BYTES = 256 << 20


@dataclass
class PeerRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


Behaviour = Callable[[PeerRequest, Callable[[bytes], None]], None]


class MisbehavingPeer:
    """A loopback HTTP/1.1 server whose replies are what ``behaviour`` writes, byte for byte."""

    def __init__(self, behaviour: Behaviour):
        self.behaviour = behaviour
        self.requests: list[PeerRequest] = []
        self.disconnected = threading.Event()
        self.stop = threading.Event()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self._socket.settimeout(0.2)
        self.base_url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/v1"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def completions(self) -> list[PeerRequest]:
        """The generation requests (not the GET /v1/models that tells the server's kind)."""
        return [r for r in self.requests if r.method == "POST"]

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            request = _read_request(conn)
            if request is None:
                return
            self.requests.append(request)

            def send(data: bytes) -> None:
                conn.sendall(data)

            try:
                self.behaviour(request, send)
            except OSError:  # the client hung up: what several tests wait for
                self.disconnected.set()


def _read_request(conn: socket.socket) -> PeerRequest | None:
    conn.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        body += conn.recv(65536)
    conn.settimeout(None)
    parsed = json.loads(body) if body else None
    return PeerRequest(method, path, headers, parsed)


@contextmanager
def misbehaving_peer(behaviour: Behaviour) -> Iterator[MisbehavingPeer]:
    peer = MisbehavingPeer(behaviour)
    peer._thread.start()
    try:
        yield peer
    finally:
        peer.stop.set()
        peer._socket.close()
        peer._thread.join(5)


# -- pieces of replies ---------------------------------------------------------------------------------------------
def head(status: str, content_type: str | None, extra: str = "") -> bytes:
    """A status line and headers for a body that ends when the connection closes."""
    kind = f"Content-Type: {content_type}\r\n" if content_type else ""
    return f"HTTP/1.1 {status}\r\n{kind}{extra}Connection: close\r\n\r\n".encode()


def send_endlessly(send: Callable[[bytes], None], piece: bytes) -> None:
    """An event stream's head, then ``piece`` again and again, up to ENDLESS_EVENTS times or ENDLESS_BYTES."""
    send(head("200 OK", "text/event-stream"))
    for _ in range(min(ENDLESS_EVENTS, ENDLESS_BYTES // max(1, len(piece)))):
        send(piece)


def event(payload: Any) -> bytes:
    return f"data: {json.dumps(payload) if not isinstance(payload, str) else payload}\n\n".encode()


def chunk(text: str | None = None, finish: str | None = None) -> dict[str, Any]:
    delta = {"content": text} if text is not None else {}
    return {
        "id": "chatcmpl-peer",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-peer",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def stream_of(pieces: list[str], *, done: bool = True) -> bytes:
    """A whole, well-formed answer stream (or, with done=False, one without its terminator)."""
    out = head("200 OK", "text/event-stream")
    out += event(chunk(""))
    for piece in pieces:
        out += event(chunk(piece))
    out += event(chunk(None, "stop"))
    out += event(usage(5, len(pieces)))
    return out + (b"data: [DONE]\n\n" if done else b"")


def json_reply(status: str, body: Any, extra: str = "") -> bytes:
    data = json.dumps(body).encode()
    return head(status, "application/json", f"Content-Length: {len(data)}\r\n{extra}") + data


def models_card(owned_by: str) -> bytes:
    return json_reply(
        "200 OK", {"object": "list", "data": [{"id": "smollm2", "object": "model", "owned_by": owned_by}]}
    )


def not_found() -> bytes:
    return json_reply("404 Not Found", {"detail": "Not Found"})
