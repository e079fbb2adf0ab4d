"""Columns that hold contact data but map to nothing are found by header and by values."""

from __future__ import annotations

from dataclasses import replace

import pytest

from connectors.base import TableShape
from transforms.columns import (
    check_file,
    check_table,
    kind_of_header,
    kind_of_values,
    map_columns,
    value_kind,
)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("ann@example.com", "email"),
        ("mailto:ann@example.com", "email"),
        ("+90 532 111 22 33", "phone"),
        ("0532 111 22 33", "phone"),
        ("(030) 1234-5678", "phone"),
        ("https://haas.example.de/kontakt", "website"),
        ("www.haas.de", "website"),
        ("haas-gmbh.de", "website"),
        ("Germany", "country"),
        ("Türkiye", "country"),
        ("DE", "country"),
        # not contact data
        ("2026-03-15", None),
        ("15.03.2026", None),
        ("1.000.000", None),
        ("34000", None),
        ("1234567890", None),  # an id, not a phone: no leading 0 or +, no groups
        ("de", None),
        ("NO", None),  # a consent answer, not Norway
        ("yes", None),
        ("Please call me", None),
        ("", None),
        (None, None),
    ],
)
def test_value_kinds(value: str | None, kind: str | None) -> None:
    assert value_kind(value) == kind


def test_a_column_has_a_kind_when_most_of_its_values_do() -> None:
    assert kind_of_values(["a@x.example", "b@y.example", "", None, "c@z.example"]) == "email"
    assert kind_of_values(["a@x.example", "call me", "later", "no"]) is None
    assert kind_of_values(["", None]) is None


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        ("Work Email", "email"),
        ("E-posta (iş)", "email"),
        ("Mobile phone 2", "phone"),
        ("Country of residence", "country"),
        ("Company website", "website"),
        ("Notes", None),
        ("Mailing City", None),
    ],
)
def test_a_header_that_names_a_field_among_other_words(header: str, kind: str | None) -> None:
    assert kind_of_header(header) == kind


def shape(header: tuple[str, ...], rows: list[tuple[str, ...]], found: bool = True) -> TableShape:
    return TableShape("fair", "fair.csv:csv", header, found, tuple(rows), len(rows), len(rows), 1)


def test_unmapped_columns_are_warnings_with_the_field_to_map_them_to() -> None:
    t = shape(
        ("Name", "Email", "Kanal 2", "Zweite E-Mail", "Ref 7"),
        [
            ("Ann Lee", "ann@a.example", "+90 532 111 22 33", "", "hi"),
            ("Ben Ode", "ben@b.example", "0533 444 55 66", "", "call"),
        ],
    )
    got = [(w.code, w.message, w.fix) for w in check_table(t)]
    assert got == [
        (
            "unmapped_column",
            'column "Kanal 2" maps to no field but seems to hold phone data',
            'add to source fair: columns: {"Kanal 2": phone}',
        ),
        (
            "unmapped_column",
            'column "Zweite E-Mail" maps to no field but seems to hold email data',
            'add to source fair: columns: {"Zweite E-Mail": email}',
        ),
    ]
    # once mapped, the column is quiet
    assert check_table(t, {"Kanal 2": "phone", "zweite e-mail": "email"}) == []


def test_a_mapped_header_the_table_lacks_is_a_warning() -> None:
    t = shape(("Name", "Email"), [("Ann Lee", "ann@a.example")])
    [w] = check_table(t, {"Telefon Numarası": "phone", "EMAIL": "email"})
    assert w.code == "mapped_header_missing"
    assert w.message == 'columns maps "Telefon Numarası" to phone, but the table has no such column'
    assert w.header == ("Name", "Email") and not w.loses_data


def test_an_unknown_header_gets_the_columns_map_its_values_suggest() -> None:
    t = shape(
        ("Imię i nazwisko", "Adres poczty", "Numer komórki"),
        [("Jan Kowalski", "jan@k.example.pl", "+48 512 345 678")],
        found=False,
    )
    [w] = check_table(t)
    assert w.code == "unknown_header" and w.header == t.header
    assert w.fix == 'add to source fair: columns: {"Adres poczty": email, "Numer komórki": phone}'


def test_the_mapping_of_each_column_says_why() -> None:
    cols = map_columns(
        ("E-posta", "Kanal", "Ref 7"),
        [("a@b.example", "0532 111 22 33", "x")] * 7,
        {"Kanal": "phone"},
    )
    assert [(c.header, c.field, c.by, c.suggested) for c in cols] == [
        ("E-posta", "email", "alias", None),
        ("Kanal", "phone", "columns", None),
        ("Ref 7", None, None, None),
    ]
    assert cols[0].samples == ("a@b.example",) * 5


def test_a_json_exports_fields_are_checked_like_columns() -> None:
    from transforms.columns import submissions_shape

    payloads = [
        {"id": f"s{i}", "email": f"p{i}@x.example", "fields": {"Kanal 2": f"+90 532 111 22 3{i}"}}
        for i in range(3)
    ]
    t = submissions_shape("forms", "export.json", payloads)
    assert t.found and "Kanal 2" in t.header and t.records == 3
    [w] = check_table(t)
    assert (w.file, w.code, w.fix) == (
        "export.json",
        "unmapped_column",
        'add to source forms: columns: {"Kanal 2": phone}',
    )


def test_a_header_with_no_rows_under_it_is_a_warning_that_loses_nothing() -> None:
    [w] = check_file([shape(("Name", "Email"), [])])
    assert (w.code, w.header, w.loses_data) == ("no_rows", ("Name", "Email"), False)
    assert w.message == "the file has a header row but no rows under it"


def test_a_file_of_which_nothing_became_a_record_lost_data() -> None:
    unknown = shape(("Nimi", "Sähköposti"), [("Aino Virtanen", "aino@virtanen.fi")], found=False)
    unknown = replace(unknown, records=0)
    [w] = check_file([unknown])
    assert (w.code, w.loses_data) == ("unknown_header", True)
    assert w.fix == 'add to source fair: columns: {"Sähköposti": email}'
    # every row rejected (ragged): the file had rows and none of them landed
    ragged = replace(shape(("Name", "Email"), [("Ann Lee", "ann@a.example")]), records=0)
    [w] = check_file([ragged])
    assert (w.code, w.loses_data) == ("nothing_read", True)
    assert w.message == "none of its 1 rows became a record (see leadflow rejects list)"


def test_a_workbook_loses_nothing_when_one_of_its_sheets_landed() -> None:
    leads = replace(shape(("Name", "Email"), [("Ann Lee", "ann@a.example")]), table="Leads")
    notes = replace(shape(("remember to call",), [], found=False), records=0, table="Notes")
    [w] = check_file([leads, notes])
    assert (w.file, w.code, w.loses_data) == ("fair.csv:csv (sheet Notes)", "unknown_header", False)
    # a header the map names is missing only when no sheet of the file has it
    assert check_file([leads, notes], {"Email": "email"}) == [w]
    [w, missing] = check_file([leads, notes], {"E-posta": "email"})
    assert (missing.file, missing.code) == ("fair.csv:csv", "mapped_header_missing")
    assert missing.message == 'columns maps "E-posta" to email, but the file has no such column'
