"""Which raw field means what: the header alias table (header_aliases.csv), vendor layouts, questions."""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

CANONICAL = (
    "full_name",
    "first_name",
    "last_name",
    "email",
    "phone",
    "company",
    "job_title",
    "website",
    "street",
    "street_number",
    "address_line2",
    "city",
    "postal_code",
    "region",
    "country",
    "birth_date",
    "interest",
    "message",
    "budget",
    "timeline",
    "consent",
    "received_at",
    "phone_country_code",
)

IGNORE = "ignore"
"""The field of a header that a layout documents but that carries nothing a contact holds."""
ALIASES_FILE = "header_aliases.csv"
LAYOUT_MIN_HEADERS = (
    3  # a header row is read in a vendor's layout when this many of its cells match
)


@dataclass(frozen=True, slots=True)
class Alias:
    """One row of the alias table: a header, the field it means, the layout it comes from."""

    header: str
    field: str
    layout: str
    language: str
    # "exact": the whole header; "fallback": the whole header, whose value counts only when no
    # other column of the row gives the field (a formatted address beside its parts); "words":
    # words a question-style header contains
    match: str


def _read_aliases() -> tuple[Alias, ...]:
    text = resources.files("transforms").joinpath(ALIASES_FILE).read_text(encoding="utf-8")
    rows = tuple(Alias(**row) for row in csv.DictReader(io.StringIO(text)))
    for n, a in enumerate(rows, start=2):
        if a.field not in CANONICAL and a.field != IGNORE:
            raise ValueError(f"{ALIASES_FILE} line {n}: unknown field {a.field!r}")
        if a.match not in {"exact", "fallback", "words"}:
            raise ValueError(f"{ALIASES_FILE} line {n}: match must be exact, fallback or words")
    return rows


ALIASES: tuple[Alias, ...] = _read_aliases()


@lru_cache(maxsize=16384)
def header_key(header: str) -> str:
    """Case-, accent-, spacing- and punctuation-insensitive key of a column header."""
    text = header.replace("ı", "i").replace("İ", "I").replace("ß", "ss")
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return re.sub(r"[^a-z0-9]+", " ", text).strip()


def _generic_lookup() -> dict[str, str]:
    """header key → field: the generic rows first, then what the vendor layouts add.

    A layout's header joins the generic lookup unless it is a short code (CC, #, Id) that
    means something only inside its own layout; the first row for a key wins.
    """
    out: dict[str, str] = {}
    exact = [a for a in ALIASES if a.match == "exact" and a.field != IGNORE]
    for a in sorted(exact, key=lambda a: a.layout != "generic"):
        key = header_key(a.header)
        if a.layout != "generic" and len(key) <= 3:
            continue
        out.setdefault(key, a.field)
    out.update({header_key(c): c for c in CANONICAL})
    return out


_LOOKUP: dict[str, str] = _generic_lookup()
_LAYOUTS: dict[str, dict[str, str]] = {}
_FALLBACKS: dict[str, set[str]] = {}  # layout → header keys whose value is a last resort
for _a in ALIASES:
    if _a.match in ("exact", "fallback") and _a.layout != "generic":
        _LAYOUTS.setdefault(_a.layout, {}).setdefault(header_key(_a.header), _a.field)
        if _a.match == "fallback":
            _FALLBACKS.setdefault(_a.layout, set()).add(header_key(_a.header))
_KNOWN: frozenset[str] = frozenset(_LOOKUP) | {k for m in _LAYOUTS.values() for k in m}
_QUESTION_WORDS: tuple[tuple[tuple[str, ...], str], ...] = tuple(
    (tuple(header_key(a.header).split()), a.field) for a in ALIASES if a.match == "words"
)
# a header reads as a question or a prompt: "What is your email address?", "Your phone",
# "Bitte geben Sie Ihre E-Mail an", "E-posta adresiniz nedir?"
_PROMPT_START = frozenset(
    "what whats which how when where who your please enter provide tell may can could "
    "wie was welche welcher wann wo ihre ihr ihren deine dein bitte geben lutfen sizin".split()
)
_PROMPT_END = frozenset("nedir nelerdir giriniz yaziniz misiniz musunuz belirtiniz".split())
_PREFIX_MIN = 5  # a question's word of at least this length also matches its inflected forms


def _words_match(tokens: Sequence[str], words: tuple[str, ...]) -> bool:
    n = len(words)
    for i in range(len(tokens) - n + 1):
        if all(
            t == w or (len(w) >= _PREFIX_MIN and t.startswith(w))
            for t, w in zip(tokens[i : i + n], words, strict=True)
        ):
            return True
    return False


