"""Mail sources: mbox files, Maildirs and folders of .eml; what one message yields, for IMAP too.

A message gives one raw record keyed by its Message-ID. Each contact in a vCard (.vcf)
attachment gives one more record, keyed `<Message-ID>#vcard<n>`, whose payload holds that
entry's text; the vCard is never saved to disk. Bounces, auto-replies, no-reply senders and
the company's own domains are skipped and counted by reason, unless the body carries a
"Label: someone@example.com" block (a web-form notification sent from a no-reply address).
"""

from __future__ import annotations

import base64
import email
import functools
import mailbox
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email import policy
from email.errors import MessageDefect
from email.message import EmailMessage, Message
from email.policy import EmailPolicy
from email.utils import format_datetime, getaddresses, parsedate_to_datetime
from html.parser import HTMLParser
from itertools import islice
from typing import Any

from connectors.base import (
    ExtractReject,
    RawBatch,
    RawRecord,
    content_hash,
    iter_changed_files,
    with_first_landing,
)

DEFAULT_MAX_BYTES = 25 * 1024 * 1024
MAX_BODY_CHARS = 20_000
FALLBACK_CHARSETS = ("utf-8", "cp1254", "cp1252")
_NOREPLY = re.compile(
    r"^(no[-_.]?reply|do[-_.]?not[-_.]?reply|donotreply|mailer[-_.]?daemon|postmaster|bounces?)"
    r"([-+_.].*)?$",
    re.I,
)
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|out of (the )?office|abwesenheitsnotiz|"
    r"otomatik yan[ıi]t|ofis d[ıi][şs][ıi]nda)",
    re.I,
)
# "E-mail: x@y.z" somewhere in the body: a form notification, whoever sent it
_FORM_EMAIL_LINE = re.compile(r"^[^\n:]{1,40}[:\t]\s*\S+@[\w-]+(\.[\w-]+)+\s*$", re.M)
_BROKEN_MIME = (
    "StartBoundaryNotFoundDefect",
    "NoBoundaryInMultipartDefect",
    "MultipartInvariantViolationDefect",
    "InvalidBase64CharactersDefect",
    "InvalidBase64LengthDefect",
)


@functools.lru_cache(maxsize=4096)
def _parsed_header(name: str, value: str) -> Any:
    return policy.default.header_factory(name, "".join(value.splitlines()))


# Headers leadflow reads only as text (`_header`, `_addresses`), never through the email
# package. Their plain forms below read the same as policy.default's parse gives them (the
# header's text; the same (name, address) pairs from `getaddresses`), so they skip that parse:
# it was ~70% of reading a message (the defects collected token by token). The benchmark's 10k
# messages (half the senders' names RFC 2047-encoded) were read in 11.1 s, now in 3.9 s.
_AS_TEXT = frozenset({"subject", "precedence", "auto-submitted", "x-autoreply", "x-autorespond"})
# and Date, whose text is the date formatted again (`_plain`)
_ADDRESSES = frozenset({"from", "reply-to"})
_MESSAGE_ID = "message-id"
# printable ASCII, no encoded word (=?…?=) to decode
_PLAIN_TEXT = re.compile(r"(?!.*=\?)[ -~]*\Z")
# `local@domain`, or `Display Name <local@domain>` with a name of letters, digits, spaces and
# `'-` (and `.` when quoted, one space apart, none at the ends: the parse fails on some unquoted
# dots and trims a quoted name): no comment, group, route, escape or encoded word
_ADDR = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+"
_PLAIN_ADDRESS = re.compile(
    rf"[ \t]*(?:{_ADDR}|(?:\"(?:[A-Za-z0-9.'-]+(?: [A-Za-z0-9.'-]+)*)?\"|[A-Za-z0-9][A-Za-z0-9 '-]*)?[ \t]*<{_ADDR}>)[ \t]*\Z"
)
_PLAIN_MESSAGE_ID = re.compile(rf"[ \t]*<{_ADDR}>[ \t]*\Z")
# `Name =?utf-8?q?…?= <local@domain>`: words and RFC 2047 encoded words, then the address
_ENCODED_WORD = r"=\?[A-Za-z0-9_-]+\?[QqBb]\?[!->@-~]*\?="
_NAME_WORD = rf"(?:{_ENCODED_WORD}|[A-Za-z0-9'-]+)"
_ENCODED_ADDRESS = re.compile(
    rf"[ \t]*(?P<name>{_NAME_WORD}(?:[ \t]+{_NAME_WORD})*)[ \t]*<(?P<addr>{_ADDR})>[ \t]*\Z"
)
_Q_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")
# what makes policy.default quote a display name when it writes the address again
_NAME_SPECIALS = frozenset('()<>@,:;."[]\\')


