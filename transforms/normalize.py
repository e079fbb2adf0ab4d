"""Normalize raw records into contacts: names, emails, phones, companies, countries, consent."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

import email_validator
import phonenumbers
import pycountry
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import EMAIL_MAX_LENGTH
from email_validator.syntax import validate_email_local_part

from transforms.fields import flatten_submission, map_fields
from transforms.mail_fields import contact_fields
from transforms.phones import number_kind, parse_number
from transforms.records import Contact, RawRow, Reject
from transforms.vcard import vcard_fields

ROLE_LOCALPARTS = frozenset(
    "info sales admin contact hello support office noreply no-reply marketing team mail "
    "bilgi iletisim satis destek muhasebe kontakt vertrieb service billing webmaster hr".split()
)
FREE_DOMAINS = frozenset(
    "gmail.com googlemail.com hotmail.com hotmail.com.tr outlook.com live.com msn.com yahoo.com "
    "yahoo.de yandex.com yandex.com.tr mail.ru gmx.de gmx.net web.de t-online.de icloud.com "
    "me.com aol.com protonmail.com proton.me mynet.com freenet.de".split()
)
DISPOSABLE_DOMAINS = frozenset(
    "mailinator.com guerrillamail.com 10minutemail.com tempmail.com temp-mail.org "
    "yopmail.com trashmail.com sharklasers.com throwawaymail.com getnada.com".split()
)
LEGAL_SUFFIXES = (
    "a.ş.",
    "a.s.",
    "aş",
    "ltd. şti.",
    "ltd.şti.",
    "ltd şti",
    "ltd",
    "şti.",
    "şti",
    "gmbh",
    "gmbh & co. kg",
    "kg",
    "ag",
    "inc.",
    "inc",
    "llc",
    "l.l.c.",
    "corp.",
    "corp",
    "co.",
    "s.a.",
    "sa",
    "s.r.l.",
    "srl",
    "s.l.",
    "plc",
    "limited",
    "s.p.a.",
    "spa",
    "b.v.",
    "bv",
    "n.v.",
    "nv",
    "sp. z o.o.",
    "s.a.s.",
    "sas",
    "sarl",
    "s.à r.l.",
    "ug",
    "e.k.",
    "e.v.",
    "oy",
    "ab",
    "as",
    "a/s",
    "pty ltd",
    "pty",
    "company",
    "holding",
    "sanayi ve ticaret",
    "san. ve tic. ltd. şti.",
    "san. ve tic. a.ş.",
    "san. ve tic.",
    "san. tic.",
    "tic.",
)
_TR_LETTERS = set("İıŞşĞğ")
_COUNTRY_NAMES = {
    "turkiye": "TR",
    "turkey": "TR",
    "turkei": "TR",
    "turquie": "TR",
    "turquia": "TR",
    "tr": "TR",
    "almanya": "DE",
    "germany": "DE",
    "deutschland": "DE",
    "allemagne": "DE",
    "alemania": "DE",
    "avusturya": "AT",
    "osterreich": "AT",
    "austria": "AT",
    "isvicre": "CH",
    "schweiz": "CH",
    "switzerland": "CH",
    "ingiltere": "GB",
    "uk": "GB",
    "united kingdom": "GB",
    "england": "GB",
    "usa": "US",
    "abd": "US",
    "united states": "US",
    "fransa": "FR",
    "frankreich": "FR",
    "hollanda": "NL",
    "niederlande": "NL",
    "italya": "IT",
    "italien": "IT",
    "ispanya": "ES",
    "spanien": "ES",
    "spain": "ES",
    "espana": "ES",
    "france": "FR",
    "francia": "FR",
    "netherlands": "NL",
    "the netherlands": "NL",
    "holland": "NL",
    "nederland": "NL",
    "italy": "IT",
    "italia": "IT",
    "schweiz suisse": "CH",
    "suisse": "CH",
    "svizzera": "CH",
    "great britain": "GB",
    "grossbritannien": "GB",
    "vereinigtes konigreich": "GB",
    "birlesik krallik": "GB",
    "u.s.a": "US",
    "united states of america": "US",
    "vereinigte staaten": "US",
    "amerika": "US",
    "russia": "RU",
    "rusya": "RU",
    "russland": "RU",
    "rossiya": "RU",
    "yunanistan": "GR",
    "griechenland": "GR",
    "greece": "GR",
    "bulgaristan": "BG",
    "bulgarien": "BG",
    "polonya": "PL",
    "polen": "PL",
    "belcika": "BE",
    "belgien": "BE",
    "belgique": "BE",
    "danimarka": "DK",
    "danemark": "DK",
    "isvec": "SE",
    "schweden": "SE",
    "norvec": "NO",
    "norwegen": "NO",
    "azerbaycan": "AZ",
    "aserbaidschan": "AZ",
    "kibris": "CY",
    "zypern": "CY",
    "birlesik arap emirlikleri": "AE",
    "bae": "AE",
    "uae": "AE",
    "suudi arabistan": "SA",
    "mısır": "EG",
    "misir": "EG",
    "agypten": "EG",
    "iran": "IR",
    "irak": "IQ",
    "cin": "CN",
    "china": "CN",
    "japonya": "JP",
    "japan": "JP",
    "kanada": "CA",
    "tschechien": "CZ",
    "cekya": "CZ",
    "macaristan": "HU",
    "ungarn": "HU",
    "romanya": "RO",
    "rumanien": "RO",
    "ukrayna": "UA",
    "portekiz": "PT",
    "irlanda": "IE",
    "irland": "IE",
    "luksemburg": "LU",
    "luxemburg": "LU",
    "turkiye cumhuriyeti": "TR",
    "turk": "TR",
    "deutsch": "DE",
    "brd": "DE",
    "federal republic of germany": "DE",
}


@dataclass(frozen=True, slots=True)
class NormalizeOptions:
    default_region: str = "TR"
    internal_domains: frozenset[str] = frozenset()
    columns: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # source → map


def fold(text: str) -> str:
    """ASCII-folded lower-case key, for matching only (ı→i, ß→ss, accents dropped)."""
    text = text.replace("ı", "i").replace("İ", "I").replace("ß", "ss")
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c)).casefold()


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).replace("\x00", "").split())
    return text or None


def _cap_word(word: str, turkish: bool) -> str:
    def low(s: str) -> str:
        return s.replace("I", "ı").replace("İ", "i").lower() if turkish else s.lower()

    def up(s: str) -> str:
        return s.replace("i", "İ").replace("ı", "I").upper() if turkish else s.upper()

    parts = re.split(r"([-'’])", word)
    out = []
    for p in parts:
        if p in {"-", "'", "’"} or not p:
            out.append(p)
            continue
        lowered = low(p)
        if lowered.startswith("mc") and len(lowered) > 2:
            out.append("Mc" + _up_one(lowered[2], up) + lowered[3:])
        else:
            out.append(_up_one(lowered[0], up) + lowered[1:])
    return "".join(out)


def _up_one(letter: str, up: Callable[[str], str]) -> str:
    # ß and ligatures (ﬁ) upper-case to two letters; kept as they are, a second pass agrees
    capital = up(letter)
    return capital if len(capital) == 1 else letter


_PARTICLES = {"von", "van", "der", "den", "de", "da", "di", "du", "la", "le", "zu", "ten", "ter"}
_TITLES = {
    "dr",
    "prof",
    "mr",
    "mrs",
    "ms",
    "miss",
    "herr",
    "frau",
    "bay",
    "bayan",
    "sn",
    "sayin",
    "dipl",
    "ing",
    "mag",
    "av",
    "op",
}
_SUFFIXES = {"jr", "sr", "ii", "iii", "iv", "phd", "md"}


def _is_upper(token: str) -> bool:
    # ß has no capital in common use: "WEIß" is an upper-case word, but "Aß" is just capitalised,
    # so ß neither counts nor disqualifies.
    letters = [c for c in token if c.isalpha() and c != "ß"]
    return len(letters) > 1 and all(c.isupper() for c in letters)


@lru_cache(maxsize=65536)
def split_name(raw: str, country: str | None = None) -> tuple[str | None, str | None, str | None]:
    """(first, last, full) from one name string, with casing that respects the language."""
    text = _clean(raw)
    if not text:
        return None, None, None
    if "," in text:
        last, _, first = text.partition(",")
        text = f"{first.strip()} {last.strip()}".replace(",", " ").strip()
    turkish = country == "TR" or any(c in _TR_LETTERS for c in text)
    # punctuation alone (a stray comma, a dash between names) is not a part of the name
    tokens = [
        t for t in text.split() if fold(t.strip(".")) not in _TITLES and any(c.isalnum() for c in t)
    ]
    while tokens and fold(tokens[-1].strip(".")) in _SUFFIXES:
        tokens.pop()
    rest = tokens[1:]
    if (
        rest
        and _is_upper(tokens[0])
        and not any(_is_upper(t) for t in rest)
        and any(c.isalpha() for t in rest for c in t)
    ):
        # Registers and badges write "YILMAZ Mehmet": the capitalised word is the surname
        # (a given name is needed for that: "AB 0" is left as written).
        tokens = tokens[1:] + tokens[:1]
        # ... unless it was a suffix ("II Ab"): at the end it is one, and the output must
        # split the same way again
        while tokens and fold(tokens[-1].strip(".")) in _SUFFIXES:
            tokens.pop()
    if not tokens:
        return None, None, None
    if not any(c.isalpha() for c in "".join(tokens)):
        return None, None, None
    cased = [
        t.casefold() if t.casefold() in _PARTICLES and i else _cap_word(t, turkish)
        for i, t in enumerate(tokens)
    ]
    if len(cased) == 1:
        return cased[0], None, cased[0]
    split_at = len(cased) - 1
    while split_at > 1 and cased[split_at - 1] in _PARTICLES:
        split_at -= 1
    first, last = " ".join(cased[:split_at]), " ".join(cased[split_at:])
    return first, last, f"{first} {last}"


def name_key(first: str | None, last: str | None) -> str | None:
    if not first and not last:
        return None
    return " ".join(fold(p) for p in (first, last) if p)


# A plain ASCII dot-atom local part: email_validator accepts it as it is, so only the domain
# (which repeats across many addresses) needs its checks, once per domain.
_DOT_ATOM = re.compile(r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*")


@lru_cache(maxsize=16384)
def _domain_parts(domain: str) -> tuple[str, str] | None:
    """(domain, ASCII domain) as email_validator normalizes them, or None when it refuses it."""
    try:
        info = validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return None
    return info.domain, info.ascii_domain


def _local_part(local: str) -> tuple[str, str | None] | None:
    """(local part, ASCII local part) as `validate_email` makes them from an unquoted local
    part, by its own checks under its defaults, or None when it refuses it. (Its lower-casing
    of postmaster@ and the like is left out: every local part is lower-cased after this.)"""
    options = {
        "allow_smtputf8": email_validator.ALLOW_SMTPUTF8,
        "allow_empty_local": email_validator.ALLOW_EMPTY_LOCAL,
        "quoted_local_part": False,
        "strict": email_validator.STRICT,
    }
    try:
        info = validate_email_local_part(local, **options)
        normalized = unicodedata.normalize("NFC", local)
        if normalized != local:
            info = validate_email_local_part(normalized, **options)
    except EmailNotValidError:
        return None
    return info["local_part"], info["ascii_local_part"]


def _simple_address(text: str) -> tuple[str, str, str] | None:
    """(local, domain, ASCII domain) of an address without quotes or a display name, ("", "",
    "") for an invalid one, or None when it needs email_validator's full treatment.

    With one '@' and no '"' or '<' before it, `validate_email` splits the address there and
    checks the local part and the domain each on its own: the domain's checks (which repeat
    across many addresses) run once per domain, the local part's only when it is no plain
    ASCII dot-atom (which it accepts as it is)."""
    local, at, domain = text.rpartition("@")
    if not at or "@" in local or '"' in local or "<" in local:
        return None
    if len(local) <= 64 and _DOT_ATOM.fullmatch(local):
        parts = _domain_parts(domain)
        if parts is None:
            return "", "", ""
        if len(local) + 1 + len(parts[1]) > 254:
            return None
        return local, parts[0], parts[1]
    part, parts = _local_part(local), _domain_parts(domain)
    if part is None or parts is None:
        return "", "", ""
    # the lengths `validate_email` checks: as written, normalized, with the ASCII domain
    written, normalized = text, f"{part[0]}@{parts[0]}"
    ascii_domain = f"{part[1] or part[0]}@{parts[1]}"
    if any(len(a.encode()) > EMAIL_MAX_LENGTH for a in (written, normalized, ascii_domain)):
        return None
    return part[0], parts[0], parts[1]


@lru_cache(maxsize=65536)
def normalize_email(raw: str) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(email, matching key, issues). The key folds Gmail dots and +tags, googlemail → gmail."""
    text = raw.strip().strip("<>\"' ").replace(" ", "")
    if text.lower().startswith("mailto:"):
        # what follows the scheme is trimmed like the whole value, so the result trims to itself
        text = text[7:].strip("<>\"'")
    text = text.split("?")[0].strip("<>")
    if not text:
        return None, None, ()
    parts = _simple_address(text)
    if parts is None:
        try:
            info = validate_email(text, check_deliverability=False)
        except EmailNotValidError:
            return None, None, ("email_invalid",)
        parts = info.local_part, info.domain, info.ascii_domain
    elif not parts[1]:
        return None, None, ("email_invalid",)
    local, domain = parts[0], parts[2].lower()
    email = f"{local.lower()}@{parts[1].lower()}"
    key_local = local.lower()
    if domain in {"gmail.com", "googlemail.com"}:
        domain = "gmail.com"
        key_local = key_local.split("+")[0].replace(".", "")
    else:
        key_local = key_local.split("+")[0]
    # "+tag@…" has nothing before its tag: the whole local part is the key, or it is no address
    key_local = key_local or local.lower()
    return email, f"{key_local}@{domain}", ()


