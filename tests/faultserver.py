"""A real HTTP server on loopback that misbehaves on cue: 429, 5xx, hangs, resets, truncated bodies.

Each request takes the next fault from a script (or from a per-page script); with no fault left it
serves a page of generic web-form submissions (`?page=N`, `page_size` records a page). Faults
happen on the socket, so the client meets them exactly as it would meet a broken network.
"""

from __future__ import annotations

import json
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)

FAULTS = ("429", "500", "502", "503", "hang", "reset", "truncated", "truncated_json", "garbage")


def submissions(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"sub-{i:03d}",
            "submitted_at": (T0 + timedelta(minutes=i)).isoformat(),
            "email": f"person{i}@firm{i}.com",
            "name": f"Person {i}",
            "company": f"Firm {i}",
        }
        for i in range(n)
    ]


@dataclass
class FaultServer:
    records: list[dict[str, Any]]
    page_size: int = 2
    hang_seconds: float = 2.0
    script: list[str] = field(default_factory=list)  # next faults, whatever the page
    page_faults: dict[int, list[str]] = field(default_factory=dict)  # page → its next faults
    always: dict[int, str] = field(default_factory=dict)  # page → fault on every request
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (path, headers)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/submissions"

    def page(self, number: int) -> bytes:
        start = (number - 1) * self.page_size
        body = {"data": self.records[start : start + self.page_size], "page": number}
        return json.dumps(body).encode()

    def fault_for(self, number: int) -> str | None:
        if number in self.always:
            return self.always[number]
        if self.script:
            return self.script.pop(0)
        queue = self.page_faults.get(number)
        return queue.pop(0) if queue else None

    def handle(self, sock: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return
            data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        target = head[0].split(" ")[1]
        headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
        self.seen.append((target, headers))
        query = parse_qs(urlsplit(target).query)
        number = int(query.get("page", ["1"])[0])
        fault = self.fault_for(number)
        body = self.page(number)
        if fault == "reset":
            # SO_LINGER 0: close() sends a TCP RST, the client sees "connection reset by peer"
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return
        if fault == "hang":
            time.sleep(self.hang_seconds)
            return
        status, extra = "200 OK", ""
        if fault in ("429", "500", "502", "503"):
            status = {"429": "429 Too Many Requests", "500": "500 Internal Server Error"}.get(
                fault, f"{fault} Server Error"
            )
            extra = "Retry-After: 0\r\n" if fault == "429" else ""
            body = b'{"error": "try later"}'
        length = len(body)
        if fault == "truncated":
            body = body[: len(body) // 2]  # Content-Length promises more than arrives
        elif fault == "truncated_json":
            body = body[: len(body) // 2]
            length = len(body)  # a complete HTTP response whose JSON stops half way
        elif fault == "garbage":
            body = b"<html>Bad gateway</html>"
            length = len(body)
        sock.sendall(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n".encode()
            + body
        )


@contextmanager
def tcp_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A threaded TCP server on a free loopback port calling `handle` per connection; the port."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            handle(self.request)

    class Threaded(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    tcp = Threaded(("127.0.0.1", 0), Handler)
    threading.Thread(target=tcp.serve_forever, daemon=True).start()
    try:
        yield tcp.server_address[1]
    finally:
        tcp.shutdown()
        tcp.server_close()


@contextmanager
def serve(server: FaultServer) -> Iterator[FaultServer]:
    with tcp_server(server.handle) as port:
        server.port = port
        yield server


def source_yaml(name: str, url: str, *, token_env: str | None = None, attempts: int = 4) -> str:
    """A generic-preset web-form source reading a FaultServer (`page` numbers, `data` list)."""
    token = f"    token_env: {token_env}\n" if token_env else ""
    return (
        f"  - name: {name}\n    kind: webform\n    preset: generic\n    url: '{url}'\n"
        "    records_path: data\n    id_field: id\n    time_field: submitted_at\n"
        "    since_param: since\n    page_param: page\n    page_size: 2\n    lag_minutes: 0\n"
        f"{token}    http: {{timeout_seconds: 0.5, max_attempts: {attempts}, backoff_seconds: 0}}\n"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def imap_source(name: str, port: int, password_env: str) -> str:
    return (
        f"  - name: {name}\n    kind: email\n    imap:\n      host: 127.0.0.1\n"
        f"      port: {port}\n      security: none\n      user: sales\n"
        f"      password_env: {password_env}\n      timeout_seconds: 2\n"
    )