def _decoded_word(word: str) -> str | None:
    """One RFC 2047 encoded word's text, or None where the email package's own reading is
    needed (a stray `=`, bad base64, an unknown charset, bytes the charset does not hold)."""
    _, charset, encoding, text, _ = word.split("?")
    try:
        if encoding in "Bb":
            raw = base64.b64decode(text, validate=True)
        else:
            data = text.replace("_", " ").encode("ascii")
            if data.count(b"=") != len(_Q_ESCAPE.findall(data)):
                return None
            raw = _Q_ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), data)
        return raw.decode(charset)
    except (ValueError, LookupError):  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None


def _encoded_address(value: str) -> str | None:
    """`Name <address>` as policy.default writes it again once its encoded words are decoded,
    or None. Its parse keeps one space between any two words, encoded or not (RFC 2047 would
    drop it between two encoded words; what matters here is reading as before)."""
    m = _ENCODED_ADDRESS.match(value)
    if m is None:
        return None
    words = [_decoded_word(w) if w.startswith("=?") else w for w in m["name"].split()]
    if None in words:
        return None
    name = " ".join(w for w in words if w is not None)
    if not name.strip() or name != name.strip() or "  " in name:
        return None
    if not _NAME_SPECIALS.isdisjoint(name) or any(c < " " or "\x7f" <= c <= "\x9f" for c in name):
        return None
    return f"{name} <{m['addr']}>"


def _plain(name: str, value: str) -> str | None:
    """`value` itself when the header reads the same unparsed (see `_AS_TEXT`), else None."""
    key = name.lower()
    if key in _AS_TEXT:
        return value if _PLAIN_TEXT.match(value) else None
    if key in _ADDRESSES:
        if _PLAIN_ADDRESS.match(value):
            return value
        return _encoded_address(value) if "=?" in value else None
    if key == _MESSAGE_ID:
        return value if _PLAIN_MESSAGE_ID.match(value) else None
    if key == "date" and _PLAIN_TEXT.match(value):
        # DateHeader's own text: the date formatted again, or the value when it is no date
        if not value:
            return ""
        try:
            return format_datetime(parsedate_to_datetime(value))
        except ValueError:
            return value
        except Exception:  # any other failure is left to the parse, which fails the same way
            return None
    return None


class _ParseOncePolicy(EmailPolicy):
    """policy.default, except that a header is parsed once, not on every read, and a header
    read only as text is not parsed at all when its plain form reads the same (`_plain`).

    The email package parses a header again each time it is read; Content-Type alone is read
    about eight times per message (body lookup, parts, charset), most of a message's cost.
    Parsed headers are immutable, so equal raw headers can share one.
    """

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):
            return value
        unfolded = "".join(value.splitlines())
        plain = _plain(name, unfolded)
        return plain if plain is not None else _parsed_header(name, value)


PARSE_ONCE = _ParseOncePolicy()


