"""Mail sources: mbox files, Maildirs and folders of .eml, one raw record per message."""

from __future__ import annotations

import email
import mailbox
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from connectors.base import (
    ExtractReject,
    RawBatch,
    RawRecord,
    content_hash,
    file_mtime,
    iter_changed_files,
)


def _text_body(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        text = part.get_content()
    except (LookupError, UnicodeError, AssertionError):
        payload = part.get_payload(decode=True)
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
    if part.get_content_subtype() == "html":
        from html.parser import HTMLParser

        chunks: list[str] = []

        class _Text(HTMLParser):
            def handle_data(self, data: str) -> None:
                chunks.append(data)

        _Text().feed(text)
        text = "\n".join(c.strip() for c in chunks if c.strip())
    return str(text)


def message_payload(raw: bytes) -> dict[str, Any]:
    """Decode a message's headers and text; the sender's fields stay as the mail gave them."""
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(msg, EmailMessage)

    def addresses(header: str) -> list[dict[str, str]]:
        values = [str(v) for v in msg.get_all(header, [])]
        return [{"name": n, "email": a} for n, a in getaddresses(values) if a]

    return {
        "message_id": str(msg.get("Message-ID", "") or "").strip(),
        "date": str(msg.get("Date", "") or ""),
        "from": addresses("From"),
        "reply_to": addresses("Reply-To"),
        "subject": str(msg.get("Subject", "") or ""),
        "body": _text_body(msg),
    }


def _received_at(payload: dict[str, Any], fallback: datetime) -> datetime:
    try:
        dt = parsedate_to_datetime(payload["date"])
    except (TypeError, ValueError, IndexError):
        return fallback
    return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)


def _messages(path: str) -> Iterator[bytes]:
    if os.path.isdir(path) and os.path.isdir(os.path.join(path, "cur")):
        md = mailbox.Maildir(path, factory=None, create=False)
        for key in sorted(md.keys()):
            yield md.get_bytes(key)
    elif os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            if name.lower().endswith(".eml"):
                with open(os.path.join(path, name), "rb") as fh:
                    yield fh.read()
    else:
        mb = mailbox.mbox(path, create=False)
        for key in mb.keys():
            yield mb.get_bytes(key)


def iter_email_files(source: str, path: str, cursor: dict[str, Any] | None) -> Iterator[RawBatch]:
    """Yield one batch per changed mail file or folder; each message keyed by its Message-ID."""
    for mpath, _fp, after in iter_changed_files([path], cursor):
        fallback = file_mtime(mpath) if os.path.isfile(mpath) else datetime.now(UTC)
        records: list[RawRecord] = []
        rejects: list[ExtractReject] = []
        for raw in _messages(mpath):
            try:
                payload = message_payload(raw)
            except Exception as exc:  # malformed MIME must not stop the mailbox
                rid = f"sha256:{content_hash(raw)[:32]}"
                raw_text = raw[:4000].decode("utf-8", "replace")
                rejects.append(ExtractReject(source, rid, "malformed_mime", str(exc), raw_text))
                continue
            rid = payload["message_id"] or f"sha256:{content_hash(raw)[:32]}"
            records.append(
                RawRecord(source, "email", rid, _received_at(payload, fallback), payload)
            )
        yield RawBatch(records=records, cursor=after, rejects=rejects)
