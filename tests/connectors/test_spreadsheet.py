"""The committed sheet corpus, file by file: encodings, delimiters, broken rows, exports, workbooks."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.spreadsheet import (
    TablePart,
    csv_rows,
    decode_text,
    iter_spreadsheet,
    iter_table,
    read_table,
)
from tests.connectors.conftest import FIXTURES, land_source, rows_of
from transforms.fields import header_scorer, map_fields
from warehouse.schema import raw_contacts, rejects

SHEETS = FIXTURES / "sheets"
SCORE = header_scorer({})
NOW = datetime(2026, 12, 1, tzinfo=UTC)

TURKISH = [
    {
        "Ad Soyad": "Ayşe Yılmaz",
        "E-posta": "ayse@example.com.tr",
        "Telefon": "0532 111 22 33",
        "Firma": "Yılmaz Tekstil",
        "Şehir": "İstanbul",
    },
    {
        "Ad Soyad": "Çağrı Öztürk",
        "E-posta": "cagri@example.com.tr",
        "Telefon": "0533 444 55 66",
        "Firma": "Öztürk Gıda",
        "Şehir": "İzmir",
    },
]

# file → (encoding found, delimiter found, the payloads of the rows that land)
CSV: dict[str, tuple[str, str, list[dict[str, Any]]]] = {
    "utf8_comma.csv": ("utf-8", ",", TURKISH),
    "utf8_bom_semicolon.csv": ("utf-8-sig", ";", TURKISH),
    "utf16_bom_tab.csv": ("utf-16", "\t", TURKISH),
    "cp1254_semicolon.csv": ("cp1254", ";", TURKISH),
    # ISO-8859-9 and Windows-1254 agree on every letter here
    "iso8859_9_tab.csv": ("cp1254", "\t", TURKISH),
    "cp1252_pipe.csv": (
        "cp1252",
        "|",
        [
            {
                "Prénom": "Hélène",
                "Nom": "Lefèvre",
                "Courriel": "helene@example.fr",
                "Téléphone": "+33 1 42 68 53 00",
                "Société": "Crème & Café",
            },
            {
                "Prénom": "José",
                "Nom": "Muñoz",
                "Courriel": "jose@example.es",
                "Téléphone": "+34 91 123 45 67",
                "Société": "Señor Diseño",
            },
        ],
    ),
    "quoted_newlines.csv": (
        "utf-8",
        ",",
        [
            {
                "name": "Ann Lee",
                "email": "ann@example.com",
                "message": "line one\nline two, with comma",
            },
            {"name": "Ben Ode", "email": "ben@example.com", "message": 'say "hi"'},
        ],
    ),
    "cr_only.csv": (
        "utf-8",
        ",",
        [
            {"name": "Cem Ak", "email": "cem@example.com"},
            {"name": "Dil Su", "email": "dil@example.com"},
        ],
    ),
    "nul_bytes.csv": (
        "utf-8",
        ",",
        [
            {"name": "Ela Kar", "email": "ela@example.com"},
            {"name": "Fat Er", "email": "fat@example.com"},
        ],
    ),
    "ragged.csv": (
        "utf-8",
        ",",
        [
            {"name": "Gaye Al", "email": "gaye@example.com", "phone": "0532 000 00 01"},
            {"name": "Jale Do", "email": "jale@example.com", "phone": "0532 000 00 03"},
        ],
    ),
    "empty.csv": ("utf-8", ",", []),
    # text that looks like a formula stays that text: nothing is evaluated or escaped
    "inert_text.csv": (
        "utf-8",
        ",",
        [
            {
                "name": "Kaan Ek",
                "email": "kaan@example.com",
                "phone": "+90 532 000 00 04",
                "notes": '=HYPERLINK("http://x")',
            },
            {"name": "Lale Fi", "email": "lale@example.com", "phone": "-", "notes": "@SUM(A1)"},
        ],
    ),
}

# exports of CRM and mail tools: what their headers mean once mapped
EXPORTS: dict[str, dict[str, str]] = {
    "google_contacts.csv": {
        "full_name": "Mia Wong",
        "first_name": "Mia",
        "last_name": "Wong",
        "email": "mia@wong.example.com",
        "phone": "+1 212 555 0100",
        "company": "Wong LLC",
        "job_title": "CEO",
        "street": "1 Main St",
        "postal_code": "10001",
        "birth_date": "1985-04-12",
    },
    "outlook.csv": {
        "first_name": "Nils",
        "last_name": "Berg",
        "company": "Berg AB",
        "job_title": "CTO",
        "street": "Storgatan 1",
        "city": "Stockholm",
        "postal_code": "11122",
        "country": "Sweden",
        "phone": "+46 8 123 456 78",
        "email": "nils@berg.example.se",
        "website": "berg.example.se",
        "birth_date": "1979-01-02",
    },
    "hubspot.csv": {
        "first_name": "Olga",
        "last_name": "Ivanova",
        "email": "olga@ivanova.example.com",
        "phone": "+1 617 555 0101",
        "company": "Ivanova Inc",
        "job_title": "VP",
        "street": "2 Elm St",
        "city": "Boston",
        "region": "MA",
        "postal_code": "02110",
        "country": "United States",
        "website": "ivanova.example.com",
    },
    "salesforce.csv": {
        "first_name": "Pia",
        "last_name": "Lund",
        "job_title": "Buyer",
        "company": "Lund AS",
        "email": "pia@lund.example.no",
        "phone": "+47 912 34 567",
        "street": "Gate 3",
        "city": "Oslo",
        "postal_code": "0150",
        "country": "Norway",
        "birth_date": "1990-06-30",
    },
    "mailchimp.csv": {
        "email": "quinn@example.com",
        "first_name": "Quinn",
        "last_name": "Ray",
        "street": "3 Oak Rd  Austin  TX  73301  US",
        "phone": "+1 512 555 0102",
        "birth_date": "05/17",
        "received_at": "2026-01-01 10:00:00",  # OPTIN_TIME: the audience's own date column
    },
    "full_name_only.csv": {"full_name": "Rosa Sanz", "email": "rosa@sanz.example.es"},
}


def read(name: str, **kw: Any) -> tuple[list[Any], list[Any]]:
    return read_path(SHEETS / name, **kw)


def read_path(path: Path, **kw: Any) -> tuple[list[Any], list[Any]]:
    batches = list(iter_spreadsheet("sheets", str(path), None, score=SCORE, **kw))
    return [r for b in batches for r in b.records], [j for b in batches for j in b.rejects]


def test_the_tables_cover_the_whole_corpus() -> None:
    names = {p.name for p in SHEETS.iterdir()}
    assert names == set(CSV) | set(EXPORTS) | {"contacts.xlsx"}


@pytest.mark.parametrize("name", sorted(CSV))
def test_a_csv_is_decoded_split_and_lands_its_rows(name: str) -> None:
    encoding, delimiter, payloads = CSV[name]
    data = (SHEETS / name).read_bytes()
    assert decode_text(data)[1] == encoding
    rows, enc = csv_rows(data)
    assert enc == encoding and rows.dialect.delimiter == delimiter  # type: ignore[attr-defined]
    records, found_rejects = read(name)
    assert [r.payload for r in records] == payloads
    assert all(r.source_record_id.startswith(f"{name}:csv:") for r in records)
    assert len({r.source_record_id for r in records}) == len(records)
    if name != "ragged.csv":
        assert found_rejects == []


def test_ragged_rows_are_rejects_with_their_line_and_the_rest_lands() -> None:
    records, found = read("ragged.csv")
    assert len(records) == 2
    assert [(j.source_record_id, j.code, j.message) for j in found] == [
        ("ragged.csv:csv:line3", "ragged_row", "row has 5 cells, the header has 3"),
        ("ragged.csv:csv:line4", "ragged_row", "row has 2 cells, the header has 3"),
    ]
    assert "EXTRA" in found[0].raw and "irem@example.com" in found[1].raw


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_export_headers_map_to_contact_fields(name: str) -> None:
    records, found = read(name)
    assert found == []
    [record] = records
    assert map_fields(record.payload) == EXPORTS[name]


def test_a_workbook_finds_its_header_under_title_rows_and_fills_merged_cells() -> None:
    records, found = read("contacts.xlsx")
    assert [r.payload for r in records] == [
        {
            "Vorname": "Uwe",
            "Nachname": "Haas",
            "E-Mail": "uwe@haas.example.de",
            "Firma": "Haas GmbH",
            "Geburtsdatum": "1970-05-01",  # a date cell, as an ISO date
            "Kürzel": "UH",  # a formula: the value Excel cached, never evaluated here
        },
        {
            "Vorname": "Vera",
            "Nachname": "Imhof",
            "E-Mail": "vera@imhof.example.de",
            "Firma": "Imhof KG",
            "Geburtsdatum": "1982-11-23",
            "Kürzel": "=cmd|' /C calc'!A0",  # text that only looks like a formula stays text
        },
        {
            "Vorname": "Willi",
            "Nachname": "Jung",
            "E-Mail": "willi@jung.example.de",
            "Firma": "Imhof KG",  # D6:D7 is merged: both rows carry its value
            "Geburtsdatum": None,
            "Kürzel": "+49 not a formula",
        },
    ]
    assert {r.source_record_id.rsplit(":", 1)[0] for r in records} == {"contacts.xlsx:Fair 2026"}
    # the sheet that names nobody is one clear reject; the other sheet landed anyway
    [reject] = found
    assert (reject.source_record_id, reject.code) == ("contacts.xlsx:Notes", "no_header")
    assert reject.message == (
        "no header row in the first 30 rows names an email, phone or name column"
    )


def test_only_the_named_sheets_are_read_and_a_missing_one_is_a_reject() -> None:
    records, found = read("contacts.xlsx", sheets=["Fair 2026", "Visitors"])
    assert len(records) == 3
    assert [(j.source_record_id, j.code, j.message) for j in found] == [
        ("contacts.xlsx:Visitors", "sheet_not_found", "no sheet named 'Visitors'")
    ]
    batches = list(
        iter_spreadsheet("sheets", str(SHEETS / "contacts.xlsx"), None, ["Visitors"], score=SCORE)
    )
    [w] = [w for b in batches for w in b.warnings]
    assert (w.file, w.code, w.message, w.loses_data) == (
        "contacts.xlsx",
        "sheet_not_found",
        "no sheet named 'Visitors'",
        False,
    )
    assert w.fix == "check the sheet names in source sheets sheets:"


def test_a_corrupt_workbook_is_one_reject_and_other_files_go_on(tmp_path: Path) -> None:
    shutil.copy(SHEETS / "utf8_comma.csv", tmp_path / "good.csv")
    (tmp_path / "broken.xlsx").write_bytes(b"PK\x03\x04 not really a zip")
    batches = list(iter_spreadsheet("sheets", str(tmp_path), None, score=SCORE))
    assert [len(b.records) for b in batches] == [0, 2]
    [reject] = batches[0].rejects
    assert (reject.source_record_id, reject.code) == ("broken.xlsx", "unreadable_file")
    assert reject.message.startswith("BadZipFile:")


def _cfg(tmp_path: Path, folder: Path) -> Path:
    cfg = tmp_path / "leadflow.yaml"
    cfg.write_text(
        f"warehouse: {{url: 'sqlite:///{tmp_path}/w.db'}}\n"
        f"sources:\n  - name: sheets\n    kind: spreadsheet\n    path: {folder}\n"
    )
    return cfg


def _land(cfg: Path) -> dict[str, int]:
    return land_source(cfg, "sheets")


def _count(cfg: Path, column: Any) -> int:
    return len(rows_of(cfg, column))


def test_the_corpus_lands_once_and_an_edited_row_lands_as_one_new_record(tmp_path: Path) -> None:
    folder = tmp_path / "sheets"
    shutil.copytree(SHEETS, folder)
    cfg = _cfg(tmp_path, folder)
    rows = sum(len(p) for _, _, p in CSV.values()) + len(EXPORTS) + 3
    first = _land(cfg)
    assert (first["landed"], first["rejected"], first["reconciled"]) == (rows, 3, 1)
    assert _count(cfg, raw_contacts.c.raw_id) == rows and _count(cfg, rejects.c.reject_id) == 3

    # nothing changed: every fingerprint matches and no file is read
    assert _land(cfg)["seen"] == 0

    edited = folder / "utf8_comma.csv"
    edited.write_bytes(edited.read_bytes().replace(b"0533 444 55 66", b"0533 444 55 77"))
    third = _land(cfg)
    assert (third["seen"], third["landed"], third["already_landed"]) == (2, 1, 1)
    assert _count(cfg, raw_contacts.c.raw_id) == rows + 1

    # a re-run after the edit, and touching a file without changing it, land nothing
    assert _land(cfg)["seen"] == 0
    edited.write_bytes(edited.read_bytes())
    assert _land(cfg)["landed"] == 0
    assert _count(cfg, raw_contacts.c.raw_id) == rows + 1 and _count(cfg, rejects.c.reject_id) == 3


def test_a_big_file_lands_in_chunks_and_only_its_last_moves_the_cursor(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text("name,email\n" + "".join(f"P {n},p{n}@example.com\n" for n in range(7)))
    old = {"files": {str(path): "an older fingerprint"}}
    batches = list(iter_spreadsheet("sheets", str(path), old, score=SCORE, chunk_rows=3))
    assert [len(b.records) for b in batches] == [3, 3, 1]
    # a run stopped after the first or second part reads the file again next time
    assert [b.cursor["files"] for b in batches[:2]] == [old["files"], old["files"]]
    assert batches[2].cursor["files"][str(path)] != "an older fingerprint"
    # every part is dated alike: when the content was first landed, kept from the first part on
    assert len({r.received_at for b in batches for r in b.records}) == 1
    assert batches[0].cursor["first_landed"] == batches[2].cursor["first_landed"]
    ids = [r.source_record_id for b in batches for r in b.records]
    assert len(set(ids)) == 7
    # the same rows read in one part get the same ids: landing them again adds nothing
    [whole] = list(iter_spreadsheet("sheets", str(path), None, score=SCORE))
    assert [r.source_record_id for r in whole.records] == ids


def test_empty_cells_past_the_header_make_no_ragged_row() -> None:
    data = "Name;Email\nAda Demir;ada@demir.example;;\nCan Ak;can@ak.example;  ;\t\n"
    records, found = read_table("s", "f.csv", data.encode(), NOW, None, SCORE, False)
    assert found == []
    assert [r.payload for r in records] == [
        {"Name": "Ada Demir", "Email": "ada@demir.example"},
        {"Name": "Can Ak", "Email": "can@ak.example"},
    ]


def _parts(data: bytes, is_xlsx: bool = False) -> list[TablePart]:
    return list(iter_table("s", "f.csv", data, NOW, None, SCORE, is_xlsx))


def test_a_file_that_is_no_table_says_what_it_is() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    for data, what, fix in [
        (png, "a PNG image", "export the sheet as CSV or XLSX"),
        (b"PK\x03\x04" + bytes(300), "a ZIP archive", "rename it .xlsx"),
        (bytes(range(1, 256)) * 8, "binary data", "export the sheet as CSV or XLSX"),
    ]:
        parts = _parts(data)
        assert [p.records for p in parts] == [[]]
        assert [(j.code, j.message) for j in parts[0].rejects] == [
            ("unreadable_file", f"the file is {what}, not a CSV")
        ]
        [w] = parts[0].warnings
        assert (w.file, w.code, w.loses_data) == ("f.csv", "not_text", True)
        assert fix in w.fix


def test_an_empty_file_is_a_warning_and_loses_nothing() -> None:
    for data in (b"", b"\n\n", b" ; \n"):
        parts = _parts(data)
        assert [p.records for p in parts] == [[]] * len(parts)
        [w] = [w for p in parts for w in p.warnings]
        assert (w.code, w.message, w.loses_data) == ("empty_file", "the file is empty", False)


def test_every_table_carries_its_shape() -> None:
    [header_only] = _parts(b"Name;Email\n")
    [shape] = header_only.tables
    assert (shape.header, shape.found, shape.data_rows, shape.records) == (
        ("Name", "Email"),
        True,
        0,
        0,
    )
    unknown = "Nimi;Sähköposti;Puhelin\n\nAino Virtanen;aino@virtanen.fi;+358 40 123 4567\n"
    [part] = _parts(unknown.encode())
    assert [j.code for j in part.rejects] == ["no_header"]
    [shape] = part.tables
    assert shape.header == ("Nimi", "Sähköposti", "Puhelin") and not shape.found
    assert shape.samples == (("Aino Virtanen", "aino@virtanen.fi", "+358 40 123 4567"),)
    assert (shape.data_rows, shape.records, shape.header_row) == (1, 0, 1)
    rows = "".join(
        f"Ada {i};ada{i}@x.example;bad;cells\n" if i % 2 else f"Can {i};c{i}@x.example\n"
        for i in range(6)
    )
    parts = list(
        iter_table(
            "s", "f.csv", f"Name;Email\n{rows}".encode(), NOW, None, SCORE, False, chunk_rows=2
        )
    )
    assert [len(p.records) for p in parts] == [2, 1]
    assert [len(p.tables) for p in parts] == [0, 1]
    shape = parts[-1].tables[0]
    assert (shape.data_rows, shape.records, len(shape.samples)) == (6, 3, 2)


def test_a_workbook_gives_each_sheet_its_shape(tmp_path: Path) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    wb.active.title = "Leads"
    wb.active.append(["Name", "E-Mail", "Firma"])
    wb.create_sheet("Notes").append(["remember to call back"])
    wb.create_sheet("Empty")
    path = tmp_path / "leads.xlsx"
    wb.save(path)
    parts = list(iter_table("s", "leads.xlsx", path.read_bytes(), NOW, None, SCORE, True))
    shapes = [t for p in parts for t in p.tables]
    assert [(t.table, t.found, t.data_rows) for t in shapes] == [
        ("Leads", True, 0),
        ("Notes", False, 0),
    ]
    assert shapes[1].where == "leads.xlsx (sheet Notes)"
    assert [w for p in parts for w in p.warnings] == []

    (tmp_path / "blank.xlsx").write_bytes(b"")
    wb = Workbook()
    wb.save(tmp_path / "blank.xlsx")
    parts = list(
        iter_table(
            "s", "blank.xlsx", (tmp_path / "blank.xlsx").read_bytes(), NOW, None, SCORE, True
        )
    )
    [w] = [w for p in parts for w in p.warnings]
    assert (w.code, w.message, w.loses_data) == (
        "empty_file",
        "the workbook has no filled cell",
        False,
    )


def test_a_corrupt_workbook_warns_that_it_lost_the_file() -> None:
    parts = _parts(b"PK\x03\x04 not really a zip", is_xlsx=True)
    [w] = [w for p in parts for w in p.warnings]
    assert (w.code, w.loses_data) == ("unreadable_file", True)
    assert w.message.startswith("the file cannot be read: BadZipFile:")


def test_a_file_emptied_after_it_was_read_keeps_its_cursor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An editor truncates a sheet before it writes the new version: caught empty, the file has
    # nothing to land and its cursor keeps the version that had rows.
    monkeypatch.setattr("connectors.spreadsheet.SETTLE_SECONDS", 0.0)
    path = tmp_path / "fair.csv"
    path.write_text("Name;Email\nAyşe Yılmaz;ayse@firma.com.tr\n", encoding="utf-8")
    [first] = list(iter_spreadsheet("fair", str(path), None, score=SCORE))
    assert len(first.records) == 1
    kept = first.cursor["files"][str(path)]
    path.write_bytes(b"")
    assert list(iter_spreadsheet("fair", str(path), first.cursor, score=SCORE)) == []
    path.write_text("Name;Email\nAyşe Yılmaz;ayse@firma.com.tr\n", encoding="utf-8")
    # the same version back: nothing to read again
    assert list(iter_spreadsheet("fair", str(path), first.cursor, score=SCORE)) == []
    # a file never read before that is empty is still read once (and warns that it is empty)
    blank = tmp_path / "blank.csv"
    blank.write_bytes(b"")
    batches = list(iter_spreadsheet("fair", str(blank), None, score=SCORE))
    assert [w.code for b in batches for w in b.warnings] == ["empty_file"]
    assert first.cursor["files"][str(path)] == kept


def _trimmed(rows: Any) -> list[list[Any]]:
    out = [list(r) for r in rows]
    for r in out:
        while r and r[-1] is None:
            r.pop()
    while out and not out[-1]:
        out.pop()
    return out


def test_a_workbook_read_a_row_at_a_time_gives_what_a_whole_load_gives(tmp_path: Path) -> None:
    """Read-only and streamed (a sheet of 500k rows loaded whole took gigabytes), yet merged
    ranges carry their value as before, and a file that states too small a size loses no cell."""
    import zipfile

    from openpyxl import Workbook, load_workbook

    from connectors.spreadsheet import _merged_filled, xlsx_sheets

    wb = Workbook()
    ws = wb.active
    ws.title = "Fair"
    ws.append(["Visitors of the fair"])
    ws.merge_cells("A1:E1")  # a title over the table, wider than some rows
    ws.append(["Name", "E-Mail", "Firma", "Stadt", "Notiz"])
    ws.append(["Uwe Haas", "uwe@haas.example.de", "Haas GmbH", "Köln"])  # no note: shorter
    ws.append(["Vera Imhof", "vera@imhof.example.de", "Imhof KG", "Bonn", "x"])
    ws.append(["Willi Jung", "willi@jung.example.de", None, "Bonn"])
    ws.merge_cells("C4:C5")  # Willi's company is Vera's
    ws.append([])
    ws.append(["Ada Kurz", "ada@kurz.example.de", "Kurz AG", "Essen", "G"])
    path = tmp_path / "fair.xlsx"
    wb.save(path)
    expected = _trimmed(_merged_filled(load_workbook(path, data_only=True)["Fair"]))
    # each sheet's rows are read before the next sheet (the workbook closes after the last)
    [(name, rows)] = [(n, list(r)) for n, r in xlsx_sheets(str(path), None)]
    assert name == "Fair" and _trimmed(rows) == expected
    assert expected[0] == ["Visitors of the fair"] * 5 and expected[4][2] == "Imhof KG"
    # A writer that states the size as A1 only: read-only openpyxl would trust it and cut rows.
    cut = tmp_path / "cut.xlsx"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(cut, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.startswith("xl/worksheets/sheet"):
                data = re.sub(rb'<dimension ref="[^"]*" ?/>', b'<dimension ref="A1"/>', data)
                assert b'<dimension ref="A1"/>' in data
            dst.writestr(item, data)
    [(_, rows)] = [(n, list(r)) for n, r in xlsx_sheets(str(cut), None)]
    assert _trimmed(rows) == expected
    records, found = read_path(cut)
    assert [r.payload["Firma"] for r in records] == ["Haas GmbH", "Imhof KG", "Imhof KG", "Kurz AG"]
    assert found == []  # no row came short of the header
