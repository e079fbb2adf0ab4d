"""The batch path (every distinct value of a field normalized once per batch) gives, field by
field, what `normalize_contact` gives record by record: on the bundled samples and on a
generated set of hostile values."""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa
import pytest

from transforms.fields import header_plan
from transforms.match import MATCH_SCHEMA, match_row, match_table
from transforms.normalize import NormalizeOptions, normalize_batch, normalize_contact
from transforms.records import Contact, RawRow, Reject, raw_id_for


def assert_same_as_per_record(rows: Sequence[RawRow], opts: NormalizeOptions) -> int:
    """Batch and per-record results agree in kind, order and every field; returns the count
    of contacts."""
    contacts, rejects = normalize_batch(rows, opts)
    expected = [normalize_contact(r, opts) for r in rows]
    want_contacts = [c for c in expected if isinstance(c, Contact)]
    want_rejects = [j for j in expected if isinstance(j, Reject)]
    assert len(contacts) == len(want_contacts) and len(rejects) == len(want_rejects)
    pairs: list[tuple[Contact | Reject, Contact | Reject]] = [
        *zip(contacts, want_contacts, strict=True),
        *zip(rejects, want_rejects, strict=True),
    ]
    for got, want in pairs:
        g, w = dataclasses.asdict(got), dataclasses.asdict(want)
        for name in w:
            assert g[name] == w[name], (name, g["raw_id"], g[name], w[name])
            assert type(g[name]) is type(w[name]), (name, g["raw_id"])
    return len(contacts)


def assert_match_table_is_match_rows(contacts: Sequence[Contact]) -> None:
    table = match_table(contacts)
    rows = [{"contact_id": c.contact_id, **match_row(c)} for c in contacts]
    expected = pa.Table.from_pylist(rows, schema=MATCH_SCHEMA)
    for name in MATCH_SCHEMA.names:
        assert table.column(name).to_pylist() == expected.column(name).to_pylist(), name


def _sample_rows() -> list[RawRow]:
    """The bundled sample sources, read by their connectors, payloads as landing stores them."""
    from flows.settings import load_settings
    from flows.sources import iter_source
    from tests.conftest import ROOT

    settings = load_settings(ROOT / "leadflow.yaml")
    rows = []
    for source in settings.sources:
        for batch in iter_source(source, None):
            for r in batch.records:
                payload = json.loads(r.payload_json())
                rows.append(
                    RawRow(
                        raw_id_for(r.source, r.source_record_id),
                        r.source,
                        r.source_kind,
                        r.source_record_id,
                        r.received_at,
                        payload,
                    )
                )
    return rows


def test_the_bundled_samples_normalize_the_same_in_a_batch() -> None:
    from flows.settings import load_settings
    from flows.stages import normalize_options
    from tests.conftest import ROOT

    rows = _sample_rows()
    assert {r.source_kind for r in rows} == {"spreadsheet", "email", "webform"}
    opts = normalize_options(load_settings(ROOT / "leadflow.yaml"))
    n = assert_same_as_per_record(rows, opts)
    assert n > 0
    contacts, _ = normalize_batch(rows, opts)
    assert_match_table_is_match_rows(contacts)


FIRST = ["İsmail", "ayşe", "JÜRGEN", "Hans-Peter", "o'brien", "Dr. Ali", "Mc Donald", "ß", "", " "]
LAST = ["Işık", "YILMAZ", "Weiß", "von der Heide", "Smith Jr.", "Öztürk", ",", "12", "Müller"]
NAMES = ["Müller, Hans", "YILMAZ Mehmet", "Madonna", "Prof. Dr.", "ﬁnn ﬂy", "II Ab", "- -", ""]
EMAILS = [
    "John.Doe@Example.COM",
    "mailto:Ali+x@GoogleMail.com",
    "<info@acme.de>",
    " ali veli@firma.com.tr ",
    "user@bücher.de",
    "işık@örnek.com.tr",
    "bad@@x",
    "not an email",
    "x@mailinator.com",
    "satis@ours.example",
    "+tag@firma.de",
    "a@b",
    "",
]
PHONES = [
    "0532 123 45 67",
    "+90 (212) 555 12 12 dahili 305",
    "030 1234567",
    "+49 30 1234567 ext. 12",
    "0049 151 23456789",
    "905321234567",
    "12",
    "call me",
    "+1 650-253-0000",
    "(0)30/1234567",
    "+39 06 1234 5678",
    "+44 20 7946 0958",
    "+0 123",
    "00 90 532",
    "5551234",
    "+90 532 123 45 67 #22",
]
COUNTRIES = ["Türkiye", "Germany", "de", "DE", "+49", "Atlantis", "U.S.A", "ÖSTERREICH", "", "90"]
BUDGETS: list[Any] = ["50.000 TL", "€20k", "$100,000", 1, 1.0, True, "1", "1.0", "zero", None]
TIMELINES: list[Any] = ["3 months", "2 ay", "sofort", "this quarter", 3, "", None]
CONSENTS: list[Any] = ["yes", "Evet", "no", True, False, 1, "1", "maybe", None]
DATES: list[Any] = ["1980-11-05", "05.03.1970", "0/0/00", "31.02.2024", "5 Mart 1990", 19801105]
POSTALS = ["D-10115", "34710", "1234", "sw1a 1aa", "1011 AB", "", "ABC"]


