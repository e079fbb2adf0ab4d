"""How sheet rows are dated: their own date column, else the config's date, else the time the
file's content was first landed — never the file's modification time."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors.spreadsheet import RowDating, iter_spreadsheet
from flows.settings import SpreadsheetSource
from flows.sources import row_dating
from transforms.fields import header_scorer

SCORE = header_scorer()
NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
LATER = datetime(2027, 3, 1, tzinfo=UTC)


def _source(path: Path, **kw: object) -> SpreadsheetSource:
    return SpreadsheetSource.model_validate(
        {"name": "sheet", "kind": "spreadsheet", "path": str(path), **kw}
    )


def _read(
    path: Path, dating: RowDating, cursor: dict | None = None, now: datetime = NOW
) -> tuple[list[datetime], dict]:
    batches = list(
        iter_spreadsheet("sheet", str(path), cursor, score=SCORE, dating=dating, now=now)
    )
    return [r.received_at for b in batches for r in b.records], batches[
        -1
    ].cursor if batches else {}


def _old(path: Path, when: str = "2020-01-02 03:04:05") -> None:
    ts = datetime.fromisoformat(when).replace(tzinfo=UTC).timestamp()
    os.utime(path, (ts, ts))


@pytest.mark.parametrize(
    ("header", "cell", "expected"),
    [
        ("Created at", "2026-10-05T14:02:11Z", datetime(2026, 10, 5, 14, 2, 11, tzinfo=UTC)),
        (
            "Submission date",
            "2026-10-05 16:02:11+02:00",
            datetime(2026, 10, 5, 14, 2, 11, tzinfo=UTC),
        ),
        ("Kayıt Tarihi", "05.10.2026 14:02", datetime(2026, 10, 5, 14, 2, tzinfo=UTC)),
        ("Kayıt Tarihi", "5 Ekim 2026", datetime(2026, 10, 5, tzinfo=UTC)),
        ("Erstellt am", "05.10.2026", datetime(2026, 10, 5, tzinfo=UTC)),
        ("Datum", "5. Oktober 2026", datetime(2026, 10, 5, tzinfo=UTC)),
        ("Signed up", "October 5, 2026", datetime(2026, 10, 5, tzinfo=UTC)),
        ("Timestamp", "05/10/2026", datetime(2026, 10, 5, tzinfo=UTC)),
    ],
)
def test_a_row_is_dated_by_its_own_date_column(
    tmp_path: Path, header: str, cell: str, expected: datetime
) -> None:
    path = tmp_path / "leads.csv"
    path.write_text(f"Name;E-Mail;{header}\nAda Demir;ada@example.com;{cell}\n", encoding="utf-8")
    _old(path)
    dates, _ = _read(path, row_dating(_source(path)))
    assert dates == [expected]


def test_a_workbook_date_cell_dates_its_row(tmp_path: Path) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    ws.append(["Name", "E-Mail", "Erstellt am"])
    ws.append(["Jürgen Weiß", "j@weiss.de", datetime(2026, 10, 3, 11, 0)])
    ws.append(["Hans Müller", "h@mueller.de", None])  # no date: the file's first landing
    path = tmp_path / "leads.xlsx"
    wb.save(path)
    dates, _ = _read(path, row_dating(_source(path)))
    assert dates == [datetime(2026, 10, 3, 11, 0, tzinfo=UTC), NOW.replace(microsecond=0)]


def test_the_config_gives_a_date_or_names_the_column(tmp_path: Path) -> None:
    path = tmp_path / "fair.csv"
    path.write_text("Ad Soyad;E-posta;Gün\nAda;ada@example.com;03.10.2026\nCan;can@example.com;\n")
    _old(path)
    fixed = row_dating(_source(path, received_at=datetime(2026, 10, 14).date()))
    assert _read(path, fixed)[0] == [datetime(2026, 10, 14, tzinfo=UTC)] * 2
    named = row_dating(_source(path, received_at="Gün"))
    assert _read(path, named)[0] == [datetime(2026, 10, 3, tzinfo=UTC), NOW]
    # a column map that sends a column to received_at names it too
    mapped = row_dating(_source(path, columns={"Gün": "received_at"}))
    assert _read(path, mapped)[0] == [datetime(2026, 10, 3, tzinfo=UTC), NOW]
    # the fixed date also dates rows whose date column is empty
    both = row_dating(_source(path, received_at="2026-10-14", columns={"Gün": "received_at"}))
    assert _read(path, both)[0] == [
        datetime(2026, 10, 3, tzinfo=UTC),
        datetime(2026, 10, 14, tzinfo=UTC),
    ]


def test_undated_rows_keep_their_first_landing_through_copy_and_touch(tmp_path: Path) -> None:
    path = tmp_path / "a" / "fair.csv"
    path.parent.mkdir()
    path.write_text("Ad Soyad;E-posta\nAda;ada@example.com\n")
    _old(path)
    dating = row_dating(_source(path))
    first, cursor = _read(path, dating)
    assert first == [NOW]  # not 2020: the modification time dates nothing
    # touched: the content is the same, nothing is read again
    _old(path, "2026-09-15 00:00:00")
    assert _read(path, dating, cursor, LATER) == ([], {})
    # copied to another folder (another clone of the same project): read, and dated as before
    other = tmp_path / "b" / "fair.csv"
    other.parent.mkdir()
    shutil.copy(path, other)
    _old(other, "2026-09-15 00:00:00")
    again, _ = _read(other, row_dating(_source(other)), cursor, LATER)
    assert again == [NOW]
    # a changed file is new content: its first landing is now
    other.write_text("Ad Soyad;E-posta\nAda;ada@example.com\nCan;can@example.com\n")
    _old(other)
    changed, _ = _read(other, row_dating(_source(other)), cursor, LATER)
    assert changed == [LATER, LATER]


def test_a_change_of_the_config_that_shapes_rows_reads_the_file_again(tmp_path: Path) -> None:
    path = tmp_path / "fair.csv"
    path.write_text("Kim;Posta\nAda;ada@example.com\n")
    _old(path)
    plain = row_dating(_source(path))
    recs, cursor = _read(path, plain)
    assert recs == []  # no header names a person: a no_header reject
    again, _ = _read(path, plain, cursor, LATER)
    assert again == []
    mapped = _source(path, columns={"Kim": "full_name", "Posta": "email"})
    batches = list(
        iter_spreadsheet(
            "sheet",
            str(path),
            cursor,
            score=header_scorer(mapped.columns),
            dating=row_dating(mapped),
            now=LATER,
        )
    )
    # read again under the new map; dated by the content's first landing, not by the fix
    assert [r.received_at for b in batches for r in b.records] == [NOW]
