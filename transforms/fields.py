"""Which raw field means what: header aliases in many languages, mapped onto canonical fields."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from functools import lru_cache
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
)

_ALIASES: dict[str, tuple[str, ...]] = {
    "full_name": (
        "name",
        "full name",
        "fullname",
        "contact name",
        "ad soyad",
        "adi soyadi",
        "isim",
        "isim soyisim",
        "vollstandiger name",
        "nom complet",
        "nombre completo",
        "your name",
        "contact",
    ),
    "first_name": (
        "first name",
        "firstname",
        "given name",
        "ad",
        "adi",
        "vorname",
        "prenom",
        "nombre",
        "fname",
    ),
    "last_name": (
        "last name",
        "lastname",
        "surname",
        "family name",
        "soyad",
        "soyadi",
        "nachname",
        "nom",
        "apellido",
        "apellidos",
        "lname",
    ),
    "email": (
        "email",
        "e-mail",
        "email address",
        "e-mail address",
        "mail",
        "e posta",
        "eposta",
        "e-posta",
        "e-posta adresi",
        "e-mail-adresse",
        "courriel",
        "correo",
        "correo electronico",
        "primary email",
        "e-mail 1 - value",
        "email 1",
        "your email",
    ),
    "phone": (
        "phone",
        "phone number",
        "telephone",
        "tel",
        "mobile",
        "mobile phone",
        "cell",
        "telefon",
        "telefon numarasi",
        "cep",
        "cep telefonu",
        "gsm",
        "telefonnummer",
        "handy",
        "mobil",
        "telephone portable",
        "telefono",
        "movil",
        "phone 1 - value",
        "business phone",
        "your phone",
    ),
    "company": (
        "company",
        "company name",
        "organization",
        "organisation",
        "firma",
        "sirket",
        "sirket adi",
        "kurum",
        "unternehmen",
        "firmenname",
        "entreprise",
        "societe",
        "empresa",
        "account name",
        "organization 1 - name",
    ),
    "job_title": (
        "title",
        "job title",
        "position",
        "role",
        "unvan",
        "gorev",
        "pozisyon",
        "berufsbezeichnung",
        "position im unternehmen",
        "titel",
        "poste",
        "cargo",
        "puesto",
        "organization 1 - title",
    ),
    "website": (
        "website",
        "web site",
        "url",
        "web",
        "web sitesi",
        "webseite",
        "site web",
        "sitio web",
        "homepage",
    ),
    "street": (
        "street",
        "address",
        "street address",
        "adres",
        "acik adres",
        "strasse",
        "anschrift",
        "adresse",
        "direccion",
        "mailing street",
        "address 1 - street",
    ),
    "city": (
        "city",
        "town",
        "sehir",
        "il",
        "ilce",
        "stadt",
        "ort",
        "ville",
        "ciudad",
        "mailing city",
        "address 1 - city",
    ),
    "postal_code": (
        "postal code",
        "postcode",
        "zip",
        "zip code",
        "posta kodu",
        "plz",
        "postleitzahl",
        "code postal",
        "codigo postal",
        "mailing zip/postal code",
        "address 1 - postal code",
    ),
    "region": (
        "region",
        "state",
        "province",
        "county",
        "bolge",
        "bundesland",
        "provincia",
        "mailing state/province",
    ),
    "country": (
        "country",
        "ulke",
        "land",
        "pays",
        "pais",
        "mailing country",
        "address 1 - country",
        "country/region",
    ),
    "birth_date": (
        "birth date",
        "birthday",
        "date of birth",
        "dob",
        "dogum tarihi",
        "geburtsdatum",
        "date de naissance",
        "fecha de nacimiento",
    ),
    "interest": (
        "interest",
        "product",
        "product interest",
        "interested in",
        "ilgi alani",
        "urun",
        "ilgilendigi urun",
        "produkt",
        "interesse",
        "produit",
        "producto",
        "service",
    ),
    "message": (
        "message",
        "comments",
        "comment",
        "notes",
        "note",
        "mesaj",
        "aciklama",
        "not",
        "nachricht",
        "bemerkung",
        "kommentar",
        "commentaire",
        "mensaje",
        "body",
        "how can we help",
        "description",
    ),
    "budget": (
        "budget",
        "butce",
        "estimated budget",
        "budget range",
        "presupuesto",
        "annual budget",
    ),
    "timeline": (
        "timeline",
        "timeframe",
        "purchase timeframe",
        "when",
        "zaman",
        "zamanlama",
        "satin alma zamani",
        "zeitrahmen",
        "zeitraum",
        "delai",
        "plazo",
    ),
    "consent": (
        "consent",
        "gdpr consent",
        "marketing consent",
        "opt in",
        "optin",
        "kvkk",
        "kvkk onayi",
        "izin",
        "einwilligung",
        "consentement",
        "consentimiento",
        "email opt out",
    ),
}


def header_key(header: str) -> str:
    """Case-, accent-, spacing- and punctuation-insensitive key of a column header."""
    text = header.replace("ı", "i").replace("İ", "I").replace("ß", "ss")
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return re.sub(r"[^a-z0-9]+", " ", text).strip()


_LOOKUP: dict[str, str] = {
    header_key(alias): canon for canon, aliases in _ALIASES.items() for alias in aliases
}
_LOOKUP.update({header_key(c): c for c in CANONICAL})


@lru_cache(maxsize=4096)
def canonical_field(header: str) -> str | None:
    return _LOOKUP.get(header_key(header))


def map_fields(
    values: Mapping[str, Any], explicit: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Canonical field → value; an explicit column map wins; the first non-empty value is kept."""
    out: dict[str, Any] = {}
    by_key = {header_key(k): v for k, v in (explicit or {}).items()}
    for header, value in values.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        canon = by_key.get(header_key(header)) or canonical_field(header)
        if canon is not None and canon not in out:
            out[canon] = value
    return out


def flatten_submission(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A form submission's answers as one flat {field: value}, whatever shape the provider used."""
    flat: dict[str, Any] = {}
    fields = payload.get("fields", payload.get("data"))
    if isinstance(fields, Mapping):
        flat.update(fields)
    for key in ("values", "answers"):
        items = payload.get(key)
        if isinstance(items, list):
            for item in items:
                if isinstance(item, Mapping) and "name" in item:
                    flat.setdefault(str(item["name"]), item.get("value"))
    for k, v in payload.items():
        if not isinstance(v, Mapping | list):
            flat.setdefault(k, v)
    return flat
