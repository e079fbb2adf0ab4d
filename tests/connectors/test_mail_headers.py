"""Headers read without the email package's parse read exactly as its parse gives them."""

from __future__ import annotations

import mailbox
from datetime import UTC, datetime
from email.header import Header
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import connectors.email as mail
from connectors.email import MailOptions, read_message
from tests.connectors.conftest import FIXTURES

ROOT = Path(__file__).resolve().parents[2]
OPTS = MailOptions(internal_domains=frozenset({"ourcompany.com"}))
FALLBACK = datetime(2026, 1, 1, tzinfo=UTC)

FROM = [
    "John Smith <john@x.com>",
    '"Smith, John" <j@x.com>',
    "J. Smith <j@x.com>",
    '"J. Smith" <j@x.com>',
    "john@x.com",
    "  john@x.com  ",
    "John  Smith <j@x.com>",
    "O'Brien <o@x.com>",
    '"" <j@x.com>',
    "<j@x.com>",
    "j@x.com (John Smith)",
    "John Smith <j@x.com>, Other <o@y.com>",
    "undisclosed-recipients:;",
    "Group: a@x.com, b@y.com;",
    "Name <JOHN@X.COM>",
    "Name <john@x.com> trailing",
    "john@localhost",
    '"Quoted \\"x\\"" <j@x.com>',
    "=?utf-8?q?J=C3=BCrgen?= M <j@x.com>",
    "=?utf-8?q?J=C3=BCrgen?= =?utf-8?q?_Ayd=C4=B1n?= <j@x.com>",
    "=?utf-8?q?a?=  =?utf-8?q?b?= <j@x.com>",
    "=?utf-8?q?a?= b =?utf-8?q?c?= <j@x.com>",
    "=?utf-8?b?ScWfxLFr?= <s@x.com>",
    "=?iso-8859-9?q?=DE=FCkr=FC?= <s@x.com>",
    "=?UTF-8?Q?M=C3=BCller?= <m@x.com>",
    "Klaus =?utf-8?q?Ayd=C4=B1n?= <k@x.com>",
    "=?utf-8?q?Smith=2C_John?= <j@x.com>",
    "=?utf-8?q?Dr=2E_Who?= <j@x.com>",
    "=?utf-8?q?bad=ZZ?= <j@x.com>",
    "=?utf-8?q?a=?= <j@x.com>",
    "=?utf-8?b?!!!?= <j@x.com>",
    "=?utf-8?b?ScWfxLF?= <j@x.com>",
    "=?unknown-cs?q?x?= <j@x.com>",
    "=?utf-8?q?=FF?= <j@x.com>",
    "=?utf-8?q?_x_?= <j@x.com>",
    "=?utf-8?q?x__y?= <j@x.com>",
    "=?utf-8?q?=09tab?= <j@x.com>",
    "=?utf-8?q?a?=b <j@x.com>",
    "=?utf-8*en?q?a?= <j@x.com>",
    "x=?utf-8?q?a?= <j@x.com>",
]
SUBJECT = [
    "Hello",
    "  spaced   out  ",
    "=?utf-8?q?Gr=C3=BC=C3=9Fe?=",
    "Re: [x] = y ?",
    "a=?b",
    "tab\there",
    "",
]
DATE = [
    "Thu, 01 Oct 2026 00:00:00 +0000",
    "Thu, 1 Oct 2026 09:05:00 +0100",
    "1 Oct 2026 00:00 -0000",
    "Thu, 01 Oct 2026 25:00:00 +0000",
    "garbage",
    "",
    "Thu, 01 Oct 2026 00:00:00 GMT",
]
MESSAGE_ID = [
    "<a@b.c>",
    "  <a@b.example.com>  ",
    "no-brackets@x",
    "<a b@c>",
    '<"q"@x.com>',
    "<a@b>",
    "",
]


def _message(sender: str, subject: str, date: str, mid: str) -> bytes:
    head = (
        f"From: {sender}\nSubject: {subject}\nDate: {date}\nMessage-ID: {mid}\nReply-To: {sender}\n"
    )
    return (head + "Content-Type: text/plain; charset=utf-8\n\nHello\n").encode()


