"""Table-driven tests of the per-field normalizers: names, emails, phones, companies, places, dates."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from email_validator import EmailNotValidError, validate_email

from transforms.match import first_key, name_token
from transforms.normalize import (
    company_key,
    email_flags,
    fold,
    normalize_country,
    normalize_email,
    normalize_postal_code,
    parse_date,
    parse_datetime,
    parse_phone,
    split_name,
)


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("İSMAİL IŞIK", None, ("İsmail", "Işık")),
        ("ismail ışık", "TR", ("İsmail", "Işık")),
        ("YILMAZ Mehmet", "TR", ("Mehmet", "Yılmaz")),
        ("Müller, Hans", None, ("Hans", "Müller")),
        ("JÜRGEN WEIß", None, ("Jürgen", "Weiß")),
        ("Dr. Hans-Peter von der Heide Jr.", None, ("Hans-Peter", "von der Heide")),
        ("PATRICK O'BRIEN", None, ("Patrick", "O'Brien")),
        ("john mcdonald", None, ("John", "McDonald")),
        ("ayşe gül öztürk", None, ("Ayşe Gül", "Öztürk")),
        ("Prof. Dr. Ahmet Çelik", None, ("Ahmet", "Çelik")),
        ("Sayın Ayşe Kaya", None, ("Ayşe", "Kaya")),
        ("Madonna", None, ("Madonna", None)),
        ("Dr.", None, (None, None)),
        ("12345", None, (None, None)),
    ],
)
def test_split_name(raw: str, country: str | None, expected: tuple[str | None, str | None]) -> None:
    first, last, _ = split_name(raw, country)
    assert (first, last) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Işık", "Isik"),
        ("Müller", "Mueller"),
        ("Weiß", "Weiss"),
        ("Şahin", "SAHIN"),
        ("Öztürk", "Oeztuerk"),
    ],
)
def test_matching_keys_fold_transliterations(a: str, b: str) -> None:
    assert name_token(a) == name_token(b)


@pytest.mark.parametrize(
    ("nick", "formal"),
    [
        ("Bob", "Robert"),
        ("Bill", "William"),
        ("Memo", "Mehmet"),
        ("Sepp", "Josef"),
        ("Kate", "Katherine"),
    ],
)
def test_nicknames_resolve_to_the_formal_name(nick: str, formal: str) -> None:
    assert first_key(nick) == first_key(formal)


def test_fold_is_ascii_lowercase() -> None:
    assert fold("İSMAİL Işık Weiß") == "ismail isik weiss"


@pytest.mark.parametrize(
    ("raw", "email", "key", "issues"),
    [
        ("John.Doe@Example.COM", "john.doe@example.com", "john.doe@example.com", ()),
        ("mailto:John.Doe+x@GoogleMail.com", "john.doe+x@googlemail.com", "johndoe@gmail.com", ()),
        ("j.o.h.n@gmail.com", "j.o.h.n@gmail.com", "john@gmail.com", ()),
        ("<info@acme.de>", "info@acme.de", "info@acme.de", ()),
        (" ali veli@firma.com.tr ", "aliveli@firma.com.tr", "aliveli@firma.com.tr", ()),
        ("user+tag@firma.de", "user+tag@firma.de", "user@firma.de", ()),
        ("user@bücher.de", "user@bücher.de", "user@xn--bcher-kva.de", ()),
        ("bad@@x", None, None, ("email_invalid",)),
        ("not an email", None, None, ("email_invalid",)),
    ],
)
def test_normalize_email(
    raw: str, email: str | None, key: str | None, issues: tuple[str, ...]
) -> None:
    assert normalize_email(raw) == (email, key, issues)


@pytest.mark.parametrize(
    "raw",
    [
        "İsmail.Işık@örnek.com.tr",  # a dotted capital: lower-cases with a combining dot
        "i\u0307smail@example.com",  # that combining dot written out
        "jürgen.weiß7@Example.COM",
        "e\u0301mile@x.de",  # not NFC: validated again after normalization
        "POSTMASTER@Örnek.com.tr",
        "ali..veli@x.de",  # two dots: refused
        ".ali@x.de",
        "çağrı,öz@x.de",  # a comma is no atom character
        "ä" * 64 + "@x.de",  # the longest local part
        "ä" * 65 + "@x.de",
        "ü" * 60 + "@" + ".".join(["ö" * 60] * 3) + ".de",  # within 254 written, not as ASCII
        "x" * 65 + "@x.de",
        "ali@x..de",
        "中文@例子.中国",
        "a\u200bb@x.de",  # an invisible character
    ],
)
def test_an_address_reads_as_email_validator_reads_it(raw: str) -> None:
    """Its local part and its domain are checked apart (the domain once per domain): the
    result is what `validate_email` makes of the whole address."""
    try:
        info = validate_email(raw, check_deliverability=False)
    except EmailNotValidError:
        assert normalize_email(raw)[0] is None
    else:
        assert normalize_email(raw)[0] == f"{info.local_part.lower()}@{info.domain.lower()}"


@pytest.mark.parametrize(
    ("key", "flags"),
    [
        ("info@acme.de", (True, False, False)),
        ("satis@firma.com.tr", (True, False, False)),
        ("ayse@gmail.com", (False, True, False)),
        ("x@mailinator.com", (False, False, True)),
        ("hans@acme.de", (False, False, False)),
        (None, (False, False, False)),
    ],
)
def test_email_flags(key: str | None, flags: tuple[bool, bool, bool]) -> None:
    assert email_flags(key) == flags


@pytest.mark.parametrize(
    ("raw", "region", "e164", "ext", "mobile", "issues"),
    [
        ("0532 123 45 67", "TR", "+905321234567", None, True, ()),
        ("+90 (212) 555 12 12 dahili 305", "TR", "+902125551212", "305", False, ()),
        ("030 1234567", "DE", "+49301234567", None, False, ()),
        ("+49 30 1234567 ext. 12", "TR", "+49301234567", "12", False, ()),
        ("0049 151 23456789", "TR", "+4915123456789", None, True, ()),
        ("12", "TR", None, None, None, ("phone_invalid",)),
        ("call me", "TR", None, None, None, ("phone_unparseable",)),
    ],
)
def test_parse_phone(
    raw: str,
    region: str,
    e164: str | None,
    ext: str | None,
    mobile: bool | None,
    issues: tuple[str, ...],
) -> None:
    p = parse_phone(raw, region)
    assert (p.e164, p.extension, p.is_mobile, p.issues) == (e164, ext, mobile, issues)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("Işık Tekstil San. ve Tic. A.Ş.", "isik tekstil"),
        ("IŞIK TEKSTİL A.Ş.", "isik tekstil"),
        ("Yılmaz Gıda Ltd. Şti.", "yilmaz gida"),
        ("Weiß GmbH & Co. KG", "weiss"),
        ("Acme, Inc.", "acme"),
        ("Acme LLC", "acme"),
        ("Rossi S.r.l.", "rossi"),
        ("Garcia S.A.", "garcia"),
        ("Shell plc", "shell"),
    ],
)
def test_company_key(raw: str, key: str) -> None:
    assert company_key(raw) == key


@pytest.mark.parametrize(
    ("raw", "iso"),
    [
        ("Türkiye", "TR"),
        ("Turkey", "TR"),
        ("Türkei", "TR"),
        ("Almanya", "DE"),
        ("Deutschland", "DE"),
        ("Germany", "DE"),
        ("Österreich", "AT"),
        ("İsviçre", "CH"),
        ("Frankreich", "FR"),
        ("de", "DE"),
        ("Atlantis", None),
    ],
)
def test_normalize_country(raw: str, iso: str | None) -> None:
    assert normalize_country(raw) == iso


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("D-10115", "DE", ("10115", ())),
        ("34710", "TR", ("34710", ())),
        ("1234", "DE", ("1234", ("postal_code_invalid",))),
        ("sw1a 1aa", "GB", ("SW1A 1AA", ())),
    ],
)
def test_normalize_postal_code(
    raw: str, country: str, expected: tuple[str, tuple[str, ...]]
) -> None:
    assert normalize_postal_code(raw, country) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-03-05", date(2024, 3, 5)),
        ("05.03.2024", date(2024, 3, 5)),
        ("5/3/24", date(2024, 3, 5)),
        ("13/12/1980", date(1980, 12, 13)),
        ("5 Mart 2024", date(2024, 3, 5)),
        ("5. März 2024", date(2024, 3, 5)),
        ("March 5, 2024", date(2024, 3, 5)),
        ("31.02.2024", None),
        ("junk", None),
    ],
)
def test_parse_date(raw: str, expected: date | None) -> None:
    assert parse_date(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-03-05T10:00:00+03:00", datetime(2024, 3, 5, 7, tzinfo=UTC)),
        ("2024-03-05 10:00:00Z", datetime(2024, 3, 5, 10, tzinfo=UTC)),
        ("Tue, 05 Mar 2024 10:00:00 +0100", datetime(2024, 3, 5, 9, tzinfo=UTC)),
        ("05.03.2024 10:30 TRT", datetime(2024, 3, 5, 7, 30, tzinfo=UTC)),
        ("05.03.2024 10:30", datetime(2024, 3, 5, 10, 30, tzinfo=UTC)),
        ("2024-03-05 10:00 CET", datetime(2024, 3, 5, 9, tzinfo=UTC)),
        ("yesterday", None),
    ],
)
def test_parse_datetime_to_utc(raw: str, expected: datetime | None) -> None:
    assert parse_datetime(raw) == expected


REGISTER = [
    # (header layout of a person register, expected (first, last, street, city, postal, birth))
    (
        {
            "given_name": "Sienna",
            "surname": "Fitzpatrick",
            "street_number": "12",
            "address_1": "Lawrence Street",
            "address_2": "Unit 4",
            "suburb": "Hawthorn",
            "postcode": "3122",
            "state": "vic",
            "date_of_birth": "19801105",
        },
        (
            "Sienna",
            "Fitzpatrick",
            "12 Lawrence Street, Unit 4",
            "Hawthorn",
            "3122",
            date(1980, 11, 5),
        ),
    ),
    (
        {"Soyadı": "Yılmaz", "Sokak": "Atatürk Cd.", "Kapı No": "5", "Semt": "Kadıköy"},
        (None, "Yılmaz", "5 Atatürk Cd.", "Kadıköy", None, None),
    ),
    (
        {"Vorname": "Jürgen", "Geburtsdatum": "01.02.1970", "PLZ": "10115", "Hausnummer": "3"},
        ("Jürgen", None, None, None, "10115", date(1970, 2, 1)),
    ),
]


@pytest.mark.parametrize(("payload", "expected"), REGISTER)
def test_person_register_rows_are_contacts(
    payload: dict[str, str], expected: tuple[object, ...]
) -> None:
    """One name part with a street and a postcode or suburb, or with a birth date and a
    postcode, identifies a person: such a row is a contact, not a `no_identity` reject."""
    from transforms.normalize import NormalizeOptions, normalize_batch
    from transforms.records import RawRow, raw_id_for

    row = RawRow(
        raw_id_for("reg", "1"), "reg", "spreadsheet", "1", datetime(2026, 1, 1, tzinfo=UTC), payload
    )
    contacts, rejects = normalize_batch([row], NormalizeOptions())
    assert not rejects, rejects
    (c,) = contacts
    got = (c.first_name, c.last_name, c.street, c.city, c.postal_code, c.birth_date)
    assert got == expected


def test_one_name_part_alone_is_still_no_identity() -> None:
    from transforms.normalize import NormalizeOptions, normalize_batch
    from transforms.records import RawRow, raw_id_for

    payload = {"surname": "Smith", "suburb": "Hawthorn", "date_of_birth": "1980-11-05"}
    row = RawRow(
        raw_id_for("reg", "2"), "reg", "spreadsheet", "2", datetime(2026, 1, 1, tzinfo=UTC), payload
    )
    contacts, rejects = normalize_batch([row], NormalizeOptions())
    assert not contacts and rejects[0].code == "no_identity"


def test_a_role_mailbox_with_a_company_is_a_contact_of_that_company() -> None:
    from transforms.normalize import NormalizeOptions, normalize_batch
    from transforms.records import RawRow, raw_id_for

    def row(n: str, payload: dict[str, str]) -> RawRow:
        when = datetime(2026, 1, 1, tzinfo=UTC)
        return RawRow(raw_id_for("fair", n), "fair", "spreadsheet", n, when, payload)

    company = {"E-posta": "info@karadeniz-gida.com.tr", "Şirket": "Karadeniz Gıda A.Ş."}
    alone = {"E-posta": "sales@karadeniz-gida.com.tr", "Şehir": "Trabzon"}
    contacts, rejects = normalize_batch([row("1", company), row("2", alone)], NormalizeOptions())
    (c,) = contacts
    assert (c.email, c.email_is_role, c.company) == (
        "info@karadeniz-gida.com.tr",
        True,
        "Karadeniz Gıda A.Ş.",
    )
    assert c.company_domain == "karadeniz-gida.com.tr" and c.full_name is None
    # a role mailbox of nobody in particular still identifies nobody
    assert [(j.source_record_id, j.code) for j in rejects] == [("2", "no_identity")]
