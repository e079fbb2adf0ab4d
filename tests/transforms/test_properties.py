"""Properties of the normalizers on any input: they never raise, and normalizing twice changes nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from transforms.normalize import (
    NormalizeOptions,
    company_key,
    fold,
    normalize_batch,
    normalize_country,
    normalize_email,
    normalize_phone,
    normalize_postal_code,
    parse_budget,
    parse_consent,
    parse_date,
    parse_datetime,
    parse_timeline,
    split_name,
)
from transforms.records import Contact, RawRow, raw_id_for

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any text at all, plus text built from the pieces real contact data is made of, so the
# interesting branches (commas, titles, Turkish letters, + and @) are reached often.
PIECES = st.sampled_from(
    [
        "İSMAİL",
        "Işık",
        "Weiß",
        "Jürgen",
        "McDonald",
        "O'Neil",
        "von",
        "der",
        "Dr.",
        "Jr",
        "YILMAZ",
        "ß",
        "ı",
        "İ",
        ",",
        " ",
        "-",
        "'",
        ".",
        "@",
        "+",
        "0532",
        "111 22 33",
        "+49",
        "gmail.com",
        "GmbH",
        "A.Ş.",
        "Ltd",
        "\x00",
        "\t",
        "\u200b",
        "ǅ",
        "ﬁ",
        "Ⅻ",
        "é",
        "e\u0301",
    ]
)
TEXT = st.one_of(st.text(), st.lists(PIECES, max_size=8).map("".join))


@SETTINGS
@given(TEXT, st.sampled_from([None, "TR", "DE", "US"]))
@example("ǅenan Ǆukić", None)
@example("ß ß", None)
@example("YILMAZ ﬁrat", "TR")
@example("0,II", None)
@example("II Ab", None)
@example("Aẞ 0", None)
@example("aß A", None)
def test_split_name_never_raises_and_is_idempotent(raw: str, country: str | None) -> None:
    first, last, full = split_name(raw, country)
    if full is None:
        return
    assert full == " ".join(p for p in (first, last) if p)
    assert split_name(full, country) == (first, last, full)


@SETTINGS
@given(TEXT)
def test_fold_is_idempotent(raw: str) -> None:
    assert fold(fold(raw)) == fold(raw)


EMAILS = st.one_of(
    TEXT,
    st.emails().map(lambda e: e.upper()),
    st.tuples(
        st.sampled_from([" ", "<", "mailto:", '"', ""]),
        st.emails(),
        st.sampled_from(["", ">", "?subject=x", " "]),
    ).map("".join),
)


@SETTINGS
@given(EMAILS)
@example("MAILTO:'@0.A")
def test_normalize_email_never_raises_and_is_idempotent(raw: str) -> None:
    email, key, issues = normalize_email(raw)
    if email is None:
        return
    assert normalize_email(email) == (email, key, issues)
    assert key is not None and normalize_email(key)[1] == key


PHONES = st.one_of(
    TEXT,
    st.from_regex(r"\A(\+|00)?[0-9 ()./-]{5,20}( ?(ext|x|#) ?[0-9]{1,4})?\Z"),
)


@SETTINGS
@given(PHONES, st.sampled_from(["TR", "DE", "US", "GB"]))
def test_normalize_phone_never_raises_and_is_idempotent(raw: str, region: str) -> None:
    e164, _issues = normalize_phone(raw, region)
    if e164 is None:
        return
    assert e164.startswith("+")
    # E.164 is the fixed point, whatever region the reader assumes
    assert normalize_phone(e164, region) == (e164, ())
    assert normalize_phone(e164, "US") == (e164, ())


@SETTINGS
@given(TEXT)
def test_company_key_never_raises_and_is_idempotent(raw: str) -> None:
    key = company_key(raw)
    if key is not None:
        assert company_key(key) == key


@SETTINGS
@given(st.one_of(TEXT, st.sampled_from(["Türkiye", "Deutschland", "USA", "de", "U.K."])))
def test_normalize_country_never_raises_and_is_idempotent(raw: str) -> None:
    code = normalize_country(raw)
    if code is not None:
        assert len(code) == 2 and normalize_country(code) == code


@SETTINGS
@given(TEXT, st.sampled_from([None, "TR", "DE", "NL", "GB", "US"]))
def test_normalize_postal_code_never_raises_and_is_idempotent(
    raw: str, country: str | None
) -> None:
    code, issues = normalize_postal_code(raw, country)
    if code is not None:
        assert normalize_postal_code(code, country) == (code, issues)


@SETTINGS
@given(st.one_of(TEXT, st.dates().map(str), st.dates().map(lambda d: d.strftime("%d.%m.%Y"))))
def test_parse_date_never_raises_and_its_output_reads_back(raw: str) -> None:
    d = parse_date(raw)
    if d is not None:
        assert parse_date(d.isoformat()) == d


@SETTINGS
@given(st.dates(min_value=date(1900, 1, 1)))
def test_iso_dates_read_back_exactly(d: date) -> None:
    assert parse_date(d.isoformat()) == d


@SETTINGS
@given(
    st.one_of(
        TEXT,
        st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
        st.datetimes().map(lambda d: d.strftime("%d.%m.%Y %H:%M")),
    )
)
def test_parse_datetime_never_raises_and_is_idempotent(raw: str) -> None:
    dt = parse_datetime(raw)
    if dt is not None:
        assert dt.tzinfo is not None
        assert parse_datetime(dt.isoformat()) == dt
        assert parse_datetime(dt) == dt


@SETTINGS
@given(st.one_of(TEXT, st.integers(), st.floats(), st.booleans(), st.none()))
def test_field_parsers_never_raise(raw: object) -> None:
    parse_budget(raw)
    parse_timeline(raw)
    parse_consent(raw)
    parse_date(raw)


FIELD_NAMES = st.sampled_from(
    ["name", "Ad Soyad", "email", "E-Posta", "phone", "Telefon", "company", "country", "budget"]
)
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TEXT),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["spreadsheet", "webform", "email"]),
            st.dictionaries(st.one_of(FIELD_NAMES, st.text(max_size=8)), JSONISH, max_size=6),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_every_row_becomes_a_contact_or_a_reject_with_a_reason(
    rows: list[tuple[str, dict[str, object]]],
) -> None:
    raw = [
        RawRow(raw_id_for("s", str(i)), "s", kind, str(i), datetime(2026, 1, 1, tzinfo=UTC), p)
        for i, (kind, p) in enumerate(rows)
    ]
    contacts, rejects = normalize_batch(raw, NormalizeOptions())
    assert len(contacts) + len(rejects) == len(raw)
    assert all(isinstance(c, Contact) for c in contacts)
    assert all(j.code and j.message for j in rejects)