@lru_cache(maxsize=4096)
def question_field(header: str) -> str | None:
    """The field a question-style header asks for, by the words it names the field with."""
    tokens = header_key(header).split()
    if not tokens:
        return None
    asks = "?" in header or tokens[0] in _PROMPT_START or tokens[-1] in _PROMPT_END
    # Turkish addresses the reader with a possessive: "E-posta Adresiniz", "Telefon Numaranız"
    # (and its case endings: "Şirketinizin Adı")
    asks = asks or any(len(t) >= 5 and ("niz" in t or "nuz" in t) for t in tokens)
    if not asks and len(tokens) < 4:
        return None
    for words, field in _QUESTION_WORDS:
        if _words_match(tokens, words):
            return field
    return None


@lru_cache(maxsize=4096)
def canonical_field(header: str) -> str | None:
    """The field a header means in any layout: an exact alias, else the words of a question."""
    key = header_key(header)
    found = _LOOKUP.get(key)
    if found is not None or key in _KNOWN:
        return found
    return question_field(header)


def known_header(header: str) -> bool:
    """Whether the table knows this header: it maps to a field, or a layout documents it as
    carrying nothing a contact holds (a rating, an owner, an internal id)."""
    return header_key(header) in _KNOWN or canonical_field(header) is not None


def layouts() -> tuple[str, ...]:
    """The vendor layouts the alias table documents, in table order."""
    return tuple(_LAYOUTS)


@lru_cache(maxsize=1024)
def detect_layout(headers: tuple[str, ...]) -> str | None:
    """The vendor layout a header row is written in: the one naming most of its cells
    (at least LAYOUT_MIN_HEADERS); on a tie, the one whose own headers the row covers best."""
    keys = {header_key(h) for h in headers if h}
    best: tuple[int, float, str] | None = None
    for name, table in _LAYOUTS.items():
        hits = len(keys & table.keys())
        if hits < LAYOUT_MIN_HEADERS:
            continue
        score = (hits, hits / len(table), name)
        if best is None or score[:2] > best[:2]:
            best = score
    return best[2] if best else None


@dataclass(frozen=True, slots=True)
class HeaderPlan:
    """What each column of one header row means, exactly as `map_fields` reads that row."""

    # per column: a field (the explicit map first, then the row's vendor layout, then any
    # layout), IGNORE when the layout documents it as carrying nothing a contact holds, None
    # for a header nobody knows
    fields: tuple[str | None, ...]
    # the columns whose value counts only when no other column of the row gives their field
    fallback: frozenset[int]
    # per column, the field its non-empty value is kept as (None: dropped), when no two columns
    # give one field, none is a fallback and none holds further emails or phones: the row then
    # maps column by column; None when `map_fields` must weigh the columns against each other
    direct: tuple[str | None, ...] | None


@lru_cache(maxsize=1024)
def _header_plan(headers: tuple[str, ...], explicit: tuple[tuple[str, str], ...]) -> HeaderPlan:
    by_key = {header_key(k): v for k, v in explicit}
    layout = detect_layout(headers) or ""
    own, weak = _LAYOUTS.get(layout, {}), _FALLBACKS.get(layout, set())
    keys = [header_key(h) for h in headers]
    fields = tuple(
        by_key.get(k) or own.get(k) or canonical_field(h)
        for h, k in zip(headers, keys, strict=True)
    )
    fallback = frozenset(i for i, k in enumerate(keys) if k in weak and k not in by_key)
    kept = [f for f in fields if f not in (None, IGNORE)]
    plain = len(set(kept)) == len(kept) and not fallback and _OTHERS.isdisjoint(headers)
    direct = tuple(None if f == IGNORE else f for f in fields) if plain else None
    return HeaderPlan(fields, fallback, direct)


def header_plan(headers: Sequence[str], explicit: Mapping[str, str] | None = None) -> HeaderPlan:
    """Each column's meaning in one header row, computed once per distinct row."""
    return _header_plan(tuple(headers), tuple((explicit or {}).items()))


# a row may carry several addresses or numbers (work, mobile, E-mail 2): the first is the
# contact's, the others are kept beside it
MULTI_VALUED = {"email": "other_emails", "phone": "other_phones"}
_OTHERS = frozenset(MULTI_VALUED.values())