def email_flags(email_key: str | None) -> tuple[bool, bool, bool]:
    if not email_key:
        return False, False, False
    local, _, domain = email_key.partition("@")
    return local in ROLE_LOCALPARTS, domain in FREE_DOMAINS, domain in DISPOSABLE_DOMAINS


_EXTENSION = re.compile(r"\s*(?:ext\.?|extension|x|dahili|durchwahl|dw\.?|#)\s*(\d{1,6})\s*$", re.I)
_MOBILE_TYPES = frozenset({phonenumbers.PhoneNumberType.MOBILE})
_FIXED_TYPES = frozenset({phonenumbers.PhoneNumberType.FIXED_LINE})


@dataclass(frozen=True, slots=True)
class Phone:
    """A parsed phone number: E.164 (None if invalid), extension, mobile or not, issues."""

    e164: str | None
    extension: str | None
    is_mobile: bool | None
    issues: tuple[str, ...]


@lru_cache(maxsize=65536)
def parse_phone(raw: str, region: str) -> Phone:
    """E.164 for a valid number in the contact's region, its extension and whether it is mobile."""
    text = _clean(raw)
    if not text:
        return Phone(None, None, None, ())
    ext = None
    m = _EXTENSION.search(text)
    if m:
        ext, text = m.group(1), text[: m.start()]
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        num = parse_number(text, region)
    except phonenumbers.NumberParseException:
        return Phone(None, ext, None, ("phone_unparseable",))
    ext = ext or num.extension or None
    kind = number_kind(num)
    if kind is None:
        bare = re.sub(r"[\s().-]", "", text)
        if bare.isdigit() and len(bare) >= 11 and bare[0] != "0":
            # marketing tools (Brevo's SMS, WhatsApp) write the country code without its "+"
            again = parse_phone("+" + bare, region)
            if again.e164:
                return Phone(again.e164, ext or again.extension, again.is_mobile, ())
        return Phone(None, ext, None, ("phone_invalid",))
    mobile = True if kind in _MOBILE_TYPES else False if kind in _FIXED_TYPES else None
    e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    return Phone(e164, ext, mobile, ())