class MessageRejected(ValueError):
    """A message that cannot be read as mail; `code` is the reject reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class MailOptions:
    max_message_bytes: int = DEFAULT_MAX_BYTES
    internal_domains: frozenset[str] = frozenset()


@dataclass
class MessageOutcome:
    records: list[RawRecord] = field(default_factory=list)
    rejects: list[ExtractReject] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)

    def add(self, other: MessageOutcome) -> None:
        self.records += other.records
        self.rejects += other.rejects
        self.skipped.update(other.skipped)


def _text(value: Any) -> str:
    """A header or body as clean text: raw 8-bit bytes that slipped through become real letters."""
    text = str(value or "")
    if any("\udc80" <= c <= "\udcff" for c in text):
        raw = text.encode("utf-8", "surrogateescape")
        for cs in FALLBACK_CHARSETS:
            try:
                return raw.decode(cs)
            except UnicodeDecodeError:
                continue
    return text.replace("\x00", "")


class _HtmlText(HTMLParser):
    """HTML to text: blocks and rows on their own lines, table cells tab-separated."""

    BLOCK = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "table", "dt", "dd"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in {"script", "style", "head"}:
            self.skip += 1
        elif tag in self.BLOCK:
            self.out.append("\n")
        elif tag in {"td", "th"}:
            self.out.append("\t")

    def handle_endtag(self, tag: str) -> None:
        if tag in {"script", "style", "head"}:
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data)


def html_to_text(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html)
    parser.close()
    lines = (re.sub(r"[ \xa0]+", " ", ln).strip(" ") for ln in "".join(parser.out).split("\n"))
    rows = [re.sub(r"^\t+|\t+$", "", re.sub(r"\t\s*\t+", "\t", ln)) for ln in lines]
    return "\n".join(r.replace("\t", ": ", 1) if r.count("\t") == 1 else r for r in rows if r)


def _decode_part(part: Message) -> str:
    """The text of a part in its declared charset; a charset that lies or is unknown is a reject."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return str(payload or "")
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset)
    except LookupError:
        raise MessageRejected("unknown_charset", f"unknown charset {charset!r}") from None
    except UnicodeDecodeError as exc:
        if charset.lower() in {"us-ascii", "ascii"}:
            try:  # undeclared 8-bit mail: UTF-8 is the one safe guess
                return payload.decode("utf-8")
            except UnicodeDecodeError:
                pass
        raise MessageRejected(
            "charset_mismatch", f"text is not valid {charset} (byte {exc.start})"
        ) from None


def _body(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    # line ends first: HTML text keeps the line structure, and no stray CR is left behind
    text = _decode_part(part).replace("\r\n", "\n").replace("\r", "\n")
    if part.get_content_subtype() == "html":
        text = html_to_text(text)
    return text.replace("\x00", "")[:MAX_BODY_CHARS]


def _body_or_empty(msg: EmailMessage) -> str:
    """The text of a message whose MIME structure is broken, as far as it can be read."""
    try:
        return _body(msg)
    except Exception:  # the email package fails in many ways on a broken structure
        return ""


def _vcards(msg: EmailMessage) -> list[str]:
    """The entries of every vCard attached or inlined, as text, in order."""
    out: list[str] = []
    for part in msg.walk():
        ctype = part.get_content_type()
        name = (part.get_filename() or "").lower()
        if ctype not in {"text/vcard", "text/x-vcard", "text/directory"} and not name.endswith(
            ".vcf"
        ):
            continue
        text = _decode_part(part)
        out += [m.group(0) for m in re.finditer(r"(?is)BEGIN:VCARD.*?END:VCARD", text)]
    return out


def _addresses(msg: EmailMessage, header: str) -> list[dict[str, str]]:
    values = [_text(v) for v in msg.get_all(header, [])]
    return [{"name": n, "email": a} for n, a in getaddresses(values) if a and "@" in a]


def _header(msg: Message, name: str) -> str:
    try:
        return _text(msg.get(name, "") or "").strip()
    except (ValueError, TypeError, IndexError, AttributeError):
        return ""


def skip_reason(msg: EmailMessage, body: str, opts: MailOptions) -> str | None:
    """Why a message carries no contact (bounce, auto-reply, no-reply, internal), or None."""
    ctype = msg.get_content_type()
    report = (msg.get_param("report-type") or "") if ctype == "multipart/report" else ""
    sender = _addresses(msg, "From")
    local, _, domain = (sender[0]["email"] if sender else "").lower().partition("@")
    if ctype == "multipart/report" or str(report).lower() == "delivery-status":
        return "bounce"
    if local.startswith(("mailer-daemon", "postmaster")):
        return "bounce"
    auto = _header(msg, "Auto-Submitted").lower()
    precedence = _header(msg, "Precedence").lower()
    if (auto and auto != "no") or precedence in {"bulk", "junk", "auto_reply", "list"}:
        return "auto_reply"
    if _header(msg, "X-Autoreply") or _header(msg, "X-Autorespond"):
        return "auto_reply"
    if _AUTO_SUBJECT.match(_header(msg, "Subject")):
        return "auto_reply"
    if _FORM_EMAIL_LINE.search(body):
        return None  # a notification: the submitter is in the body, not the sender
    if _NOREPLY.match(local):
        return "no_reply"
    if domain and any(domain == d or domain.endswith("." + d) for d in opts.internal_domains):
        return "internal_sender"
    return None


def _received_at(date_header: str, fallback: datetime) -> datetime:
    try:
        dt = parsedate_to_datetime(date_header)
    except (TypeError, ValueError, IndexError):
        return fallback
    if dt is None:
        return fallback
    return dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)


