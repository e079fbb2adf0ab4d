"""A seeded generator of labelled synthetic contacts for entity-resolution benchmarks.

Each real person (entity) gets attributes; duplicates are re-sightings with the noise real
sources have: typos, case, transliteration (ş→s, ü→ue), nicknames, swapped or "Last, First"
name order, Gmail dots and +tags, another mailbox, phone formats, missing fields, and
name-plus-address-only rows as on fair sign-up sheets. Contacts come out normalized through
the same functions the pipeline uses.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from transforms.normalize import (
    company_key,
    email_flags,
    name_key,
    normalize_email,
    normalize_postal_code,
    parse_phone,
    split_name,
)
from transforms.records import Contact

FIRST = {
    "TR": "Mehmet Ahmet Mustafa Ali Hüseyin Hasan İbrahim İsmail Osman Yusuf Murat Ömer Ramazan "
    "Halil Süleyman Abdullah Mahmut Recep Salih Fatih Kadir Emre Hakan Burak Serkan Gökhan Volkan "
    "Uğur Cem Can Kemal Orhan Erkan Sinan Tolga Onur Barış Çağlar Doğan Eren Fatma Ayşe Emine "
    "Hatice Zeynep Elif Meryem Şerife Zehra Sultan Hanife Merve Özlem Esra Büşra Gül Derya Seda "
    "Aslı Ebru Şule Pınar Tuğba Gizem İrem Ceren Dilek Nur Sibel Yasemin Çiğdem Gülşen Işıl".split(),
    "DE": "Hans Peter Klaus Jürgen Wolfgang Michael Thomas Andreas Stefan Frank Uwe Günter Dieter "
    "Jörg Matthias Sebastian Tobias Florian Lukas Jonas Maximilian Friedrich Johannes Josef "
    "Ursula Monika Petra Sabine Andrea Claudia Susanne Birgit Katharina Julia Anna Lena Sophie "
    "Jana Stefanie Franziska Marie Gisela Renate Ingrid Brigitte Heike Jutta Käthe Bärbel".split(),
    "GB": "John William James Robert Michael David Richard Thomas Christopher Daniel Matthew "
    "Andrew Joseph Edward Samuel Benjamin Anthony Nicholas Steven Alexander Elizabeth Katherine "
    "Margaret Jennifer Susan Sarah Emma Olivia Charlotte Emily Jessica Laura Rachel Hannah".split(),
}
NICK = {
    "Robert": "Bob",
    "William": "Bill",
    "James": "Jim",
    "Michael": "Mike",
    "Thomas": "Tom",
    "Christopher": "Chris",
    "Daniel": "Dan",
    "Andrew": "Andy",
    "Joseph": "Joe",
    "Edward": "Ted",
    "Samuel": "Sam",
    "Benjamin": "Ben",
    "Anthony": "Tony",
    "Nicholas": "Nick",
    "Steven": "Steve",
    "Alexander": "Alex",
    "Elizabeth": "Liz",
    "Katherine": "Kate",
    "Margaret": "Maggie",
    "Jennifer": "Jenny",
    "Susan": "Sue",
    "Johannes": "Hans",
    "Josef": "Sepp",
    "Friedrich": "Fritz",
    "Mehmet": "Memo",
}
LAST_ROOTS = {
    "TR": "Yıl Kara Ak Öz Demir Çelik Şahin Kaya Arslan Doğan Kılıç Aslan Çetin Kurt Koç Özdemir "
    "Er Gül Tür Ay Gök Su Taş Uçar Bal Tekin Günay Yavuz Polat Erdoğan Keskin Ünal Işık Acar".split(),
    "DE": "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Schäfer Koch "
    "Bauer Richter Klein Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann Hartmann "
    "Lange Weiß Krause Lehmann Köhler Maier Huber Kaiser Fuchs Peters Jung Möller Groß".split(),
    "GB": "Smith Jones Taylor Brown Williams Wilson Johnson Davies Robinson Wright Thompson Evans "
    "Walker White Roberts Green Hall Wood Jackson Clarke Patel Hughes Edwards Turner Morris "
    "Martin Cooper Ward Morgan King Baker Harris Lewis Young Allen Mitchell O'Brien McDonald".split(),
}
LAST_SUFFIX = {
    "TR": ["", "maz", "oğlu", "han", "soy", "can", "er", "türk", "kan", "alp", "ay", "gün"],
    "DE": ["", "mann", "er", "-Weber", "-Schulz", "hofer", "berger", "-Lang", "inger"],
    "GB": ["", "son", "-Smith", "ton", "ley", "-Jones", "field", "worth"],
}
CITY = {
    "TR": [("İstanbul", "34"), ("Ankara", "06"), ("İzmir", "35"), ("Bursa", "16"), ("Konya", "42")],
    "DE": [
        ("Berlin", "10"),
        ("Hamburg", "20"),
        ("München", "80"),
        ("Köln", "50"),
        ("Hannover", "30"),
    ],
    "GB": [("London", "SW1A "), ("Leeds", "LS1 "), ("Bristol", "BS1 ")],
}
STREET = {
    "TR": [
        "Atatürk Caddesi",
        "İstiklal Caddesi",
        "Gül Sokak",
        "Cumhuriyet Mahallesi",
        "Bağdat Caddesi",
    ],
    "DE": ["Hauptstraße", "Bahnhofstraße", "Schulstraße", "Gartenstraße", "Lindenallee", "Bergweg"],
    "GB": ["High Street", "Station Road", "Church Lane", "Victoria Road", "Park Avenue"],
}
COMPANY_WORDS = "Tekstil Makina Gıda Lojistik Yazılım Enerji Bau Technik Logistik Software Foods Systems Trading Consulting Medical".split()
COMPANY_SUFFIX = {
    "TR": ["A.Ş.", "Ltd. Şti.", "San. ve Tic. A.Ş."],
    "DE": ["GmbH", "AG", "GmbH & Co. KG"],
    "GB": ["Ltd", "PLC", "LLC"],
}
FREE = {
    "TR": ["gmail.com", "hotmail.com", "yandex.com"],
    "DE": ["gmx.de", "web.de", "gmail.com"],
    "GB": ["gmail.com", "outlook.com", "yahoo.com"],
}
PHONE_PREFIX = {
    "TR": ("+90", ["532", "533", "542", "505", "212", "216", "312"]),
    "DE": ("+49", ["151", "160", "170", "30", "40", "89"]),
    "GB": ("+44", ["7700", "7911", "20"]),
}
ASCII_TR = str.maketrans("çğıöşüÇĞİÖŞÜ", "cgiosuCGIOSU")
ASCII_DE = {"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"}


@dataclass(frozen=True, slots=True)
class Person:
    country: str
    first: str
    last: str
    emails: tuple[str, ...]
    phone: str | None
    company: str | None
    street: str | None
    postal: str | None
    city: str | None
    birth: date | None


def _person(rnd: random.Random) -> Person:
    country = rnd.choices(("TR", "DE", "GB"), (5, 3, 2))[0]
    first = rnd.choice(FIRST[country])
    if rnd.random() < 0.15:
        first += " " + rnd.choice(FIRST[country])
    last = rnd.choice(LAST_ROOTS[country]) + rnd.choice(LAST_SUFFIX[country])
    fa, la = _ascii(first).lower().replace(" ", ""), _ascii(last).lower().replace("'", "")
    company = None
    if rnd.random() < 0.5:
        company = f"{rnd.choice(LAST_ROOTS[country])} {rnd.choice(COMPANY_WORDS)} {rnd.choice(COMPANY_SUFFIX[country])}"
    tag = rnd.randint(1, 9999)
    emails = []
    if company and rnd.random() < 0.8:
        dom = _ascii(company.split()[0]).lower() + rnd.choice(COMPANY_WORDS).lower() + ".com"
        emails.append(f"{fa}.{la}@{dom}")
    emails.append(f"{fa}{rnd.choice(['.', '_', ''])}{la}{tag}@{rnd.choice(FREE[country])}")
    cc, prefixes = PHONE_PREFIX[country]
    phone = None
    if rnd.random() < 0.75:
        digits = "".join(str(rnd.randint(0, 9)) for _ in range(7))
        phone = f"{cc}{rnd.choice(prefixes)}{digits}"
    city, zip_prefix = rnd.choice(CITY[country])
    if country == "GB":
        postal = f"{zip_prefix}{rnd.randint(1, 9)}{rnd.choice('ABDEFGH')}{rnd.choice('JLNPQRS')}"
    else:
        postal = f"{zip_prefix}{rnd.randint(0, 999):03d}"
    street = f"{rnd.choice(STREET[country])} {rnd.randint(1, 200)}"
    birth = date(1950, 1, 1) + timedelta(days=rnd.randint(0, 18000)) if rnd.random() < 0.4 else None
    return Person(country, first, last, tuple(emails), phone, company, street, postal, city, birth)


def _ascii(text: str) -> str:
    for a, b in ASCII_DE.items():
        text = text.replace(a, b)
    return text.translate(ASCII_TR)


def _typo(rnd: random.Random, text: str) -> str:
    if len(text) < 4:
        return text
    i = rnd.randint(1, len(text) - 2)
    op = rnd.random()
    if op < 0.33:
        return text[:i] + text[i + 1 :]
    if op < 0.66:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    return text[:i] + rnd.choice("aeinrst") + text[i + 1 :]


def _sighting(rnd: random.Random, p: Person, first_sighting: bool) -> dict[str, str | None]:
    noisy = not first_sighting
    first, last = p.first, p.last
    if noisy and rnd.random() < 0.25 and first.split()[0] in NICK:
        first = NICK[first.split()[0]]
    if noisy and rnd.random() < 0.12:
        if rnd.random() < 0.5:
            first = _typo(rnd, first)
        else:
            last = _typo(rnd, last)
    if noisy and rnd.random() < 0.2:
        first, last = _ascii(first), _ascii(last)
    order = rnd.random() if noisy else 1.0
    name = (
        f"{last}, {first}"
        if order < 0.08
        else f"{last.upper()} {first}"
        if order < 0.14
        else f"{first} {last}"
    )
    if noisy and rnd.random() < 0.15:
        name = name.upper() if rnd.random() < 0.5 else name.lower()
    row: dict[str, str | None] = {"name": name}
    paper = noisy and rnd.random() < 0.1  # a sign-up sheet: name and address only
    if not paper and rnd.random() < 0.85:
        email = p.emails[0] if len(p.emails) == 1 or rnd.random() < 0.7 else p.emails[1]
        local, _, dom = email.partition("@")
        if noisy and dom == "gmail.com" and rnd.random() < 0.3:
            local = local.replace(".", "") + "+fair"
        if noisy and rnd.random() < 0.1:
            local = local.upper()
        row["email"] = ("mailto:" if noisy and rnd.random() < 0.05 else "") + f"{local}@{dom}"
    if not paper and p.phone and rnd.random() < 0.7:
        ph = p.phone
        if noisy and rnd.random() < 0.5:
            cc = PHONE_PREFIX[p.country][0]
            rest = ph[len(cc) :]
            ph = f"0{rest[:3]} {rest[3:6]} {rest[6:]}" if p.country != "GB" else f"0{rest}"
        row["phone"] = ph
    if paper or rnd.random() < 0.6:
        street = p.street or ""
        if noisy and rnd.random() < 0.3:
            street = (
                street.replace("straße", "str.").replace("Caddesi", "Cad.").replace("Street", "St")
            )
        row.update(street=street, postal=p.postal, city=p.city)
        if noisy and not paper and rnd.random() < 0.12:
            # another address of theirs: the office, a new home, the fair's city
            other = _person(rnd)
            row.update(street=other.street, postal=other.postal, city=other.city)
    if not paper and p.company and rnd.random() < 0.7:
        comp = p.company
        if noisy and rnd.random() < 0.4:
            comp = comp.rsplit(" ", 1)[0] if rnd.random() < 0.5 else comp.upper()
        row["company"] = comp
    if p.birth and rnd.random() < 0.5:
        row["birth"] = p.birth.isoformat()
    return row


def _contact(i: int, row: dict[str, str | None], country: str, at: datetime) -> Contact:
    first, last, full = split_name(row["name"] or "", country)
    email = ekey = None
    if row.get("email"):
        email, ekey, _ = normalize_email(row["email"] or "")
    role, free, disp = email_flags(ekey)
    phone = parse_phone(row["phone"], country).e164 if row.get("phone") else None
    comp = row.get("company")
    postal = normalize_postal_code(row.get("postal"), country)[0]
    birth = row.get("birth")
    return Contact(
        contact_id=f"con_{i:012d}",
        raw_id=f"raw_{i:012d}",
        source=("fair", "webform", "inbox")[i % 3],
        source_kind=("spreadsheet", "webform", "email")[i % 3],
        received_at=at,
        first_name=first,
        last_name=last,
        full_name=full,
        name_key=name_key(first, last),
        email=email,
        email_key=ekey,
        email_is_role=role,
        email_is_free=free,
        email_is_disposable=disp,
        phone=phone,
        company=comp,
        company_key=company_key(comp) if comp else None,
        street=row.get("street"),
        city=row.get("city"),
        postal_code=postal,
        country=country,
        birth_date=date.fromisoformat(birth) if birth else None,
    )


def generate(n: int, dup_rate: float = 0.3, seed: int = 42) -> tuple[list[Contact], list[int]]:
    """`n` contacts of which `dup_rate` are re-sightings, and the true entity of each."""
    contacts, labels = [], []
    for i, (entity, c) in enumerate(iter_labelled(n, dup_rate, seed)):
        contacts.append(c)
        labels.append(entity)
        del i
    return contacts, labels


def iter_labelled(n: int, dup_rate: float = 0.3, seed: int = 42) -> Iterator[tuple[int, Contact]]:
    rnd = random.Random(seed)
    n_people = max(1, round(n * (1 - dup_rate)))
    people = [_person(rnd) for _ in range(n_people)]
    owners = list(range(n_people)) + [rnd.randrange(n_people) for _ in range(n - n_people)]
    rnd.shuffle(owners)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    seen: set[int] = set()
    for i, entity in enumerate(owners):
        p = people[entity]
        row = _sighting(rnd, p, entity not in seen)
        seen.add(entity)
        yield entity, _contact(i, row, p.country, start + timedelta(seconds=30 * i))