def _fields(raw: bytes) -> tuple[object, ...]:
    import email

    msg = email.message_from_bytes(raw, policy=mail.PARSE_ONCE)
    return (
        mail._addresses(msg, "From"),  # type: ignore[arg-type]
        mail._addresses(msg, "Reply-To"),  # type: ignore[arg-type]
        mail._header(msg, "Subject"),
        mail._header(msg, "Date"),
        mail._header(msg, "Message-ID"),
    )


def _careful(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mail, "_plain", lambda name, value: None)


@pytest.mark.parametrize("sender", FROM)
def test_an_address_reads_as_the_parse_gives_it(
    sender: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    raws = [_message(sender, s, d, m) for s, d, m in zip(SUBJECT, DATE, MESSAGE_ID, strict=True)]
    fast = [_fields(r) for r in raws]
    _careful(monkeypatch)
    assert fast == [_fields(r) for r in raws]


def test_a_folded_header_reads_as_the_parse_gives_it(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = b"From: John\n Smith <j@x.com>\nSubject: a long\n\tsubject\nDate: Thu, 01 Oct\n 2026 00:00:00 +0000\n\nx\n"
    fast = _fields(raw)
    _careful(monkeypatch)
    assert fast == _fields(raw)


def test_the_common_forms_skip_the_parse() -> None:
    """The forms of most mail take the plain reading (else the tests above prove nothing)."""
    assert mail._plain("From", "John Smith <john@x.com>") == "John Smith <john@x.com>"
    assert mail._plain("From", "Klaus =?utf-8?q?Ayd=C4=B1n?= <k@x.com>") == "Klaus Aydın <k@x.com>"
    assert mail._plain("Message-ID", "<a@b.c>") == "<a@b.c>"
    assert mail._plain("Subject", "Hello") == "Hello"
    assert (
        mail._plain("Date", "Thu, 1 Oct 2026 09:05:00 +0100") == "Thu, 01 Oct 2026 09:05:00 +0100"
    )
    assert mail._plain("From", "j@x.com (John Smith)") is None
    assert mail._plain("Content-Type", "text/plain") is None


def _corpus() -> list[bytes]:
    raws = [p.read_bytes() for p in sorted((FIXTURES / "mail").glob("*.eml"))]
    box = mailbox.mbox(str(ROOT / "examples" / "sources" / "sales_inbox.mbox"), create=False)
    return raws + [box.get_bytes(k) for k in box.keys()]


def test_every_committed_message_reads_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    raws = _corpus()
    assert len(raws) > 16
    fast = [read_message("inbox", r, FALLBACK, OPTS) for r in raws]
    _careful(monkeypatch)
    assert fast == [read_message("inbox", r, FALLBACK, OPTS) for r in raws]


_CHARSETS = st.sampled_from(["utf-8", "UTF-8", "iso-8859-9", "latin-1"])
_TEXT = st.text("abcXYZ019 .'-,\"()<>@:;=?_\tüışÇ\\", min_size=1, max_size=6)
_PLAIN_WORD = st.text("abcXYZ019'-.", min_size=1, max_size=6)
_QUOTED = st.text("abcXYZ019'-. ,", max_size=6).map(lambda t: f'"{t}"')


@st.composite
def _encoded(draw: st.DrawFn) -> str:
    text, charset = draw(_TEXT), draw(_CHARSETS)
    try:
        word = Header(text, charset, maxlinelen=1000).encode()
    except UnicodeEncodeError:
        return "x"
    return word.replace("?q?", "?Q?") if draw(st.booleans()) else word


_SENDERS = st.builds(
    lambda words, sep, gap, addr: f"{sep.join(words)}{gap}<{addr}>" if words else addr,
    st.lists(st.one_of(_encoded(), _PLAIN_WORD, _QUOTED), max_size=3),
    st.sampled_from([" ", "  ", "\t"]),
    st.sampled_from([" ", "", "  "]),
    st.sampled_from(["j@x.com", "a.b@c-d.org", "X@Y.ZZ"]),
)


@settings(max_examples=300, deadline=None)
@given(sender=_SENDERS)
def test_any_sender_reads_as_the_parse_gives_it(sender: str) -> None:
    raw = f"From: {sender}\nSubject: x\n\nbody\n".encode()

    def read() -> object:
        try:
            return _fields(raw)[0]
        except Exception as exc:  # the parse fails on some of these; it must fail the same way
            return type(exc).__name__

    fast = read()
    plain = mail._plain
    try:
        mail._plain = lambda name, value: None
        assert fast == read()
    finally:
        mail._plain = plain
