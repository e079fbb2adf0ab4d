"""The sheet reader and the mail parser on any bytes: never a crash; every row or message ends
landed, rejected with a reason, or skipped with a reason."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connectors.base import ExtractReject
from connectors.email import MailOptions, read_message
from connectors.spreadsheet import read_table
from connectors.webform import _top_level_items
from transforms.fields import header_scorer

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCORE = header_scorer({})


def _has_reason(rejects: Sequence[ExtractReject]) -> bool:
    return all(j.code and j.message and j.source == "s" for j in rejects)


@SETTINGS
@given(st.binary(max_size=4000), st.booleans())
def test_random_bytes_never_crash_the_sheet_reader(data: bytes, as_xlsx: bool) -> None:
    if as_xlsx:
        data = b"PK\x03\x04" + data  # what a workbook starts with
    records, rejects = read_table("s", "f", data, NOW, None, SCORE, as_xlsx)
    assert _has_reason(rejects)
    if as_xlsx:
        assert records == [] and [j.code for j in rejects] == ["unreadable_file"]


# Cell text with everything CSV has to escape: delimiters, quotes, newlines, formulas, markup.
CELL = st.text(
    alphabet=st.one_of(
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00\r"),
        st.sampled_from(list(',;\t|"\n=+-@<>')),
    ),
    max_size=30,
)


@SETTINGS
@given(
    st.lists(st.tuples(CELL, CELL, CELL), min_size=1, max_size=12),
    st.sampled_from([",", ";", "\t", "|"]),
    st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
)
# tabs and newlines inside quoted cells once made the sniffer take the tab for the delimiter
@example([("", "", "\t0"), ("", "\t\n", "\t\n")], ",", "utf-8")
def test_every_written_row_is_read_back_unchanged(
    rows: list[tuple[str, str, str]], delimiter: str, encoding: str
) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=delimiter, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerow(["Name", "Email", "Phone"])
    writer.writerows(rows)
    records, rejects = read_table(
        "s", "f.csv", buf.getvalue().encode(encoding), NOW, None, SCORE, False
    )
    assert rejects == []
    kept = [r for r in rows if any(c for c in r)]  # a blank row is no record
    # every row is one record holding its cell text unchanged: nothing evaluated, nothing trimmed
    assert [tuple(r.payload.values()) for r in records] == kept
    assert [list(r.payload) for r in records] == [["Name", "Email", "Phone"]] * len(kept)
    assert len({r.source_record_id for r in records}) == len(records)


HEADER_NAMES = st.sampled_from(
    ["From", "To", "Reply-To", "Subject", "Date", "Message-ID", "Content-Type", "MIME-Version"]
    + ["Content-Transfer-Encoding", "Content-Disposition", "Auto-Submitted", "X-Spam"]
)
HEADER_VALUES = st.one_of(
    st.text(max_size=60).map(lambda t: t.replace("\n", " ").replace("\r", " ")),
    st.sampled_from(
        [
            "multipart/mixed; boundary=XYZ",
            "multipart/alternative; boundary=",
            'text/plain; charset="x-unknown"',
            "text/html; charset=utf-8",
            "text/vcard",
            "base64",
            "quoted-printable",
            "=?utf-8?b?SXPEsWs=?= <isik@example.com>",
            "=?broken?q?=ZZ?=",
            "Ayşe <ayse@example.com>",
            "<>",
            "auto-replied",
        ]
    ),
)
BODIES = st.one_of(
    st.binary(max_size=600),
    st.text(max_size=400).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.just(b"--XYZ\r\nContent-Type: text/plain\r\n\r\nName: A\r\n--XYZ--\r\n"),
    st.just(b"--XYZ\r\nContent-Type: text/vcard\r\n\r\nBEGIN:VCARD\r\nFN:A\r\n"),
)


@SETTINGS
@given(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=8), BODIES)
def test_random_mime_is_landed_rejected_or_skipped_never_lost(
    headers: list[tuple[str, str]], body: bytes
) -> None:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers).encode("utf-8", "surrogatepass")
    out = read_message("s", head + b"\r\n" + body, NOW, MailOptions())
    assert _has_reason(out.rejects)
    assert len(out.records) + len(out.rejects) + sum(out.skipped.values()) >= 1
    assert all(r.source_record_id for r in out.records)
    assert all(reason for reason in out.skipped)


@SETTINGS
@given(st.binary(max_size=3000))
def test_random_bytes_as_mail_never_crash(data: bytes) -> None:
    out = read_message("s", data, NOW, MailOptions())
    assert _has_reason(out.rejects)
    assert len(out.records) + len(out.rejects) + sum(out.skipped.values()) >= 1


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=12,
)


@SETTINGS
@given(
    st.lists(JSON_VALUES, max_size=6),
    st.sampled_from(["submissions", "items", "data", None]),
    st.booleans(),
)
def test_an_export_cut_into_submissions_without_parsing_gives_each_one_back(
    subs: list[object], key: str | None, ascii_only: bool
) -> None:
    doc: object = subs if key is None else {"meta": {"submissions": [0]}, key: subs}
    parts = _top_level_items(json.dumps(doc, ensure_ascii=ascii_only))
    assert parts is not None
    assert [json.loads(p) for p in parts] == subs