def message_payload(msg: EmailMessage, body: str) -> dict[str, Any]:
    """A message's headers and text; the sender's fields stay as the mail gave them."""
    return {
        "message_id": _header(msg, "Message-ID"),
        "date": _header(msg, "Date"),
        "from": _addresses(msg, "From"),
        "reply_to": _addresses(msg, "Reply-To"),
        "subject": _header(msg, "Subject"),
        "body": body,
    }


def _defects(msg: Message) -> list[str]:
    found: list[MessageDefect] = []
    for part in msg.walk():
        found += list(part.defects)
    return [type(d).__name__ for d in found]


def read_message(
    source: str,
    raw: bytes,
    fallback: datetime,
    opts: MailOptions,
    *,
    key: str | None = None,
    size: int | None = None,
) -> MessageOutcome:
    """One message → its records, or a reject, or a skip. Never raises on bad mail.

    `key` names the message when it has no Message-ID (an IMAP UID, a file name); without it
    the content hash does. `size` is the full size when `raw` holds only the headers.
    """
    out = MessageOutcome()
    fallback_id = key or f"sha256:{content_hash(raw)[:32]}"
    full_size = size if size is not None else len(raw)
    try:
        msg = email.message_from_bytes(raw, policy=PARSE_ONCE)
        assert isinstance(msg, EmailMessage)
        mid = _header(msg, "Message-ID").strip() or fallback_id
        if full_size > opts.max_message_bytes:
            raise MessageRejected(
                "oversized", f"message is {full_size} bytes, limit {opts.max_message_bytes}"
            )
        broken = sorted({d for d in _defects(msg) if d in _BROKEN_MIME})
        # A broken body costs the body, not the sender: with a From or Reply-To that parses,
        # the message is a record and its defects travel with it (the contact's issues).
        if broken and not (_addresses(msg, "From") or _addresses(msg, "Reply-To")):
            raise MessageRejected("malformed_mime", ", ".join(broken))
        body = _body(msg) if not broken else _body_or_empty(msg)
        reason = skip_reason(msg, body, opts)
        if reason:
            out.skipped[reason] += 1
            return out
        payload = message_payload(msg, body)
        if broken:
            payload["mime_defects"] = broken
        if not payload["from"] and not payload["reply_to"] and not body.strip():
            raise MessageRejected("malformed_mime", "no sender and no text: not a readable mail")
        when = _received_at(payload["date"], fallback)
        out.records.append(RawRecord(source, "email", mid, when, payload))
        for i, card in enumerate(_vcards(msg) if not broken else [], start=1):
            vpayload = {k: payload[k] for k in ("message_id", "date", "from", "subject")}
            vpayload |= {"vcard": card, "vcard_index": i}
            out.records.append(RawRecord(source, "email", f"{mid}#vcard{i}", when, vpayload))
    except MessageRejected as exc:
        rid = locals().get("mid") or fallback_id
        out.rejects.append(ExtractReject(source, str(rid), exc.code, str(exc), _preview(raw)))
    except Exception as exc:  # the email package has many ways to fail on hostile input
        rid = locals().get("mid") or fallback_id
        msg_text = f"{type(exc).__name__}: {exc}"[:500]
        out.rejects.append(
            ExtractReject(source, str(rid), "malformed_mime", msg_text, _preview(raw))
        )
    return out


