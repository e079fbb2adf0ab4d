"""Which raw field means what: header aliases in many languages, mapped onto canonical fields."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
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
        "display name",
        "file as",
        "contact full name",
        "full_name",
        "nom et prenom",
        "nombre y apellidos",
        "name des kontakts",
        "ad ve soyad",
        "adiniz soyadiniz",
        "musteri adi",
        "kontaktname",
    ),
    "first_name": (
        "given names",
        "forename",
        "forenames",
        "first given name",
        "rufname",
        "ilk ad",
        "first name",
        "firstname",
        "given name",
        "ad",
        "adi",
        "vorname",
        "prenom",
        "nombre",
        "fname",
        "first_name",
        "nombre de pila",
        "adiniz",
    ),
    "last_name": (
        "family names",
        "familienname",
        "zuname",
        "aile adi",
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
        "last_name",
        "nom de famille",
        "soyadiniz",
        "soyisim",
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
        "e-mail 2 - value",
        "e-mail adresi",
        "mail adresi",
        "email_address",
        "emailaddress",
        "adresse e-mail",
        "adresse email",
        "adresse courriel",
        "direccion de correo",
        "direccion de correo electronico",
        "e mail",
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
        "mobilephone",
        "mobile phone number",
        "home phone",
        "primary phone",
        "mobilnummer",
        "mobiltelefon",
        "numero de telephone",
        "portable",
        "telefono movil",
        "celular",
        "cep tel",
        "cep no",
        "telefon no",
        "is telefonu",
        "phone_number",
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
        "organization name",
        "company_name",
        "firma adi",
        "nom de l entreprise",
        "nombre de la empresa",
        "kurum adi",
        "isletme",
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
        "organization title",
        "jobtitle",
        "job_title",
        "unvani",
        "gorevi",
        "fonction",
        "titre du poste",
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
        "website url",
        "web page",
        "website 1 - value",
        "site internet",
        "internet",
    ),
    "street": (
        "address line1",
        "address 1",
        "address1",
        "adres satiri 1",
        "adres 1",
        "adresszeile 1",
        "street name",
        "strassenname",
        "cadde sokak",
        "sokak",
        "cadde",
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
        "address 1 - formatted",
        "business street",
        "home street",
        "street_address",
        "address line 1",
        "calle",
        "postal address",
        "mailing address",
    ),
    "city": (
        "suburb",
        "locality",
        "town city",
        "semt",
        "ortsteil",
        "wohnort",
        "mahalle",
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
        "business city",
        "home city",
        "il ilce",
        "localidad",
        "poblacion",
    ),
    "postal_code": (
        "post code",
        "postal zip",
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
        "business postal code",
        "home postal code",
        "zip/postal code",
        "postalcode",
        "mailingpostalcode",
        "postal_code",
        "cp",
    ),
    "street_number": (
        "street number",
        "street no",
        "house number",
        "house no",
        "building number",
        "hausnummer",
        "hausnr",
        "hnr",
        "kapi no",
        "kapi numarasi",
        "bina no",
        "dis kapi no",
    ),
    "address_line2": (
        "address line 2",
        "address line2",
        "address 2",
        "address2",
        "adres satiri 2",
        "adres 2",
        "adresszeile 2",
        "adresszusatz",
        "apartment",
        "apt suite",
        "daire",
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
        "state/region",
        "state/province",
        "business state",
        "home state",
        "address 1 - region",
        "departement",
        "comunidad autonoma",
        "eyalet",
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
        "business country/region",
        "home country/region",
        "country_code",
    ),
    "birth_date": (
        "date of birth dd mm yyyy",
        "birth_date",
        "date_of_birth",
        "geb datum",
        "geboren am",
        "dogum",
        "birth date",
        "birthday",
        "date of birth",
        "dob",
        "dogum tarihi",
        "geburtsdatum",
        "date de naissance",
        "fecha de nacimiento",
        "birthdate",
        "dogum gunu",
        "geburtstag",
        "cumpleanos",
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
    # When the person reached us (the row's own date): it dates the record instead of the file.
    "received_at": (
        "received_at",
        "received at",
        "received",
        "created",
        "created at",
        "created on",
        "created date",
        "date created",
        "creation date",
        "submitted",
        "submitted at",
        "submitted on",
        "submission date",
        "submission time",
        "submit date",
        "signed up",
        "signed up at",
        "signup date",
        "sign up date",
        "registered at",
        "registration date",
        "timestamp",
        "date",
        "kayit tarihi",
        "olusturma tarihi",
        "olusturulma tarihi",
        "basvuru tarihi",
        "gonderim tarihi",
        "tarih",
        "erstellt am",
        "erstellt",
        "erstellungsdatum",
        "anmeldedatum",
        "registriert am",
        "eingegangen am",
        "datum",
    ),
}


@lru_cache(maxsize=16384)
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