def normalize_phone(raw: str, region: str) -> tuple[str | None, tuple[str, ...]]:
    """E.164 for a valid number, else None with an issue; the raw text is kept by the caller."""
    p = parse_phone(raw, region)
    return p.e164, p.issues


@lru_cache(maxsize=4096)
def normalize_country(raw: str) -> str | None:
    key = fold(raw).strip(" .")
    if key in _COUNTRY_NAMES:
        return _COUNTRY_NAMES[key]
    if len(key) == 2 and pycountry.countries.get(alpha_2=key.upper()):
        return key.upper()
    try:
        return str(pycountry.countries.lookup(raw.strip()).alpha_2)
    except LookupError:
        return None


@lru_cache(maxsize=16384)
def company_key(raw: str) -> str | None:
    """A matching key: folded, legal form dropped ("Işık Tekstil A.Ş." → "isik tekstil").

    Dropping punctuation can expose a legal form ("X:GmbH" → "x gmbh"), so it repeats until
    the key no longer changes: a key is its own key.
    """
    key = _company_key_once(raw)
    while key:
        again = _company_key_once(key)
        if again == key:
            break
        key = again
    return key


def _company_key_once(raw: str) -> str | None:
    text = raw.casefold().replace("ı", "i")
    changed = True
    while changed:
        changed = False
        for suffix in LEGAL_SUFFIXES:
            if text.endswith(" " + suffix) or text.endswith("," + suffix):
                text = text[: -len(suffix) - 1].rstrip(" ,")
                changed = True
    key = re.sub(r"[^a-z0-9]+", " ", fold(text)).strip()
    return key or None