def _hostile_rows(n: int, seed: int) -> list[RawRow]:
    rnd = random.Random(seed)
    when = datetime(2026, 3, 1, tzinfo=UTC)
    rows = []
    for i in range(n):

        def pick(values: Sequence[Any], p: float = 0.8) -> Any:
            return rnd.choice(values) if rnd.random() < p else None

        kind = rnd.choice(["spreadsheet", "spreadsheet", "webform", "email", "sheet_mapped"])
        local = rnd.choice(["hans", "İsmail", "info", "ali.veli"])
        email = pick(EMAILS) if rnd.random() < 0.5 else f"{local}{rnd.randint(1, 500)}@firm.de"
        phone = pick(PHONES) if rnd.random() < 0.5 else f"0532 {rnd.randint(100, 999)} 12 34"
        fields = {
            "first_name": pick(FIRST, 0.5),
            "last_name": pick(LAST, 0.5),
            "full_name": pick(NAMES, 0.4),
            "email": email,
            "other_emails": [pick(EMAILS), pick(EMAILS)] if rnd.random() < 0.1 else None,
            "phone": phone,
            "other_phones": [pick(PHONES)] if rnd.random() < 0.1 else None,
            "phone_country_code": pick(["+49", "90", "0049", "DE", "x"], 0.1),
            "country": pick(COUNTRIES, 0.5),
            "company": pick(
                ["Işık Tekstil A.Ş.", "Weiß GmbH & Co. KG", "X:GmbH", "", 1, 1.0, True], 0.6
            ),
            "website": pick(["https://www.acme.de/x", "acme", "http://firma.com.tr:8080"], 0.2),
            "street": pick(["Hauptstraße 5", "Atatürk Cd.", "12 Lawrence Street"], 0.3),
            "street_number": pick(["5", "12", "3a"], 0.2),
            "postal_code": pick(POSTALS, 0.4),
            "city": pick(["Berlin", "Kadıköy", "istanbul"], 0.4),
            "birth_date": pick(DATES, 0.2),
            "budget": pick(BUDGETS, 0.5),
            "timeline": pick(TIMELINES, 0.5),
            "consent": pick(CONSENTS, 0.5),
            "job_title": pick(["CEO", "Satın Alma Müdürü", ["a", "list"]], 0.3),
            "message": pick(["Teklif istiyoruz", "x\x00y", "  a   b  "], 0.3),
        }
        fields = {k: v for k, v in fields.items() if v is not None}
        sid = str(i)
        if kind == "email":
            payload: dict[str, Any] = {
                "from": [{"name": fields.get("full_name") or "", "email": email or ""}],
                "reply_to": [],
                "subject": "Anfrage",
                "body": f"Tel: {phone}\n"
                if rnd.random() < 0.5
                else "Name: Ali Veli\nE-mail: a@b.de",
                "mime_defects": rnd.random() < 0.1,
            }
        elif kind == "webform":
            payload = {"fields": {k: v for k, v in fields.items() if not k.startswith("other")}}
        elif kind == "sheet_mapped":
            kind = "spreadsheet"
            payload = {"Ad Soyad": fields.get("full_name"), "Eposta": email, "Tel": phone}
        else:
            payload = fields
        source = f"src_{kind}_{i % 3}"
        rows.append(RawRow(raw_id_for(source, sid), source, kind, sid, when, payload))
    return rows


OPTIONS = [
    NormalizeOptions(
        default_region="TR",
        internal_domains=frozenset({"ours.example"}),
        columns={"src_spreadsheet_1": {"Ad Soyad": "full_name", "Tel": "phone"}},
    ),
    NormalizeOptions(default_region="DE"),
    NormalizeOptions(default_region="US", internal_domains=frozenset({"firm.de"})),
]


