"""The committed mail corpus, message by message, and as mbox, Maildir and a folder of .eml."""

from __future__ import annotations

import mailbox
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.email import MailOptions, iter_email_files, read_message
from tests.connectors.conftest import FIXTURES, land_source, rows_of
from transforms.mail_fields import contact_fields
from warehouse.schema import raw_contacts, rejects

MAIL = FIXTURES / "mail"
OPTS = MailOptions(internal_domains=frozenset({"ourcompany.com"}))
FALLBACK = datetime(2026, 1, 1, tzinfo=UTC)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


# file → the records it yields: (record id, received at, sender as the mail gives it,
# and the contact fields normalize will read out of the payload)
RECORDS: dict[str, list[tuple[str, datetime, list[dict[str, str]], dict[str, Any]]]] = {
    "01_plain_en.eml": [
        (
            "<plain-en-1@acme.example>",
            when("2026-03-02T09:15:00+00:00"),
            [{"name": "John Smith", "email": "john.smith@acme-robotics.example.com"}],
            {
                "email": "john.smith@acme-robotics.example.com",
                "full_name": "John Smith",
                "phone": "+44 20 7946 0958",
                "job_title": "Purchasing Manager",
                "company": "Acme Robotics Ltd",
                "website": "www.acme-robotics.example.com",
            },
        )
    ],
    "02_rfc2047_iso8859_9.eml": [
        (
            "<tr-1@ozdemir.example>",
            when("2026-03-03T07:00:00+00:00"),
            [{"name": "Şükrü Çağlar", "email": "sukru@ozdemir-makina.example.com.tr"}],
            {
                "full_name": "Şükrü Çağlar",
                "phone": "0532 123 45 67",
                "job_title": "Satın Alma Müdürü",
                "company": "Özdemir Makina San. ve Tic. A.Ş.",
                "website": "https://www.ozdemir-makina.example.com.tr",
            },
        )
    ],
    "03_rfc2047_utf8_html_de.eml": [
        (
            "<de-1@mueller.example>",
            when("2026-03-04T07:00:00+00:00"),
            [{"name": "Jürgen Müller", "email": "j.mueller@mueller-technik.example.de"}],
            {
                "full_name": "Jürgen Müller",
                "phone": "+49 30 1234567",
                "job_title": "Leiter Einkauf",
                "company": "Müller Technik GmbH",
            },
        )
    ],
    "04_notify_en.eml": [
        (
            "<notify-en-1@forms.example.net>",
            when("2026-03-05T12:00:00+00:00"),
            [{"name": "Website Forms", "email": "no-reply@forms.example.net"}],
            {
                "full_name": "Alice Doe",
                "email": "alice.doe@example.org",
                "phone": "+1 415 555 0134",
                "company": "Doe Ventures Inc",
                "message": "Please call me back.",
            },
        )
    ],
    "05_notify_tr.eml": [
        (
            "<notify-tr-1@ourcompany.com>",
            when("2026-03-05T10:00:00+00:00"),
            [{"name": "Web Sitesi", "email": "website@ourcompany.com"}],
            {
                "full_name": "Ayşe Yılmaz",
                "email": "ayse.yilmaz@example.com.tr",
                "phone": "0212 555 12 34",
                "company": "Yılmaz Tekstil Ltd. Şti.",
            },
        )
    ],
    "06_notify_de_html.eml": [
        (
            "<notify-de-1@formulare.example.de>",
            when("2026-03-06T08:00:00+00:00"),
            [{"name": "", "email": "noreply@formulare.example.de"}],
            {
                "full_name": "Klaus Schröder",
                "email": "k.schroeder@example.de",
                "phone": "+49 89 7654321",
                "company": "Schröder AG",
                "message": "Bitte um Rückruf",
            },
        )
    ],
    "07_vcards.eml": [
        (
            "<vcards-1@brown.example>",
            when("2026-03-07T10:00:00+00:00"),
            [{"name": "Bob Brown", "email": "bob@brown-partners.example.com"}],
            {"email": "bob@brown-partners.example.com", "full_name": "Bob Brown"},
        ),
        (
            "<vcards-1@brown.example>#vcard1",
            when("2026-03-07T10:00:00+00:00"),
            [{"name": "Bob Brown", "email": "bob@brown-partners.example.com"}],
            {
                "first_name": "Deniz",
                "last_name": "Kaya",
                "email": "deniz@kaya-lojistik.example.com",
                "phone": "+90 533 765 43 21",
                "company": "Kaya Lojistik A.Ş.",
                "job_title": "Operasyon Müdürü",
                "street": "Atatürk Cad. 5",
                "city": "İzmir",
                "postal_code": "35220",
                "country": "Türkiye",
            },
        ),
        (
            "<vcards-1@brown.example>#vcard2",
            when("2026-03-07T10:00:00+00:00"),
            [{"name": "Bob Brown", "email": "bob@brown-partners.example.com"}],
            {
                "full_name": "Marie Dubois",
                "email": "marie.dubois@example.fr",
                "company": "Dubois SARL",
            },
        ),
    ],
    "16_no_message_id.eml": [
        (
            "sha256:5e7133cd82d1b432431336abfb1bff0c",  # no Message-ID: its content names it
            when("2026-03-08T09:00:00+00:00"),
            [{"name": "Hana Sato", "email": "hana@sato.example.jp"}],
            {"email": "hana@sato.example.jp", "full_name": "Hana Sato"},
        )
    ],
}
# a broken MIME body costs the body, not the sender: the headers still name who wrote
RECORDS["13_broken_mime.eml"] = [
    (
        "<broken-1@broken.example>",
        FALLBACK,
        [{"name": "Eve", "email": "eve@broken.example.com"}],
        {"email": "eve@broken.example.com", "full_name": "Eve"},
    )
]
SKIPPED = {
    "08_bounce.eml": "bounce",
    "09_autoreply.eml": "auto_reply",
    "10_out_of_office.eml": "auto_reply",
    "11_noreply.eml": "no_reply",
    "12_internal.eml": "internal_sender",
}
REJECTED = {
    "14_unknown_charset.eml": (
        "<cs-1@charset.example>",
        "unknown_charset",
        "unknown charset 'x-klingon'",
    ),
    "15_lying_charset.eml": (
        "<cs-2@charset.example>",
        "charset_mismatch",
        "text is not valid utf-8 (byte 1)",
    ),
}