def map_fields(
    values: Mapping[str, Any], explicit: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Canonical field → value; an explicit column map wins; the first non-empty value is kept.

    The header row's vendor layout is detected once per distinct row, so a header that means
    one thing in a layout and another elsewhere (Outlook's "Title" is a salutation, LinkedIn's
    "URL" a profile link) is read as its layout means it; a layout's fallback column (Google's
    formatted address) fills its field only when no other column does. Further emails and phones
    of the row come back as lists under `other_emails` and `other_phones`.
    """
    plan = _header_plan(tuple(values), tuple(explicit.items()) if explicit else ())
    if plan.direct is not None:
        return {
            canon: value
            for canon, value in zip(plan.direct, values.values(), strict=True)
            if canon is not None
            and value is not None
            and not (isinstance(value, str) and not value.strip())
        }
    out: dict[str, Any] = {}
    last_resort: dict[str, Any] = {}
    for i, ((header, value), canon) in enumerate(zip(values.items(), plan.fields, strict=True)):
        if canon is None and header in _OTHERS and isinstance(value, list):
            out.setdefault(header, []).extend(v for v in value if v not in out.get(header, []))
            continue
        if (
            canon in (None, IGNORE)
            or value is None
            or (isinstance(value, str) and not value.strip())
        ):
            continue
        if i in plan.fallback:
            last_resort.setdefault(canon, value)
        elif canon not in out:
            out[canon] = value
        elif canon in MULTI_VALUED and str(value).strip() != str(out[canon]).strip():
            extra = out.setdefault(MULTI_VALUED[canon], [])
            if value not in extra:
                extra.append(value)
    for canon, value in last_resort.items():
        out.setdefault(canon, value)
    return out


def received_at_column(
    header: Sequence[str], explicit: Mapping[str, str] | None = None, named: str | None = None
) -> int | None:
    """Which column of a header dates its rows: the one the config names, else one the column
    map sends to `received_at`, else the first whose header means `received_at`."""
    keys = [header_key(h) for h in header]
    if named:
        return keys.index(header_key(named)) if header_key(named) in keys else None
    by_key = {header_key(k): v for k, v in (explicit or {}).items()}
    for i, k in enumerate(keys):
        if by_key.get(k) == "received_at":
            return i
    for i, (h, k) in enumerate(zip(header, keys, strict=True)):
        if h and k not in by_key and canonical_field(h) == "received_at":
            return i
    return None


IDENTIFYING = frozenset({"email", "phone", "full_name", "first_name", "last_name"})
# Typeform answer types whose value says what it is, whatever the field's ref
_TYPEFORM_TYPES = {"email": "email", "phone_number": "phone", "url": "website"}


def header_scorer(
    explicit: Mapping[str, str] | None = None,
) -> Callable[[Sequence[str]], tuple[int, bool]]:
    """For a candidate header row: (cells naming a known field, whether any identifies a person)."""
    by_key = {header_key(k): v for k, v in (explicit or {}).items()}

    def score(cells: Sequence[str]) -> tuple[int, bool]:
        canon = [by_key.get(header_key(c)) or canonical_field(c) for c in cells if c]
        known = [c for c in canon if c]
        return len(known), any(c in IDENTIFYING for c in known)

    return score


def _typeform_value(answer: Mapping[str, Any]) -> Any:
    kind = str(answer.get("type") or "")
    value = answer.get(kind)
    if kind == "choice" and isinstance(value, Mapping):
        return value.get("label") or value.get("other")
    if kind == "choices" and isinstance(value, Mapping):
        labels = list(value.get("labels") or [])
        return ", ".join(str(x) for x in [*labels, value.get("other")] if x)
    if kind == "payment" and isinstance(value, Mapping):
        return value.get("amount")
    return value


def flatten_submission(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A form submission's answers as one flat {field: value}, whatever shape the provider used.

    HubSpot and most tools: `values`/`fields` as [{name, value}] or a mapping. Typeform:
    `answers` as [{field: {ref, id}, type, <type>: value}] keyed by the field's ref, plus
    `hidden` fields; an email, phone or url answer also counts as that field by its type.
    """
    flat: dict[str, Any] = {}
    fields = payload.get("fields", payload.get("data"))
    if isinstance(fields, Mapping):
        flat.update(fields)
    by_type: dict[str, Any] = {}
    for key in ("values", "answers", "fields"):
        items = payload.get(key)
        if not isinstance(items, list):
            continue
        for item in items:
            if not isinstance(item, Mapping):
                continue
            if "name" in item:
                flat.setdefault(str(item["name"]), item.get("value"))
            elif isinstance(item.get("field"), Mapping):
                ref = item["field"].get("ref") or item["field"].get("id")
                value = _typeform_value(item)
                if ref:
                    flat.setdefault(str(ref), value)
                canon = _TYPEFORM_TYPES.get(str(item.get("type")))
                if canon:
                    by_type.setdefault(canon, value)
    hidden = payload.get("hidden")
    if isinstance(hidden, Mapping):
        for k, v in hidden.items():
            flat.setdefault(str(k), v)
    for k, v in payload.items():
        if not isinstance(v, Mapping | list):
            flat.setdefault(k, v)
    mapped = {canonical_field(k) for k in flat}
    for canon, v in by_type.items():
        if canon not in mapped:
            flat.setdefault(canon, v)
    return flat