@pytest.mark.parametrize("opts", OPTIONS, ids=["TR", "DE", "US"])
def test_hostile_values_normalize_the_same_in_a_batch(opts: NormalizeOptions) -> None:
    rows = _hostile_rows(20_000 if opts.default_region == "TR" else 4_000, seed=11)
    n = assert_same_as_per_record(rows, opts)
    assert 0 < n < len(rows)  # some of each
    contacts, _ = normalize_batch(rows, opts)
    assert_match_table_is_match_rows(contacts)


def test_a_batch_under_other_options_reads_its_values_anew() -> None:
    """The same national number is another line in another default region; an internal domain
    of one run is a customer's in the next."""
    when = datetime(2026, 3, 1, tzinfo=UTC)
    payload = {"Name": "Ali Veli", "E-Mail": "ali@ours.example", "Telefon": "030 1234567"}
    row = RawRow(raw_id_for("s", "1"), "s", "spreadsheet", "1", when, payload)
    tr, _ = normalize_batch([row], NormalizeOptions(default_region="TR"))
    de, _ = normalize_batch([row], NormalizeOptions(default_region="DE"))
    assert (tr[0].phone, de[0].phone) == (None, "+49301234567")
    _, internal = normalize_batch(
        [row], NormalizeOptions(internal_domains=frozenset({"ours.example"}))
    )
    assert internal[0].code == "internal_sender"


def test_equal_cells_of_other_types_are_not_one_value() -> None:
    """1, 1.0 and True are one dict key but three cells ("1", "1.0", "True")."""
    when = datetime(2026, 3, 1, tzinfo=UTC)
    rows = [
        RawRow(
            raw_id_for("s", str(i)),
            "s",
            "spreadsheet",
            str(i),
            when,
            {"Name": "Ali Veli", "Firma": cell, "Budget": cell, "Birthday": date(1980, 1, 1)},
        )
        for i, cell in enumerate([1, 1.0, True])
    ]
    contacts, _ = normalize_batch(rows, NormalizeOptions())
    assert [c.company for c in contacts] == ["1", "1.0", "True"]
    assert_same_as_per_record(rows, NormalizeOptions())


def test_repeated_values_in_other_case_and_spacing_normalize_as_each_row_alone() -> None:
    """A batch normalizes each distinct cell once: cells that differ only in case or spacing
    are other cells, each giving what its row alone gives, whichever way the header row is
    read (each field in one column, or a field in several)."""
    when = datetime(2026, 3, 1, tzinfo=UTC)
    cells = [
        ("İsmail Işık", "İsmail@Örnek.com.tr", "0532 123 45 67", "Türkiye"),
        ("ISMAIL ISIK", "ismail@örnek.com.tr", "05321234567", "TÜRKİYE"),
        ("  ismail   işık ", " İSMAİL@ÖRNEK.COM.TR ", "+90 532 123 45 67", " türkiye "),
        ("Jürgen WEIß", "Jürgen.Weiß@Example.com", "030 1234567", "deutschland"),
        ("jürgen weiß", "JÜRGEN.WEISS@EXAMPLE.COM", "+49 30 1234567", "DE"),
        ("Weiß, Jürgen", "junk", "call me", "Atlantis"),
    ]
    headers = [
        ("Name", "E-Mail", "Telefon", "Land"),
        ("Name", "E-Mail", "Telefon", "Land", "Email"),
    ]
    rows = [
        RawRow(
            raw_id_for("s", f"{i}.{j}"),
            "s",
            "spreadsheet",
            f"{i}.{j}",
            when,
            dict(zip(header, [*cell, ""], strict=False)),
        )
        for i, cell in enumerate(cells * 3)
        for j, header in enumerate(headers)
    ]
    plain, several = (header_plan(h) for h in headers)
    assert plain.direct is not None and several.direct is None  # both ways are read
    contacts, _ = normalize_batch(rows, NormalizeOptions(default_region="DE"))
    assert assert_same_as_per_record(rows, NormalizeOptions(default_region="DE")) == len(rows)
    # the two header rows give each row the same contact
    for a, b in zip(contacts[::2], contacts[1::2], strict=True):
        assert dataclasses.replace(a, contact_id="", raw_id="") == dataclasses.replace(
            b, contact_id="", raw_id=""
        )
    assert_match_table_is_match_rows(contacts)