def test_the_table_covers_the_whole_corpus() -> None:
    names = {p.name for p in MAIL.glob("*.eml")}
    assert names == set(RECORDS) | set(SKIPPED) | set(REJECTED)


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_a_message_yields_its_records(name: str) -> None:
    out = read_message("inbox", (MAIL / name).read_bytes(), FALLBACK, OPTS)
    assert out.rejects == [] and not out.skipped
    got = [(r.source_record_id, r.received_at, r.payload["from"]) for r in out.records]
    assert got == [(rid, at, sender) for rid, at, sender, _ in RECORDS[name]]
    for record, (*_, fields) in zip(out.records, RECORDS[name], strict=True):
        assert record.source == "inbox" and record.source_kind == "email"
        found = contact_fields(record.payload)
        assert {k: found.get(k) for k in fields} == fields
        assert "\r" not in record.payload.get("body", "")


@pytest.mark.parametrize("name", sorted(SKIPPED))
def test_a_message_without_a_contact_is_skipped_and_counted(name: str) -> None:
    out = read_message("inbox", (MAIL / name).read_bytes(), FALLBACK, OPTS)
    assert out.records == [] and out.rejects == []
    assert dict(out.skipped) == {SKIPPED[name]: 1}


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_an_unreadable_message_is_a_reject_with_its_reason(name: str) -> None:
    raw = (MAIL / name).read_bytes()
    out = read_message("inbox", raw, FALLBACK, OPTS)
    assert out.records == [] and not out.skipped
    [reject] = out.rejects
    assert (reject.source_record_id, reject.code, reject.message) == REJECTED[name]
    assert reject.raw.startswith("From: ")  # the message is kept to look at


def test_internal_mail_is_a_contact_when_no_domain_is_ours() -> None:
    out = read_message("inbox", (MAIL / "12_internal.eml").read_bytes(), FALLBACK, MailOptions())
    assert [r.source_record_id for r in out.records] == ["<int-1@ourcompany.com>"]