def _preview(raw: bytes) -> str:
    return raw[:4000].decode("utf-8", "replace").replace("\x00", "")


def _messages(path: str) -> Iterator[tuple[str, bytes]]:
    if os.path.isdir(path) and os.path.isdir(os.path.join(path, "cur")):
        md = mailbox.Maildir(path, factory=None, create=False)
        for key in sorted(md.keys()):
            yield f"maildir:{key}", md.get_bytes(key)
    elif os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            if name.lower().endswith(".eml"):
                with open(os.path.join(path, name), "rb") as fh:
                    yield f"eml:{name}", fh.read()
    else:
        mb = mailbox.mbox(path, create=False)
        for key in mb.keys():
            yield f"mbox:{key}", mb.get_bytes(key)


def batch_of(outcomes: Iterable[MessageOutcome], cursor: dict[str, Any]) -> RawBatch:
    total = MessageOutcome()
    for o in outcomes:
        total.add(o)
    return RawBatch(total.records, cursor, total.rejects, dict(total.skipped))


# Messages per batch of a mail file or folder: a big mbox is landed in parts, memory stays flat.
MESSAGES_PER_BATCH = 20_000


def iter_email_files(
    source: str,
    path: str,
    cursor: dict[str, Any] | None,
    opts: MailOptions | None = None,
    now: datetime | None = None,
    landed: Mapping[str, str] | None = None,
    batch_messages: int = MESSAGES_PER_BATCH,
) -> Iterator[RawBatch]:
    """Batches of up to `batch_messages` messages per changed mail file or folder; each message
    keyed by its Message-ID.

    Only a file's last batch carries its new fingerprint (as for sheets): a run stopped halfway
    reads the file again next time, and what was landed already is not landed twice.
    A message is dated by its Date header; one without a usable Date by when the content it came
    in was first landed (`landed`: content fingerprint → ISO time; default: the cursor's), else
    `now`, which the cursor then keeps. Never the file's modification time, so a copy, clone or
    touch moves no date (as for sheets and vCards).
    """
    opts = opts or MailOptions()
    firsts: dict[str, str] = dict((cursor or {}).get("first_landed", {}))
    if landed is not None:
        firsts = dict(landed)
    stamp = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    before: dict[str, Any] = {"files": dict((cursor or {}).get("files", {}))}
    for mpath, fp, after in iter_changed_files([path], cursor):
        fallback = datetime.fromisoformat(firsts.get(fp, stamp.isoformat()))
        outcomes = (read_message(source, raw, fallback, opts) for _k, raw in _messages(mpath))
        held: RawBatch | None = None
        while part := list(islice(outcomes, batch_messages)):
            if held is not None:
                yield with_first_landing(held, firsts, fp, fallback)
            held = batch_of(part, before)
        last = batch_of([], after) if held is None else replace(held, cursor=after)
        yield with_first_landing(last, firsts, fp, fallback)
        before = after
