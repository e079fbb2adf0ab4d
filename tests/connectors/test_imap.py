"""The IMAP connector against a real dovecot: cursors, UIDVALIDITY, windows, batches, drops, refusals."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.base import RawBatch
from connectors.email import MailOptions
from connectors.imap import ImapConfig, ImapError, ImapSession, connect, iter_imap
from flows.sources import SourceError
from tests.connectors.conftest import PASSWORD, Dovecot, corpus, land_source, rows_of
from warehouse.schema import contacts, raw_contacts, rejects, source_cursors

PASSWORD_ENV = "LEADFLOW_TEST_IMAP_PASSWORD"
OURS = frozenset({"ourcompany.com"})

# What each message of the corpus gives with ourcompany.com as the internal domain
CORPUS_RECORDS = {
    "<plain-en-1@acme.example>",
    "<tr-1@ozdemir.example>",
    "<de-1@mueller.example>",
    "<notify-en-1@forms.example.net>",
    "<notify-tr-1@ourcompany.com>",
    "<notify-de-1@formulare.example.de>",
    "<vcards-1@brown.example>",
    "<vcards-1@brown.example>#vcard1",
    "<vcards-1@brown.example>#vcard2",
    "sha256:5e7133cd82d1b432431336abfb1bff0c",  # 16_no_message_id: keyed by its content
    "<broken-1@broken.example>",  # a broken MIME body: the sender still counts
}
CORPUS_REJECTS = {
    ("<cs-1@charset.example>", "unknown_charset"),
    ("<cs-2@charset.example>", "charset_mismatch"),
}
CORPUS_SKIPPED = {"bounce": 1, "auto_reply": 2, "no_reply": 1, "internal_sender": 1}


def message(n: int, day: int = 10, body: str = "Please send a quote.") -> bytes:
    return (
        f"From: Person {n} <person{n}@example.com>\r\nTo: sales@ourcompany.com\r\n"
        f"Subject: request {n}\r\nDate: Tue, {day:02d} Mar 2026 10:00:00 +0000\r\n"
        f"Message-ID: <m{n}@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        f"{body}\r\n"
    ).encode()


def session_for(
    dovecot: Dovecot, user: str, folder: str = "INBOX", port: int | None = None, **kw: Any
) -> ImapSession:
    cfg = ImapConfig("127.0.0.1", port or dovecot.port, "none", user, PASSWORD, folder, 10.0)
    return ImapSession(lambda: connect(cfg), folder, **kw)


def read_all(
    dovecot: Dovecot, user: str, cursor: dict[str, Any] | None = None, **kw: Any
) -> list[RawBatch]:
    opts = kw.pop("opts", MailOptions(internal_domains=OURS))
    return list(iter_imap("inbox", lambda: session_for(dovecot, user), cursor, opts, **kw))


def ids(batches: list[RawBatch]) -> set[str]:
    return {r.source_record_id for b in batches for r in b.records}


def write_cfg(tmp_path: Path, port: int, user: str, folder: str = "INBOX", extra: str = "") -> Path:
    cfg = tmp_path / "leadflow.yaml"
    cfg.write_text(
        f"warehouse: {{url: 'sqlite:///{tmp_path}/w.db'}}\n"
        f"internal_domains: [ourcompany.com]\n"
        f"quality: {{docs_dir: '{tmp_path}/docs'}}\n"
        "sources:\n"
        "  - name: inbox\n    kind: email\n"
        f"    imap: {{host: 127.0.0.1, port: {port}, security: none, user: {user},\n"
        f"           password_env: {PASSWORD_ENV}, folder: '{folder}', batch_size: 4,\n"
        "           timeout_seconds: 10}\n"
        f"{extra}"
    )
    return cfg


def land(cfg: Path, start: date | None = None, end: date | None = None) -> dict[str, int]:
    return land_source(cfg, "inbox", start, end)


@pytest.fixture
def password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)


def test_corpus_lands_once_and_the_cursor_takes_only_new_mail(
    dovecot: Dovecot, tmp_path: Path, password: None
) -> None:
    user = dovecot.new_user()
    dovecot.append(user, corpus())
    cfg = write_cfg(tmp_path, dovecot.port, user)

    first = land(cfg)
    assert first["seen"] == 18 and first["landed"] == 11 and first["reconciled"] == 1
    assert first["rejected"] == 2 and first["skipped"] == 5
    assert {k[8:]: v for k, v in first.items() if k.startswith("skipped_")} == CORPUS_SKIPPED
    assert {r[0] for r in rows_of(cfg, raw_contacts.c.source_record_id)} == CORPUS_RECORDS
    assert set(rows_of(cfg, rejects.c.source_record_id, rejects.c.code)) == CORPUS_REJECTS
    [(cursor,)] = rows_of(cfg, source_cursors.c.cursor)
    assert cursor["last_uid"] == 16 and cursor["uidvalidity"] > 0

    again = land(cfg)
    assert again["seen"] == 0 and again["landed"] == 0  # the cursor asks for UIDs above 16 only

    dovecot.append(user, [message(1), message(2)])
    third = land(cfg)
    assert third == third | {"seen": 2, "landed": 2, "already_landed": 0, "reconciled": 1}
    assert len(rows_of(cfg, raw_contacts.c.raw_id)) == 13
    [(cursor2,)] = rows_of(cfg, source_cursors.c.cursor)
    assert cursor2 == {"uidvalidity": cursor["uidvalidity"], "last_uid": 18}


def test_a_new_uidvalidity_rescans_and_message_ids_keep_it_from_duplicating(
    dovecot: Dovecot, tmp_path: Path, password: None
) -> None:
    user = dovecot.new_user()
    folder = "Leads 2026"
    conn = dovecot.login(user)
    assert conn.create(f'"{folder}"')[0] == "OK"
    conn.logout()
    dovecot.append(user, corpus("01_plain_en.eml", "07_vcards.eml", "16_no_message_id.eml"), folder)
    cfg = write_cfg(tmp_path, dovecot.port, user, folder)
    assert land(cfg)["landed"] == 5
    [(before,)] = rows_of(cfg, source_cursors.c.cursor)

    # The folder comes back (a server migration): same mail, UIDs void, and one message more.
    dovecot.recreate_folder(user, folder)
    dovecot.append(
        user,
        corpus("16_no_message_id.eml", "07_vcards.eml", "01_plain_en.eml") + [message(3)],
        folder,
    )
    stats = land(cfg)
    assert stats["seen"] == 6  # everything was read again, from UID 1
    assert stats["landed"] == 1 and stats["already_landed"] == 5 and stats["reconciled"] == 1
    [(after,)] = rows_of(cfg, source_cursors.c.cursor)
    assert after["uidvalidity"] != before["uidvalidity"] and after["last_uid"] == 4
    landed = [r[0] for r in rows_of(cfg, raw_contacts.c.source_record_id)]
    assert sorted(landed) == sorted(set(landed)) and "<m3@example.com>" in landed
    assert len(landed) == 6


def test_since_before_window_reads_only_those_days(
    dovecot: Dovecot, tmp_path: Path, password: None
) -> None:
    user = dovecot.new_user()
    dovecot.append(user, corpus())  # internal dates from the Date headers, 2 to 8 March 2026
    got = read_all(dovecot, user, since=date(2026, 3, 3), before=date(2026, 3, 6))
    assert ids(got) == {
        "<tr-1@ozdemir.example>",
        "<de-1@mueller.example>",
        "<notify-en-1@forms.example.net>",
        "<notify-tr-1@ourcompany.com>",
    }

    # The same window as a backfill lands it without moving the live cursor.
    cfg = write_cfg(tmp_path, dovecot.port, user)
    stats = land(cfg, date(2026, 3, 3), date(2026, 3, 6))
    assert stats["landed"] == 4 and stats["outside_window"] == 0 and stats["reconciled"] == 1
    assert rows_of(cfg, source_cursors.c.cursor) == []
    assert land(cfg, date(2026, 3, 3), date(2026, 3, 6))["landed"] == 0
    assert land(cfg)["landed"] == 7  # the incremental run still starts at UID 1


def test_fetches_in_batches_with_few_round_trips(dovecot: Dovecot) -> None:
    user = dovecot.new_user()
    dovecot.append(user, [message(n) for n in range(1, 12)])
    sessions: list[ImapSession] = []

    def open_session() -> ImapSession:
        sessions.append(session_for(dovecot, user))
        return sessions[-1]

    batches = list(iter_imap("inbox", open_session, None, MailOptions(), batch_size=4))
    assert [len(b.records) for b in batches] == [4, 4, 3]
    assert [b.cursor["last_uid"] for b in batches] == [4, 8, 11]
    assert [r.source_record_id for b in batches for r in b.records] == [
        f"<m{n}@example.com>" for n in range(1, 12)
    ]
    # one SEARCH, then per batch one size FETCH and one body FETCH
    assert sessions[0].round_trips == 1 + 2 * 3 and sessions[0].reconnects == 0

    # resuming from the second batch's cursor reads the third batch only
    rest = read_all(dovecot, user, batches[1].cursor, batch_size=4)
    assert ids(rest) == {"<m9@example.com>", "<m10@example.com>", "<m11@example.com>"}


class CuttingProxy:
    """A TCP relay to dovecot that, once, cuts the connection a few bytes into a FETCH of bodies."""

    MARKER = b"BODY[] {"

    def __init__(
        self, target: int, cuts: int = 1, refuse_after_cut: int = 0, source: str = "127.0.0.1"
    ) -> None:
        self.target = target
        self.source = source
        self.cuts_left = cuts
        self.refuse_left = refuse_after_cut
        self.cut = 0
        self.refused = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.threads: list[threading.Thread] = []
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.cut and self.refuse_left:  # the server is still restarting
                self.refuse_left -= 1
                self.refused += 1
                client.close()
                continue
            t = threading.Thread(target=self._relay, args=(client,), daemon=True)
            t.start()
            self.threads.append(t)

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(
            ("127.0.0.1", self.target), source_address=(self.source, 0)
        )
        armed = self.cuts_left > 0
        self.cuts_left -= int(armed)

        def up() -> None:
            try:
                while data := client.recv(65536):
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=up, daemon=True).start()
        seen = b""
        try:
            while data := upstream.recv(65536):
                if armed:
                    seen += data
                    at = seen.find(self.MARKER)
                    if at >= 0:
                        keep = at + len(self.MARKER) + 40 - (len(seen) - len(data))
                        client.sendall(data[: max(0, keep)])
                        self.cut += 1
                        break
                client.sendall(data)
        except OSError:
            pass
        for s in (client, upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def proxy(dovecot: Dovecot, request: pytest.FixtureRequest) -> Iterator[CuttingProxy]:
    p = CuttingProxy(dovecot.port, **getattr(request, "param", {}))
    yield p
    p.close()


@pytest.mark.parametrize("proxy", [{}, {"refuse_after_cut": 1}], indirect=True)
def test_a_connection_cut_mid_fetch_is_reopened_and_nothing_is_lost_or_doubled(
    dovecot: Dovecot, proxy: CuttingProxy, tmp_path: Path, password: None
) -> None:
    user = dovecot.new_user()
    dovecot.append(user, [message(n) for n in range(1, 10)])
    cfg = write_cfg(tmp_path, proxy.port, user)
    stats = land(cfg)
    assert proxy.cut == 1 and proxy.refuse_left == 0  # cut once (and refused once, if asked)
    assert stats["seen"] == 9 and stats["landed"] == 9 and stats["reconciled"] == 1
    got = sorted(r[0] for r in rows_of(cfg, raw_contacts.c.source_record_id))
    assert got == sorted(f"<m{n}@example.com>" for n in range(1, 10))
    assert land(cfg)["landed"] == 0


def test_the_session_counts_reconnects_and_gives_up_after_its_limit(dovecot: Dovecot) -> None:
    user = dovecot.new_user()
    dovecot.append(user, [message(n) for n in range(1, 4)])
    proxy = CuttingProxy(dovecot.port, cuts=1, refuse_after_cut=1)
    try:
        session = session_for(dovecot, user, port=proxy.port, pause=0.01)
        bodies = session.fetch([1, 2, 3])
        assert sorted(bodies) == [1, 2, 3] and session.reconnects == 2 and proxy.refused == 1
        session.close()
    finally:
        proxy.close()

    proxy = CuttingProxy(dovecot.port, cuts=1, refuse_after_cut=10)
    try:
        session = session_for(dovecot, user, port=proxy.port, pause=0.01, max_reconnects=2)
        with pytest.raises(ImapError, match="connection dropped 3 times during FETCH"):
            session.fetch([1, 2, 3])
    finally:
        proxy.close()


def test_an_oversized_message_is_a_reject_with_its_size_and_its_body_is_not_fetched(
    dovecot: Dovecot, tmp_path: Path, password: None
) -> None:
    user = dovecot.new_user()
    big = message(2, body="SECRET-BODY " * 400)
    dovecot.append(user, [message(1), big, message(3)])
    cfg = write_cfg(tmp_path, dovecot.port, user, extra="    max_message_bytes: 2000\n")
    stats = land(cfg)
    assert stats["landed"] == 2 and stats["rejected"] == 1 and stats["reconciled"] == 1
    [(rid, code, msg, raw)] = rows_of(
        cfg, rejects.c.source_record_id, rejects.c.code, rejects.c.message, rejects.c.raw
    )
    assert (rid, code) == ("<m2@example.com>", "oversized")
    assert msg == f"message is {len(big)} bytes, limit 2000"
    assert "Subject: request 2" in raw and "SECRET-BODY" not in raw  # only the header was read


def test_a_missing_folder_is_a_clear_error(
    dovecot: Dovecot, tmp_path: Path, password: None
) -> None:
    cfg = write_cfg(tmp_path, dovecot.port, dovecot.new_user(), folder="No Such Folder")
    with pytest.raises(SourceError, match="cannot open folder 'No Such Folder'"):
        land(cfg)


def test_a_refused_login_is_a_clear_error_without_the_password(
    dovecot: Dovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = dovecot.new_user()
    wrong = "wrong-Pa55word-xyz"
    monkeypatch.setenv(PASSWORD_ENV, wrong)
    # dovecot slows every later login from an address that failed one: this one comes from
    # 127.0.0.2, through a relay that cuts nothing, so the other tests' logins stay fast
    relay = CuttingProxy(dovecot.port, cuts=0, source="127.0.0.2")
    try:
        cfg = write_cfg(tmp_path, relay.port, user)
        with pytest.raises(SourceError) as err:
            land(cfg)
    finally:
        relay.close()
    text = str(err.value)
    assert text.startswith(f"sources.inbox: imap 127.0.0.1:{relay.port}: login refused for {user}")
    assert wrong not in text and wrong not in repr(err.value.__context__)
    assert wrong not in repr(ImapConfig("h", 1, "none", user, wrong))
    assert rows_of(cfg, raw_contacts.c.raw_id) == [] and rows_of(cfg, source_cursors.c.cursor) == []


def test_pipeline_run_from_a_dovecot_mailbox_into_sqlite(
    prefect_api: None, dovecot: Dovecot, tmp_path: Path, password: None
) -> None:
    from flows.pipeline import pipeline

    user = dovecot.new_user()
    dovecot.append(user, corpus())
    cfg = write_cfg(tmp_path, dovecot.port, user)
    first = pipeline(config=str(cfg))
    src = first["sources"]["inbox"]
    assert src["landed"] == 11 and src["rejected"] == 2 and src["skipped"] == 5
    emails = {r[0] for r in rows_of(cfg, contacts.c.email)}
    # senders, form submitters behind no-reply and internal senders, and vCard entries
    assert {
        "john.smith@acme-robotics.example.com",
        "sukru@ozdemir-makina.example.com.tr",
        "j.mueller@mueller-technik.example.de",
        "alice.doe@example.org",
        "ayse.yilmaz@example.com.tr",
        "k.schroeder@example.de",
        "deniz@kaya-lojistik.example.com",
        "marie.dubois@example.fr",
        "bob@brown-partners.example.com",
        "hana@sato.example.jp",
        "eve@broken.example.com",  # its MIME body is broken, its sender is not
    } == emails
    before = rows_of(cfg, contacts.c.contact_id, contacts.c.email)

    dovecot.append(user, [message(7)])
    second = pipeline(config=str(cfg))
    assert second["sources"]["inbox"]["seen"] == 1 and second["sources"]["inbox"]["landed"] == 1
    after = rows_of(cfg, contacts.c.contact_id, contacts.c.email)
    assert {e for _, e in set(after) - set(before)} == {"person7@example.com"}
    assert set(before) <= set(after)

    third = pipeline(config=str(cfg))
    assert third["sources"]["inbox"]["seen"] == 0
    assert rows_of(cfg, contacts.c.contact_id, contacts.c.email) == after


def test_received_at_falls_back_to_the_run_clock_only_without_a_date(dovecot: Dovecot) -> None:
    user = dovecot.new_user()
    undated = b"From: Zed <zed@example.com>\r\nMessage-ID: <nodate@example.com>\r\n\r\nhello\r\n"
    dovecot.append(user, [undated, message(1, day=9)], dated=False)
    now = datetime(2026, 4, 1, 12, tzinfo=UTC)
    got = {
        r.source_record_id: r.received_at
        for b in read_all(dovecot, user, now=now)
        for r in b.records
    }
    assert got == {
        "<nodate@example.com>": now,
        "<m1@example.com>": datetime(2026, 3, 9, 10, tzinfo=UTC),
    }
