"""Push web forms: a small HTTP receiver that appends each valid submission to a spool folder."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

MAX_BODY = 1024 * 1024
SECRET_HEADER = "X-Leadflow-Secret"


class Spool:
    """Append-only JSON lines, one file per UTC day; the webform connector reads them back."""

    def __init__(self, folder: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.folder = folder
        self.clock = clock
        self._lock = threading.Lock()
        os.makedirs(folder, exist_ok=True)

    def append(self, submission: dict[str, Any]) -> str:
        now = self.clock()
        line = json.dumps(
            {"received_at": now.isoformat(), "submission": submission},
            ensure_ascii=False,
            sort_keys=True,
        )
        path = os.path.join(self.folder, f"{now:%Y-%m-%d}.jsonl")
        with self._lock, open(path, "ab") as fh:
            # one write of a whole line, then fsync: the reader only takes complete lines
            fh.write(line.encode("utf-8") + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        return path


def check_secret(secret: str, headers: Any, body: bytes) -> bool:
    """The shared secret as a header, or a Typeform-style HMAC-SHA256 signature of the body."""
    given = headers.get(SECRET_HEADER)
    if given is not None:
        return hmac.compare_digest(given.encode(), secret.encode())
    sig = headers.get("Typeform-Signature") or headers.get("X-Leadflow-Signature")
    if sig and sig.startswith("sha256="):
        want = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
        return hmac.compare_digest(sig[7:].encode(), want)
    return False


def parse_submission(content_type: str, body: bytes) -> dict[str, Any]:
    """A JSON object or an urlencoded form post; ValueError for anything else."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
        doc: Any = dict(pairs)
    else:
        doc = json.loads(body.decode("utf-8"))
    if not isinstance(doc, dict) or not doc:
        raise ValueError("a submission must be a non-empty JSON object")
    if not any(doc.get(k) for k in ("id", "submission_id", "response_id", "token", "conversionId")):
        # a provider retry posts the same body again: the content hash keeps it one record
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
        doc = {**doc, "submission_id": f"sha256:{digest[:32]}"}
    return doc


def make_server(
    spools: dict[str, tuple[Spool, str]], host: str = "127.0.0.1", port: int = 8787
) -> ThreadingHTTPServer:
    """POST /hooks/<source> with the source's secret → 202 and one spooled line; else a 4xx."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, message: str) -> None:
            body = json.dumps({"status": status, "message": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
            self._reply(
                200 if self.path == "/health" else 404,
                "ok" if self.path == "/health" else "not found",
            )

        def do_POST(self) -> None:  # noqa: N802
            name = self.path.split("?", 1)[0].removeprefix("/hooks/")
            if not self.path.startswith("/hooks/") or name not in spools:
                return self._reply(404, "no such source")
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return self._reply(411, "Content-Length required")
            if length > MAX_BODY or length < 0:
                return self._reply(413, f"body over {MAX_BODY} bytes")
            body = self.rfile.read(length)
            spool, secret = spools[name]
            if not check_secret(secret, self.headers, body):
                return self._reply(401, "wrong or missing secret")
            try:
                doc = parse_submission(self.headers.get("Content-Type", ""), body)
            except (ValueError, UnicodeDecodeError) as exc:
                return self._reply(400, f"not a submission: {str(exc)[:200]}")
            spool.append(doc)
            return self._reply(202, "accepted")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # request lines may carry tokens; the CLI prints its own summary

    return ThreadingHTTPServer((host, port), Handler)
