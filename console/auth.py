"""Who may enter the console: the token, signed session cookies with the steward's name, CSRF tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass

TOKEN_ENV = "LEADFLOW_CONSOLE_TOKEN"
TOKEN_BLOCK_ENV = "LEADFLOW_CONSOLE_TOKEN_BLOCK"
MIN_TOKEN_CHARS = 16
SESSION_COOKIE = "leadflow_session"
SESSION_SECONDS = 12 * 3600
MAX_NAME_CHARS = 80


class TokenError(RuntimeError):
    """No usable console token: the console refuses to start."""


def read_token(block: str | None = None) -> str:
    """The console token: LEADFLOW_CONSOLE_TOKEN, else the Prefect Secret block named by `block`
    (or by LEADFLOW_CONSOLE_TOKEN_BLOCK). Refuses a missing or short one."""
    token = os.environ.get(TOKEN_ENV)
    block = block or os.environ.get(TOKEN_BLOCK_ENV)
    if not token and block:
        from prefect.blocks.system import Secret

        try:
            token = str(Secret.load(block).get())  # type: ignore[union-attr]
        except ValueError as exc:
            raise TokenError(f"console: Prefect Secret block {block!r}: {exc}") from None
    if not token:
        raise TokenError(
            f"console: no token: set {TOKEN_ENV} (or name a Prefect Secret block with "
            f"--token-block / {TOKEN_BLOCK_ENV}); the console does not start without one"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenError(f"console: the token must have at least {MIN_TOKEN_CHARS} characters")
    return token


@dataclass(frozen=True, slots=True)
class Session:
    steward: str
    session_id: str
    expires_at: int


class Keys:
    """Everything derived from the token: changing the token signs every session out."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._key = hashlib.sha256(b"leadflow-console-session\x1f" + self._token).digest()

    def token_ok(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given).encode(), self._token)

    def _sign(self, data: bytes) -> str:
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def new_session(self, steward: str, now: float | None = None) -> str:
        """A cookie value: the steward's name, a random session id and an expiry, signed."""
        exp = int((now or time.time()) + SESSION_SECONDS)
        body = json.dumps({"n": steward, "s": secrets.token_hex(16), "e": exp}).encode()
        payload = base64.urlsafe_b64encode(body).decode().rstrip("=")
        return f"{payload}.{self._sign(payload.encode())}"

    def read_session(self, cookie: str | None, now: float | None = None) -> Session | None:
        if not cookie or "." not in cookie:
            return None
        payload, sig = cookie.rsplit(".", 1)
        if not hmac.compare_digest(sig, self._sign(payload.encode())):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            session = Session(str(data["n"]), str(data["s"]), int(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.expires_at > (now or time.time()) else None

    def csrf_token(self, session: Session) -> str:
        return self._sign(f"csrf\x1f{session.session_id}".encode())[:32]

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given), self.csrf_token(session))


def clean_steward(name: str | None) -> str | None:
    """The steward's name as it is stored with each decision: printable, trimmed, bounded."""
    if not name:
        return None
    text = " ".join("".join(ch for ch in name if ch.isprintable()).split())[:MAX_NAME_CHARS]
    return text or None