def test_an_oversized_message_is_a_reject_naming_its_size() -> None:
    raw = (MAIL / "07_vcards.eml").read_bytes()
    out = read_message("inbox", raw, FALLBACK, MailOptions(max_message_bytes=len(raw) - 1))
    assert out.records == []
    [reject] = out.rejects
    assert (reject.source_record_id, reject.code, reject.message) == (
        "<vcards-1@brown.example>",
        "oversized",
        f"message is {len(raw)} bytes, limit {len(raw) - 1}",
    )


def _into(box: mailbox.Mailbox[Any], path: Path) -> Path:
    for p in sorted(MAIL.glob("*.eml")):
        box.add(p.read_bytes())
    box.close()
    return path


def _as_mbox(folder: Path) -> Path:
    return _into(mailbox.mbox(str(folder / "inbox.mbox")), folder / "inbox.mbox")


def _as_maildir(folder: Path) -> Path:
    return _into(mailbox.Maildir(str(folder / "Maildir")), folder / "Maildir")


def _as_eml_folder(folder: Path) -> Path:
    path = folder / "eml"
    shutil.copytree(MAIL, path)
    return path


@pytest.mark.parametrize("make", [_as_mbox, _as_maildir, _as_eml_folder])
def test_mbox_maildir_and_eml_folder_give_the_same_records(make: Any, tmp_path: Path) -> None:
    path = make(tmp_path)
    [batch] = list(iter_email_files("inbox", str(path), None, OPTS))
    named = {
        r.source_record_id for r in batch.records if not r.source_record_id.startswith("sha256:")
    }
    expected = {rid for recs in RECORDS.values() for rid, *_ in recs}
    assert named == {rid for rid in expected if not rid.startswith("sha256:")}
    assert len(batch.records) == len(expected)  # plus the one keyed by content
    assert {(j.source_record_id, j.code) for j in batch.rejects} == {
        (rid, code) for rid, code, _ in REJECTED.values()
    }
    assert batch.skipped == {"bounce": 1, "auto_reply": 2, "no_reply": 1, "internal_sender": 1}
    # one fixture message has no Date: the cursor keeps when this content was first landed
    fp = batch.cursor["files"][str(path)]
    assert batch.cursor["files"] == {str(path): fp} and set(batch.cursor["first_landed"]) == {fp}
    # the same file or folder again, unchanged: not read at all
    assert list(iter_email_files("inbox", str(path), batch.cursor, OPTS)) == []


@pytest.mark.parametrize("make", [_as_mbox, _as_maildir, _as_eml_folder])
def test_a_mail_file_is_read_in_batches_and_its_cursor_moves_at_the_last(
    make: Any, tmp_path: Path
) -> None:
    """A big mbox is not one batch: memory stays bounded by `batch_messages`. A run stopped
    after any batch but the last keeps the old cursor, so the next run reads the file again."""
    path = make(tmp_path)
    # one clock for both reads: the message without a Date is dated when it is first landed
    now = datetime(2026, 10, 1, 9, 30, tzinfo=UTC)
    [whole] = list(iter_email_files("inbox", str(path), None, OPTS, now=now))
    parts = list(iter_email_files("inbox", str(path), None, OPTS, now=now, batch_messages=2))
    messages = len(list(MAIL.glob("*.eml")))
    assert messages > 4 and len(parts) == (messages + 1) // 2  # two messages a batch
    assert [r for b in parts for r in b.records] == whole.records
    assert [j for b in parts for j in b.rejects] == whole.rejects
    assert all(str(path) not in b.cursor["files"] for b in parts[:-1])
    assert parts[-1].cursor == whole.cursor
    # stopped after the first batch: the file is read again, whole
    again = list(iter_email_files("inbox", str(path), parts[0].cursor, OPTS, now=now))
    assert [r for b in again for r in b.records] == whole.records


