"""Serving the console with uvicorn: loopback by default, a warning when bound anywhere else."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def bind_warning(host: str) -> str | None:
    if host in LOOPBACK or host.startswith("127."):
        return None
    return (
        f"warning: the console listens on {host}, not only on this machine: anyone who can reach "
        "it and knows the token sees personal data and can change leads; put TLS in front of it"
    )


def _config(app: FastAPI, host: str, port: int) -> uvicorn.Config:
    # No access log: its request lines would carry searched emails and phones.
    return uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )


def serve(app: FastAPI, host: str, port: int) -> None:
    """Serve until Ctrl-C."""
    warning = bind_warning(host)
    if warning:
        print(warning, file=sys.stderr)
    print(f"leadflow console on http://{host}:{port}/ (Ctrl-C stops it)")
    uvicorn.Server(_config(app, host, port)).run()


@contextmanager
def running(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """The app served on a free port in a thread of this process; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, host, port))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the console server did not start")
        threading.Event().wait(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