def _domain_of(website: str | None) -> str | None:
    if not website:
        return None
    host = re.sub(r"^[a-z]+://", "", website.strip().lower()).split("/")[0].split(":")[0]
    host = host.removeprefix("www.")
    return host if "." in host else None


_AMOUNT = re.compile(r"(\d[\d.,]*)\s*(k|bin|tausend|m|mio|milyon)?", re.I)
_CURRENCIES = {
    "€": "EUR",
    "eur": "EUR",
    "euro": "EUR",
    "$": "USD",
    "usd": "USD",
    "₺": "TRY",
    "tl": "TRY",
    "try": "TRY",
    "£": "GBP",
    "gbp": "GBP",
}


def parse_budget(raw: Any) -> tuple[float | None, str | None]:
    if isinstance(raw, int | float):
        return float(raw), None
    text = _clean(raw)
    if not text:
        return None, None
    return _parse_budget_text(text)


@lru_cache(maxsize=16384)
def _parse_budget_text(text: str) -> tuple[float | None, str | None]:
    low = text.casefold()
    currency = next((c for s, c in _CURRENCIES.items() if s in low), None)
    m = _AMOUNT.search(text)
    if not m:
        return None, currency
    digits = m.group(1).rstrip(".,")
    if re.fullmatch(r"\d{1,3}([.,]\d{3})+", digits):
        digits = re.sub(r"[.,]", "", digits)
    else:
        digits = digits.replace(",", ".")
    try:
        amount = float(digits)
    except ValueError:
        return None, currency
    mult = (m.group(2) or "").casefold()
    if mult in {"k", "bin", "tausend"}:
        amount *= 1_000
    elif mult in {"m", "mio", "milyon"}:
        amount *= 1_000_000
    return amount, currency


def parse_timeline(raw: Any) -> int | None:
    """Months until the intended purchase, from '3 months', '2 ay', 'sofort', 'this quarter'."""
    text = _clean(raw)
    return _parse_timeline_text(text) if text else None


