"""An IMAP connection dropped mid-fetch, between leadflow and a real dovecot: the session reconnects
and nothing is lost; a connection that keeps dropping fails the source with its cursor at the last
landed batch."""

from __future__ import annotations

import imaplib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from flows.settings import load_settings
from flows.sources import SourceError
from flows.stages import extract_and_land
from tests.conftest import write_config
from tests.connectors.conftest import PASSWORD, Dovecot
from tests.faultserver import tcp_server
from warehouse import db
from warehouse.schema import raw_contacts, source_cursors


@dataclass
class Dropper:
    """Cuts the connection part-way through the answer to a FETCH of message bodies."""

    upstream: int
    drops: int  # how many body fetches to cut (then behave); -1: every one after `spare`
    spare: int = 0  # body fetches let through before cutting starts
    cut_after: int = 3000  # bytes of the answer that get through before the cut
    fetches: int = 0
    cuts: int = 0
    port: int = 0

    def should_cut(self) -> bool:
        self.fetches += 1
        if self.fetches <= self.spare:
            return False
        if self.drops == -1 or self.cuts < self.drops:
            self.cuts += 1
            return True
        return False

    def relay(self, client: socket.socket) -> None:
        server = socket.create_connection(("127.0.0.1", self.upstream))
        cut = threading.Event()
        budget = [0]

        def up() -> None:
            try:
                while data := client.recv(65536):
                    if b"BODY.PEEK[]" in data and self.should_cut():
                        budget[0] = self.cut_after
                        cut.set()
                    server.sendall(data)
            except OSError:
                pass

        threading.Thread(target=up, daemon=True).start()
        try:
            while data := server.recv(65536):
                if cut.is_set():
                    client.sendall(data[: budget[0]])
                    budget[0] -= len(data)
                    if budget[0] <= 0:
                        break  # the connection drops in the middle of the message
                else:
                    client.sendall(data)
        except OSError:
            pass
        finally:
            for s in (client, server):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


@contextmanager
def proxy(dropper: Dropper) -> Iterator[Dropper]:
    with tcp_server(dropper.relay) as port:
        dropper.port = port
        yield dropper


def _messages(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        msg = EmailMessage()
        msg["From"] = f"Person {i} <person{i}@firm{i}.com>"
        msg["To"] = "sales@ourcompany.com"
        msg["Subject"] = f"Teklif talebi {i}"
        msg["Message-ID"] = f"<m{i}@firm{i}.com>"
        msg["Date"] = f"Mon, 0{1 + i % 9} Nov 2026 10:00:00 +0300"
        msg.set_content(f"Merhaba, fiyat teklifi istiyoruz. {i}\n" + "Detay satırı.\n" * 400)
        out.append(msg.as_bytes())
    return out


def _land(tmp_path: Path, user: str, port: int) -> dict[str, int]:
    url = f"sqlite:///{tmp_path}/w.db"
    cfg = write_config(
        tmp_path / "lf.yaml",
        url,
        "sources:\n  - name: inbox\n    kind: email\n    imap:\n      host: 127.0.0.1\n"
        f"      port: {port}\n      security: none\n      user: {user}\n"
        "      password_env: INBOX_PASSWORD\n      batch_size: 2\n      max_reconnects: 2\n"
        "      timeout_seconds: 5\n",
    )
    engine = db.make_engine(url)
    db.upgrade(engine)
    try:
        return extract_and_land(engine, load_settings(cfg).source("inbox"), "run_t").as_dict()
    finally:
        engine.dispose()


def _state(tmp_path: Path) -> tuple[set[str], dict[str, int] | None]:
    engine = db.make_engine(f"sqlite:///{tmp_path}/w.db")
    with engine.connect() as conn:
        ids = {r.source_record_id for r in conn.execute(select(raw_contacts))}
        cur = conn.execute(select(source_cursors.c.cursor)).scalar_one_or_none()
    engine.dispose()
    return ids, cur


@pytest.fixture(scope="module")
def mailbox(dovecot: Dovecot) -> str:
    """One user with six messages, read (never changed) by every test here."""
    user = dovecot.new_user()
    for attempt in range(10):
        try:
            dovecot.append(user, _messages(6))
            return user
        except imaplib.IMAP4.error:
            # dovecot re-reads its passwd-file on a change of mtime, in whole seconds
            if attempt == 9:
                raise
            time.sleep(0.5)
    raise AssertionError("unreachable")


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INBOX_PASSWORD", PASSWORD)


def test_a_fetch_cut_mid_message_is_fetched_again(
    dovecot: Dovecot, mailbox: str, tmp_path: Path
) -> None:
    user = mailbox
    with proxy(Dropper(dovecot.port, drops=1, spare=1)) as dropper:
        stats = _land(tmp_path, user, dropper.port)
    assert dropper.cuts == 1  # the second batch's fetch was cut once, then fetched again
    ids, cur = _state(tmp_path)
    assert ids == {f"<m{i}@firm{i}.com>" for i in range(6)}
    assert stats["landed"] == 6 and stats["reconciled"] == 1
    assert cur is not None and cur["last_uid"] == 6


def test_a_connection_that_keeps_dropping_fails_with_the_cursor_at_the_last_landed_batch(
    dovecot: Dovecot, mailbox: str, tmp_path: Path
) -> None:
    user = mailbox
    with proxy(Dropper(dovecot.port, drops=-1, spare=1)) as dropper:
        with pytest.raises(SourceError, match="connection dropped 3 times during FETCH"):
            _land(tmp_path, user, dropper.port)
    ids, cur = _state(tmp_path)
    # The first batch landed with its cursor; nothing after it was skipped.
    assert ids == {"<m0@firm0.com>", "<m1@firm1.com>"}
    assert cur is not None and cur["last_uid"] == 2
    # The connection heals: the next run reads on from the cursor, and nothing is lost.
    _land(tmp_path, user, dovecot.port)
    ids, cur = _state(tmp_path)
    assert len(ids) == 6 and cur is not None and cur["last_uid"] == 6
