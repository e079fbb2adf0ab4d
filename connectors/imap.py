"""IMAP mailboxes: new messages since the cursor (UIDVALIDITY, last UID), fetched in batches.

When the server's UIDVALIDITY differs from the cursor's, every UID is void: the folder is
read again from the start and the records, keyed by Message-ID (or content hash), land only
once. A dropped connection is reopened and the batch fetched again, up to `max_reconnects`.
"""

from __future__ import annotations

import imaplib
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from connectors.base import RawBatch
from connectors.email import MailOptions, MessageOutcome, batch_of, read_message

DROPPED = (imaplib.IMAP4.abort, OSError, EOFError, ssl.SSLError, socket.timeout)
_UID = re.compile(rb"UID (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class ImapError(RuntimeError):
    """The server refused something (login, folder), or kept dropping the connection."""


@dataclass(frozen=True)
class ImapConfig:
    host: str
    port: int
    security: str  # ssl | starttls | none
    user: str
    password: str
    folder: str = "INBOX"
    timeout: float = 60.0

    def __repr__(self) -> str:  # the password must never reach a log or a traceback
        return f"ImapConfig(host={self.host!r}, port={self.port}, user={self.user!r}, folder={self.folder!r})"


def connect(cfg: ImapConfig) -> imaplib.IMAP4:
    """Open, secure and log in; the caller selects the folder."""
    ctx = ssl.create_default_context()
    conn: imaplib.IMAP4 | None = None
    step = "refused the connection"
    try:
        if cfg.security == "ssl":
            conn = imaplib.IMAP4_SSL(cfg.host, cfg.port, ssl_context=ctx, timeout=cfg.timeout)
        else:
            conn = imaplib.IMAP4(cfg.host, cfg.port, timeout=cfg.timeout)
            if cfg.security == "starttls":
                step = "refused STARTTLS"
                conn.starttls(ssl_context=ctx)
        step = f"login refused for {cfg.user}"
        conn.login(cfg.user, cfg.password)
    except imaplib.IMAP4.abort:
        raise  # a dropped connection (an error subclass): the caller may reconnect
    except imaplib.IMAP4.error as exc:
        if conn is not None:
            conn.shutdown()
        raise ImapError(f"imap {cfg.host}:{cfg.port}: {step}: {exc}") from None
    return conn


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def imap_date(d: date) -> str:
    return f"{d.day:02d}-{'JanFebMarAprMayJunJulAugSepOctNovDec'[3 * d.month - 3 : 3 * d.month]}-{d.year}"


class ImapSession:
    """A selected folder that reopens itself after a dropped connection."""

    def __init__(
        self,
        open_conn: Callable[[], imaplib.IMAP4],
        folder: str,
        max_reconnects: int = 3,
        pause: float = 0.5,
    ) -> None:
        self.open_conn = open_conn
        self.folder = folder
        self.max_reconnects = max_reconnects
        self.pause = pause
        self.reconnects = 0
        self.round_trips = 0  # UID commands sent, retries included: what batching saves
        self.conn: imaplib.IMAP4 | None = None
        self.uidvalidity = self._select()

    def _select(self) -> int:
        self.conn = self.open_conn()
        typ, data = self.conn.select(_quote(self.folder), readonly=True)
        if typ != "OK":
            raise ImapError(f"imap: cannot open folder {self.folder!r}: {data!r}")
        _, vals = self.conn.response("UIDVALIDITY")
        if not vals or vals[0] is None:
            raise ImapError(f"imap: folder {self.folder!r} has no UIDVALIDITY")
        return int(vals[0])

    def _reopen(self) -> imaplib.IMAP4:
        if self._select() != self.uidvalidity:
            raise ImapError("imap: UIDVALIDITY changed during the run")
        assert self.conn is not None
        return self.conn

    def _call(self, *args: Any) -> list[Any]:
        """One UID command; a dropped connection, or a reconnect that fails, costs one attempt."""
        for attempt in range(self.max_reconnects + 1):
            try:
                conn = self.conn or self._reopen()
                self.round_trips += 1
                typ, data = conn.uid(*args)
            except DROPPED:
                self.close()
                if attempt == self.max_reconnects:
                    raise ImapError(
                        f"imap: connection dropped {attempt + 1} times during {args[0]}"
                    ) from None
                time.sleep(self.pause * (attempt + 1))
                self.reconnects += 1
                continue
            if typ != "OK":
                raise ImapError(f"imap: {args[0]} failed: {data!r}")
            return list(data)
        raise AssertionError("unreachable")

    def search(self, *criteria: str) -> list[int]:
        data = self._call("SEARCH", *criteria)
        return sorted({int(x) for chunk in data if chunk for x in chunk.split()})

    def sizes(self, uids: list[int]) -> dict[int, int]:
        out: dict[int, int] = {}
        for item in self._call("FETCH", ",".join(map(str, uids)), "(RFC822.SIZE)"):
            line = item[0] if isinstance(item, tuple) else item
            uid, size = _UID.search(line or b""), _SIZE.search(line or b"")
            if uid and size:
                out[int(uid.group(1))] = int(size.group(1))
        return out

    def fetch(self, uids: list[int], part: str = "BODY.PEEK[]") -> dict[int, bytes]:
        """The raw bytes of each message (or of its header), by UID; one round trip."""
        if not uids:
            return {}
        out: dict[int, bytes] = {}
        for item in self._call("FETCH", ",".join(map(str, uids)), f"({part})"):
            if isinstance(item, tuple) and len(item) == 2:
                m = _UID.search(item[0])
                if m:
                    out[int(m.group(1))] = bytes(item[1])
        return out

    def close(self) -> None:
        if self.conn is None:
            return
        try:
            self.conn.logout()
        except (*DROPPED, imaplib.IMAP4.error):
            pass
        self.conn = None


def iter_imap(
    source: str,
    open_session: Callable[[], ImapSession],
    cursor: dict[str, Any] | None,
    opts: MailOptions | None = None,
    *,
    batch_size: int = 200,
    since: date | None = None,
    before: date | None = None,
    now: datetime | None = None,
) -> Iterator[RawBatch]:
    """One batch per `batch_size` UIDs; the cursor after a batch is its last UID."""
    opts = opts or MailOptions()
    session = open_session()
    try:
        validity = session.uidvalidity
        last = 0
        if cursor and int(cursor.get("uidvalidity", -1)) == validity:
            last = int(cursor.get("last_uid", 0))
        criteria = ["UID", f"{last + 1}:*"]
        if since:
            criteria += ["SINCE", imap_date(since)]
        if before:
            criteria += ["BEFORE", imap_date(before)]
        # "n:*" always matches the highest UID, even one below n
        uids = [u for u in session.search(*criteria) if u > last]
        fallback = now or datetime.now(UTC)
        for i in range(0, len(uids), batch_size):
            chunk = uids[i : i + batch_size]
            sizes = session.sizes(chunk)
            big = [u for u in chunk if sizes.get(u, 0) > opts.max_message_bytes]
            bodies = session.fetch([u for u in chunk if u not in big])
            heads = session.fetch(big, "BODY.PEEK[HEADER]")
            outcomes: list[MessageOutcome] = []
            for uid in chunk:
                raw = bodies.get(uid) or heads.get(uid)
                if raw is None:
                    continue  # expunged between SEARCH and FETCH: nothing left to read
                outcomes.append(
                    read_message(source, raw, fallback, opts, size=sizes.get(uid, len(raw)))
                )
            yield batch_of(outcomes, {"uidvalidity": validity, "last_uid": chunk[-1]})
    finally:
        session.close()