@lru_cache(maxsize=16384)
def _parse_timeline_text(text: str) -> int | None:
    low = fold(text)
    if any(w in low for w in ("immediate", "asap", "now", "hemen", "sofort", "acil")):
        return 0
    m = re.search(
        r"(\d+)\s*(-\s*\d+\s*)?(month|ay|monat|mois|mes|week|hafta|woche|year|yil|jahr)", low
    )
    if m:
        n = int(m.group(1))
        unit = m.group(3)
        if unit in {"week", "hafta", "woche"}:
            return max(0, n // 4)
        if unit in {"year", "yil", "jahr"}:
            return n * 12
        return n
    if "quarter" in low or "ceyrek" in low or "quartal" in low:
        return 3
    if "next year" in low or "gelecek yil" in low or "nachstes jahr" in low:
        return 12
    return None


def parse_consent(raw: Any) -> bool | None:
    if isinstance(raw, bool):
        return raw
    text = _clean(raw)
    if not text:
        return None
    low = fold(text)
    if low in {"yes", "y", "true", "1", "evet", "ja", "oui", "si", "x", "on", "accepted", "kabul"}:
        return True
    if low in {"no", "n", "false", "0", "hayir", "nein", "non", "off"}:
        return False
    return None


_MONTHS = {
    **dict.fromkeys(("jan", "january", "januar", "ocak", "janvier", "enero"), 1),
    **dict.fromkeys(("feb", "february", "februar", "subat", "fevrier", "febrero"), 2),
    **dict.fromkeys(("mar", "march", "marz", "mart", "mars", "marzo"), 3),
    **dict.fromkeys(("apr", "april", "nisan", "avril", "abril"), 4),
    **dict.fromkeys(("may", "mai", "mayis", "mayo"), 5),
    **dict.fromkeys(("jun", "june", "juni", "haziran", "juin", "junio"), 6),
    **dict.fromkeys(("jul", "july", "juli", "temmuz", "juillet", "julio"), 7),
    **dict.fromkeys(("aug", "august", "agustos", "aout", "agosto"), 8),
    **dict.fromkeys(("sep", "sept", "september", "eylul", "septembre", "septiembre"), 9),
    **dict.fromkeys(("oct", "october", "okt", "oktober", "ekim", "octobre", "octubre"), 10),
    **dict.fromkeys(("nov", "november", "kasim", "novembre", "noviembre"), 11),
    **dict.fromkeys(("dec", "december", "dez", "dezember", "aralik", "decembre", "diciembre"), 12),
}
_NUMERIC_DATE = re.compile(r"^(\d{1,4})[./-](\d{1,2})[./-](\d{1,4})$")
_WORD_DATE = re.compile(
    r"^(\d{1,2})\.?\s+([a-z]+)\.?,?\s+(\d{4})$|^([a-z]+)\.?\s+(\d{1,2}),?\s+(\d{4})$"
)


@lru_cache(maxsize=16384)
def _parse_date_text(text: str) -> date | None:
    """'2024-03-05', '05.03.2024', '5/3/2024' (day first), '5 Mart 2024', 'March 5, 2024', or
    the date of a timestamp."""
    day = _calendar_date(text)
    if day is not None:
        return day
    dt = parse_datetime(text)
    return dt.date() if dt else None


def _calendar_date(text: str) -> date | None:
    t = fold(text).strip()
    m = _NUMERIC_DATE.match(t)
    try:
        if m:
            a, b, c = (int(x) for x in m.groups())
            if len(m.group(1)) == 4:
                return date(a, b, c)
            year = c if c >= 100 else (2000 + c if c < 50 else 1900 + c)
            # Day first, as everywhere the sources come from, unless that cannot be a date.
            return date(year, b, a) if b <= 12 else date(year, a, b)
        m = _WORD_DATE.match(t)
        if m:
            d, mon, y = (m.group(1), m.group(2), m.group(3)) if m.group(1) else m.group(5, 4, 6)
            month = _MONTHS.get(mon[:3] if mon[:3] in _MONTHS and mon not in _MONTHS else mon)
            return date(int(y), month, int(d)) if month else None
    except ValueError:
        return None
    return None


def parse_date(raw: Any) -> date | None:
    if isinstance(raw, datetime):
        return raw.date()
    if isinstance(raw, date):
        return raw
    text = _clean(raw)
    return _parse_date_text(text) if text else None


_TZ_NAMES = {
    "utc": "+00:00",
    "gmt": "+00:00",
    "z": "+00:00",
    "trt": "+03:00",
    "cet": "+01:00",
    "cest": "+02:00",
    "est": "-05:00",
    "edt": "-04:00",
    "pst": "-08:00",
    "pdt": "-07:00",
}


# the day-first forms exports write timestamps in (reports, forms, badge scanners)
_DATETIME_FORMATS = (
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d.%m.%Y",
)


def parse_datetime(raw: Any, default_offset: str = "+00:00") -> datetime | None:
    """A timestamp in ISO, RFC 2822 or 'dd.mm.yyyy HH:MM' form, with its zone, as UTC.

    A timestamp without a zone is read in `default_offset` (the source's local offset).
    """
    if isinstance(raw, datetime):
        return (raw if raw.tzinfo else raw.replace(tzinfo=UTC)).astimezone(UTC)
    text = _clean(raw)
    if not text:
        return None
    from email.utils import parsedate_to_datetime

    parts = text.rsplit(" ", 1)
    if len(parts) == 2 and parts[1].casefold() in _TZ_NAMES:
        text, default_offset = parts[0], _TZ_NAMES[parts[1].casefold()]
    iso = text.replace(" ", "T", 1) if re.match(r"^\d{4}-\d{2}-\d{2} \d", text) else text
    candidates: list[datetime] = []
    try:
        candidates.append(datetime.fromisoformat(iso.replace("Z", "+00:00")))
    except ValueError:
        pass
    if not candidates:
        try:
            candidates.append(parsedate_to_datetime(text))
        except (TypeError, ValueError, IndexError):
            pass
    if not candidates:
        for fmt in _DATETIME_FORMATS:
            try:
                candidates.append(datetime.strptime(text, fmt))
                break
            except ValueError:
                continue
    if not candidates:
        # a date alone, as exports write it ("05 Mar 2026", "05/03/2026"): its midnight
        day = _calendar_date(text) if ":" not in text else None
        if day is None:
            return None
        candidates.append(datetime(day.year, day.month, day.day))
    dt = candidates[0]
    if dt.tzinfo is None:
        dt = datetime.fromisoformat(dt.isoformat() + default_offset)
    return dt.astimezone(UTC)


@lru_cache(maxsize=65536)
def _received_text(text: str, default_offset: str) -> datetime | None:
    dt = parse_datetime(text, default_offset)
    if dt is None:
        d = _parse_date_text(text)
        dt = datetime(d.year, d.month, d.day, tzinfo=UTC) if d else None
    # a year before 1970 or far ahead is no arrival time (a birth date, a typo)
    return dt if dt is not None and 1970 <= dt.year <= 2200 else None


def parse_received(raw: Any, default_offset: str = "+00:00") -> datetime | None:
    """When a row says it arrived: a timestamp or a date (in the formats and languages
    `parse_datetime` and `parse_date` read; a bare date is midnight UTC), else None."""
    if isinstance(raw, datetime):
        return parse_datetime(raw)
    if isinstance(raw, date):
        return datetime(raw.year, raw.month, raw.day, tzinfo=UTC)
    text = _clean(raw)
    return _received_text(text, default_offset) if text else None


_POSTAL_FORMATS = {
    "TR": re.compile(r"^\d{5}$"),
    "DE": re.compile(r"^\d{5}$"),
    "AT": re.compile(r"^\d{4}$"),
    "CH": re.compile(r"^\d{4}$"),
    "FR": re.compile(r"^\d{5}$"),
    "IT": re.compile(r"^\d{5}$"),
    "ES": re.compile(r"^\d{5}$"),
    "NL": re.compile(r"^\d{4} ?[A-Z]{2}$"),
    "US": re.compile(r"^\d{5}(-\d{4})?$"),
    "GB": re.compile(r"^[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}$"),
}


@lru_cache(maxsize=65536)
def normalize_postal_code(
    raw: str | None, country: str | None
) -> tuple[str | None, tuple[str, ...]]:
    """Upper-case, no country prefix ('D-10115'); an issue when it does not fit the country."""
    text = " ".join((raw or "").upper().split())
    if not text:
        return None, ()
    if country and text.startswith(country + "-"):
        text = text[3:]
    text = re.sub(r"^[A-Z]-(?=\d)", "", text)
    pattern = _POSTAL_FORMATS.get(country or "")
    if pattern and not pattern.match(text):
        return text, ("postal_code_invalid",)
    return text, ()


_SIG_PHONE = re.compile(
    r"(?:tel|phone|telefon|gsm|mobile|cep|mobil)\s*[.:]?\s*([+()\d][\d ()./-]{6,})", re.I
)
_FORM_LINE = re.compile(
    r"^\s*([A-Za-zÇĞİÖŞÜçğıöşüÄäß][\wÇĞİÖŞÜçğıöşüÄäß -]{1,40}?)\s*:\s*(.+?)\s*$", re.M
)


def _email_fields(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The sender of a mail: a 'Name: … / E-mail: …' notification body wins over From/Reply-To."""
    body = str(payload.get("body") or "")
    form = map_fields({k: v for k, v in _FORM_LINE.findall(body)})
    if form.get("email"):
        return form
    senders = list(payload.get("reply_to") or []) + list(payload.get("from") or [])
    out: dict[str, Any] = {}
    if senders:
        out["full_name"] = senders[0].get("name")
        out["email"] = senders[0].get("email")
    m = _SIG_PHONE.search(body)
    if m:
        out["phone"] = m.group(1)
    out["message"] = body[:4000] or payload.get("subject")
    out.update({k: v for k, v in form.items() if k not in out or not out[k]})
    return out


def extract_fields(row: RawRow, columns: Mapping[str, str] | None = None) -> dict[str, Any]:
    if row.source_kind == "email":
        return map_fields(contact_fields(row.payload), columns)
    if row.source_kind == "webform":
        return map_fields(flatten_submission(row.payload), columns)
    if row.source_kind == "vcard":
        return vcard_fields(str(row.payload.get("vcard") or ""))
    return map_fields(row.payload, columns)


_NO_PHONE = Phone(None, None, None, ())
_DIAL_CODE = re.compile(r"^(?:\+|00)?\s*(\d{1,4})$")


def _dial_code(raw: Any) -> str | None:
    """The digits of a calling code column ("+49", "0049", "90"), or None."""
    m = _DIAL_CODE.match(_clean(raw) or "")
    return m.group(1) if m else None


def _with_dial_code(phone: str, dial_code: str | None) -> str:
    """A national number written beside its calling code, as one international number."""
    if not dial_code or phone.startswith(("+", "00")):
        return phone
    digits = phone.lstrip()
    if digits.startswith(dial_code) and len(re.sub(r"\D", "", digits)) > 10:
        return "+" + digits  # the code was written into the number already
    return f"+{dial_code} {digits.removeprefix('0')}"


def _others(
    f: Mapping[str, Any],
    email: str | None,
    phone: str | None,
    dial_code: str | None,
    region: str,
    issues: list[str],
    v: _Values,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The record's further emails and phones, normalized, without the contact's own; an
    invalid one is an issue (its text stays in the raw payload)."""
    emails: list[str] = []
    for raw in [f.get("email"), *(f.get("other_emails") or [])]:
        if not raw:
            continue
        e = v.email(str(raw))[0]
        if e is None:
            if raw != f.get("email"):
                issues.append("other_email_invalid")
        elif e != email and e not in emails:
            emails.append(e)
    phones: list[str] = []
    for raw in [f.get("phone"), *(f.get("other_phones") or [])]:
        text = v.clean(raw)
        if not text:
            continue
        p = v.phone(text, dial_code, region).e164
        if p is None:
            if raw != f.get("phone"):
                issues.append("other_phone_invalid")
        elif p != phone and p not in phones:
            phones.append(p)
    return tuple(emails), tuple(phones)


def normalize_contact(row: RawRow, opts: NormalizeOptions) -> Contact | Reject:
    """One raw record → a contact, or a reject saying why it identifies nobody."""
    return _contact(row, extract_fields(row, opts.columns.get(row.source)), opts, _DIRECT)


def _contact(
    row: RawRow, f: Mapping[str, Any], opts: NormalizeOptions, v: _Values
) -> Contact | Reject:
    issues: list[str] = []
    if row.source_kind == "email" and row.payload.get("mime_defects"):
        issues.append("malformed_mime")  # the body was broken; the sender came from the headers
    # A field the row does not give is None, and so is each value made of it: most of a row's
    # fields are absent, and skip their normalizers.
    get, clean = f.get, v.clean
    dial_code = v.dial_code(c) if (c := get("phone_country_code")) is not None else None
    country_raw = clean(c) if (c := get("country")) is not None else None
    if country_raw and _DIAL_CODE.match(country_raw):
        # a "Country Code" column holding +49 is the phone's calling code, not a country
        dial_code, country_raw = dial_code or v.dial_code(country_raw), None
    if not country_raw and get("phone_country_code") and not dial_code:
        country_raw = clean(get("phone_country_code"))  # an ISO code ("DE") in that column
    country = v.country(country_raw) if country_raw else None
    if country_raw and not country:
        issues.append("country_unknown")

    if get("first_name") and get("last_name"):
        joined = " ".join(str(f[k]) for k in ("first_name", "last_name"))
        first, last, full = v.name(joined, country)
    elif get("last_name"):
        # A register with the surname alone: it stays the surname, not a first name.
        first, last, full = v.name(str(f["last_name"]), country)
        first, last = None, full
    elif get("first_name"):
        first, last, full = v.name(str(f["first_name"]), country)
    else:
        first, last, full = v.name(str(get("full_name") or ""), country)

    email = ekey = None
    # the first address of the row that is valid is the contact's; the row's others stay in
    # its raw payload
    for i, candidate in enumerate([get("email"), *(get("other_emails") or [])]):
        if not candidate:
            continue
        email, ekey, eissues = v.email(str(candidate))
        if email:
            break
        if i == 0:
            issues += eissues
    is_role, is_free, is_disposable = v.email_flags(ekey)
    if is_disposable:
        issues.append("email_disposable")
    if ekey and ekey.partition("@")[2] in opts.internal_domains:
        return _reject(row, "internal_sender", f"sender {email} is one of our own domains")

    region = country or opts.default_region
    phone_raw, phone = None, _NO_PHONE
    for i, candidate in enumerate([get("phone"), *(get("other_phones") or [])]):
        text = clean(candidate)
        if not text:
            continue
        parsed = v.phone(text, dial_code, region)
        if i == 0 or parsed.e164:
            phone_raw, phone = text, parsed
        if parsed.e164:
            break
    issues += phone.issues
    other_emails: tuple[str, ...] = ()
    other_phones: tuple[str, ...] = ()
    if get("other_emails") or get("other_phones"):
        # without them, the row's only email and phone are the contact's own
        other_emails, other_phones = _others(f, email, phone.e164, dial_code, region, issues, v)

    company = clean(c) if (c := get("company")) is not None else None
    website = clean(c) if (c := get("website")) is not None else None
    domain = v.domain_of(website) if website is not None else None
    if not domain and ekey and not (is_free or is_disposable):
        domain = ekey.partition("@")[2]
    postal = clean(c) if (c := get("postal_code")) is not None else None
    street_parts = get("street"), get("street_number"), get("address_line2")
    street = v.street(*street_parts) if street_parts != (None, None, None) else None
    city = clean(c) if (c := get("city")) is not None else None
    birth_raw = get("birth_date")
    if isinstance(birth_raw, str) and not birth_raw.strip("0/.- "):
        birth_raw = None  # Outlook writes "0/0/00" for no birthday
    birth = v.date(birth_raw) if birth_raw is not None else None
    if birth_raw and birth is None:
        issues.append("birth_date_unparseable")
    has_person_email = bool(ekey) and not is_role
    # A full name is somebody; one name part is with an address (a street and a postal code or
    # city) or with a birth date and a postal code: a person register has no email or phone.
    # A role mailbox (info@, sales@) beside a company name reaches that company: a contact of it,
    # flagged by email_is_role.
    has_company_mailbox = bool(ekey) and is_role and bool(company)
    one_name = bool(first or last)
    place = bool(postal or city)
    has_street = one_name and bool(street) and place
    has_birth = one_name and birth is not None and bool(postal)
    full_name = bool(first and last)
    if not (
        has_person_email
        or phone.e164
        or full_name
        or has_street
        or has_birth
        or (ekey and full)
        or has_company_mailbox
    ):
        reason = (
            "no email, phone or full name, no name part with a street and a postal code or city"
            " or with a birth date and a postal code, and no role mailbox beside a company"
            " identifies a person"
        )
        if issues:
            reason += f" ({', '.join(issues)})"
        return _reject(row, "no_identity", reason)

    if postal is not None:
        postal, pissue = v.postal(postal, country)
        issues += pissue
    budget = v.budget(c) if (c := get("budget")) is not None else (None, None)
    return Contact(
        contact_id=row.raw_id.replace("raw_", "con_", 1),
        raw_id=row.raw_id,
        source=row.source,
        source_kind=row.source_kind,
        received_at=row.received_at,
        first_name=first,
        last_name=last,
        full_name=full,
        name_key=v.name_key(first, last),
        email=email,
        email_key=ekey,
        email_is_role=is_role,
        email_is_free=is_free,
        email_is_disposable=is_disposable,
        phone=phone.e164,
        phone_raw=phone_raw,
        phone_ext=phone.extension,
        phone_is_mobile=phone.is_mobile,
        company=company,
        company_key=v.company_key(company) if company else None,
        company_domain=domain,
        job_title=clean(c) if (c := get("job_title")) is not None else None,
        street=street,
        city=city,
        postal_code=postal,
        region=clean(c) if (c := get("region")) is not None else None,
        country=country,
        birth_date=birth,
        interest=clean(c) if (c := get("interest")) is not None else None,
        message=clean(c) if (c := get("message")) is not None else None,
        budget_amount=budget[0],
        budget_currency=budget[1],
        timeline_months=v.timeline(c) if (c := get("timeline")) is not None else None,
        consent=v.consent(c) if (c := get("consent")) is not None else None,
        issues=tuple(sorted(set(issues))) if issues else (),
        other_emails=other_emails,
        other_phones=other_phones,
    )


def street_line(street: Any, number: Any = None, line2: Any = None) -> str | None:
    """One street line from a register's street, house number and second address line."""
    base, num, extra = _clean(street), _clean(number), _clean(line2)
    if num and base and num not in base.split():
        base = f"{num} {base}"
    elif num and not base:
        base = num if extra else None
    if extra:
        base = f"{base}, {extra}" if base else extra
    return base


def _reject(row: RawRow, code: str, message: str) -> Reject:
    raw = json.dumps(row.payload, ensure_ascii=False, sort_keys=True, default=str)
    return Reject(row.source, row.source_record_id, "normalize", code, message, raw, row.raw_id)


def _phone_of(text: str, dial_code: str | None, region: str) -> Phone:
    """A record's phone text, with the calling code its row wrote beside it, parsed."""
    return parse_phone(_with_dial_code(text, dial_code), region)


@dataclass(frozen=True, slots=True)
class _Values:
    """The per-value normalizers a record is assembled from. One record uses the functions
    themselves; a batch puts each behind a memo of its own, so a value repeated across the
    batch's rows (a company, a country, a name, a budget, a phone in its region) is normalized
    once. Every argument a result depends on is part of its memo key."""

    clean: Callable[[Any], str | None]
    dial_code: Callable[[Any], str | None]
    country: Callable[[str], str | None]
    name: Callable[[str, str | None], tuple[str | None, str | None, str | None]]
    name_key: Callable[[str | None, str | None], str | None]
    email: Callable[[str], tuple[str | None, str | None, tuple[str, ...]]]
    email_flags: Callable[[str | None], tuple[bool, bool, bool]]
    phone: Callable[[str, str | None, str], Phone]
    company_key: Callable[[str], str | None]
    domain_of: Callable[[str | None], str | None]
    street: Callable[[Any, Any, Any], str | None]
    date: Callable[[Any], date | None]
    postal: Callable[[str | None, str | None], tuple[str | None, tuple[str, ...]]]
    budget: Callable[[Any], tuple[float | None, str | None]]
    timeline: Callable[[Any], int | None]
    consent: Callable[[Any], bool | None]


_DIRECT = _Values(
    clean=_clean,
    dial_code=_dial_code,
    country=normalize_country,
    name=split_name,
    name_key=name_key,
    email=normalize_email,
    email_flags=email_flags,
    phone=_phone_of,
    company_key=company_key,
    domain_of=_domain_of,
    street=street_line,
    date=parse_date,
    postal=normalize_postal_code,
    budget=parse_budget,
    timeline=parse_timeline,
    consent=parse_consent,
)


# the normalizers whose arguments come from the payload as it was received: any type, maybe
# one that is no dict key (a list from a JSON form)
_RAW_ARGUMENTS = frozenset(
    {"clean", "dial_code", "street", "date", "budget", "timeline", "consent"}
)


def _memo(fn: Callable[..., Any], raw_arguments: bool) -> Callable[..., Any]:
    """`fn` computed once per distinct arguments, for one batch. A lone string (most cells) is
    its own key; other raw arguments are typed: 1, 1.0 and True are equal keys but not equal
    cells (`_clean` writes "1", "1.0", "True")."""
    cached = lru_cache(maxsize=None)(fn)
    if not raw_arguments:
        return cached
    typed = lru_cache(maxsize=None, typed=True)(fn)

    def call(*args: Any) -> Any:
        if len(args) == 1 and args[0].__class__ is str:
            return cached(*args)  # most cells: no key tuple to build and keep
        try:
            return typed(*args)
        except TypeError:  # an unhashable argument: computed as it is
            return fn(*args)

    return call


def _batch_values() -> _Values:
    """The normalizers behind memos that live as long as one batch: bounded by its size, and
    never shared with a batch normalized under other options."""
    return _Values(
        *(_memo(getattr(_DIRECT, name), name in _RAW_ARGUMENTS) for name in _Values.__slots__)
    )


def normalize_batch(
    rows: Sequence[RawRow], opts: NormalizeOptions
) -> tuple[list[Contact], list[Reject]]:
    """Contacts and rejects for a batch, in the order of the input rows: each record as
    `normalize_contact` makes it, every distinct value of a field normalized once per batch."""
    values = _batch_values()
    contacts: list[Contact] = []
    rejects: list[Reject] = []
    for row in rows:
        out = _contact(row, extract_fields(row, opts.columns.get(row.source)), opts, values)
        if isinstance(out, Contact):
            contacts.append(out)
        else:
            rejects.append(out)
    return contacts, rejects