def test_an_mbox_that_grows_lands_only_the_new_message(tmp_path: Path) -> None:
    path = _as_mbox(tmp_path)
    cfg = tmp_path / "leadflow.yaml"
    cfg.write_text(
        f"warehouse: {{url: 'sqlite:///{tmp_path}/w.db'}}\ninternal_domains: [ourcompany.com]\n"
        f"sources:\n  - name: inbox\n    kind: email\n    path: {path}\n"
    )

    def land() -> dict[str, int]:
        return land_source(cfg, "inbox")

    first = land()
    assert (first["seen"], first["landed"], first["rejected"], first["skipped"]) == (18, 11, 2, 5)
    assert land()["seen"] == 0  # same fingerprint: the file is not read again

    box = mailbox.mbox(str(path))
    box.add(
        b"From: New Person <new@example.com>\r\nMessage-ID: <new-1@example.com>\r\n"
        b"Date: Mon, 09 Mar 2026 09:00:00 +0000\r\nSubject: hi\r\n\r\nA quote please.\r\n"
    )
    box.close()
    third = land()
    assert (third["seen"], third["landed"], third["already_landed"]) == (19, 1, 11)
    assert third["reconciled"] == 1

    assert len(rows_of(cfg, raw_contacts.c.raw_id)) == 12
    assert len(rows_of(cfg, rejects.c.reject_id)) == 2  # not landed twice


def test_a_broken_mime_body_keeps_its_sender_and_carries_its_defects() -> None:
    from transforms.normalize import NormalizeOptions, normalize_contact
    from transforms.records import RawRow, raw_id_for

    out = read_message("inbox", (MAIL / "13_broken_mime.eml").read_bytes(), FALLBACK, OPTS)
    [record] = out.records
    assert out.rejects == []
    assert record.payload["mime_defects"] == [
        "MultipartInvariantViolationDefect",
        "NoBoundaryInMultipartDefect",
    ]
    rid = raw_id_for(record.source, record.source_record_id)
    row = RawRow(rid, "inbox", "email", record.source_record_id, FALLBACK, record.payload)
    contact = normalize_contact(row, NormalizeOptions())
    assert getattr(contact, "email", None) == "eve@broken.example.com"
    assert "malformed_mime" in getattr(contact, "issues", ())


def test_a_broken_mime_message_without_a_sender_is_still_a_reject() -> None:
    raw = (
        b"Subject: broken\nMessage-ID: <broken-2@broken.example>\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/mixed\n\n--nothing\nContent-Type: text/plain\n\nhi\n"
    )
    out = read_message("inbox", raw, FALLBACK, OPTS)
    assert out.records == []
    [reject] = out.rejects
    assert (reject.source_record_id, reject.code) == ("<broken-2@broken.example>", "malformed_mime")
    assert "NoBoundaryInMultipartDefect" in reject.message


def test_a_message_without_a_date_keeps_when_its_file_was_first_landed(tmp_path: Path) -> None:
    """Never the file's modification time: a touch, a copy or a clone moves no date."""
    import os

    box = tmp_path / "sales.mbox"
    mb = mailbox.mbox(str(box))
    undated = "From: Hans Weber <hans@weber.de>\nSubject: offer\nMessage-ID: <u1@weber.de>\n\nhi\n"
    dated = (
        "From: Ayse Kaya <ayse@firma.com.tr>\nDate: Tue, 03 Mar 2026 10:00:00 +0000\n"
        "Message-ID: <d1@firma.com.tr>\nSubject: teklif\n\nmerhaba\n"
    )
    mb.add(undated)
    mb.add(dated)
    mb.close()
    first_read = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
    batches = list(iter_email_files("inbox", str(box), None, OPTS, now=first_read))
    got = {r.source_record_id: r.received_at for b in batches for r in b.records}
    assert got == {
        "<u1@weber.de>": first_read,
        "<d1@firma.com.tr>": datetime(2026, 3, 3, 10, 0, tzinfo=UTC),
    }
    cursor = batches[-1].cursor
    # a copy under another name and mtime, read later by a backfill with the first-landed times
    later = datetime(2026, 6, 1, tzinfo=UTC)
    copy = tmp_path / "copy" / "inbox.mbox"
    copy.parent.mkdir()
    shutil.copy(box, copy)
    os.utime(copy, (later.timestamp(), later.timestamp()))
    again = iter_email_files(
        "inbox", str(copy), None, OPTS, now=later, landed=cursor["first_landed"]
    )
    assert {r.source_record_id: r.received_at for b in again for r in b.records} == got
