"""A seeded generator of labelled person-register rows: names, a postal address and a date of
birth, no email and no phone — the shape of fair sign-up sheets, partner lists and event
registers.

Each person is drawn once (names and places by Zipf-like frequencies, so common surnames and
suburbs are common, as in a real population), then re-recorded up to four more times with the
noise such registers carry: typing errors (a letter dropped, doubled, swapped or mistyped),
nicknames, given name and surname swapped, Turkish and German letters written in ASCII, street
types abbreviated, day and month of birth swapped, a mistyped digit, and parts left out. The
rows come out as the columns a register export has (`given_name`, `surname`, `street_number`,
`address_1`, `address_2`, `suburb`, `postcode`, `state`, `date_of_birth`), each with the id of
the real person behind it.

    python benchmarks/person_register.py --rows 5000 --out register.csv
"""

from __future__ import annotations

import argparse
import csv
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

COLUMNS = (
    "rec_id",
    "given_name",
    "surname",
    "street_number",
    "address_1",
    "address_2",
    "suburb",
    "postcode",
    "state",
    "date_of_birth",
)

GIVEN = (
    "Mehmet Ahmet Mustafa Ali Hüseyin Hasan İbrahim İsmail Osman Yusuf Murat Ömer Ramazan Halil "
    "Süleyman Abdullah Mahmut Recep Salih Fatih Kadir Emre Hakan Burak Serkan Gökhan Volkan Uğur "
    "Cem Can Kemal Orhan Erkan Sinan Tolga Onur Barış Çağlar Doğan Eren Fatma Ayşe Emine Hatice "
    "Zeynep Elif Meryem Şerife Zehra Sultan Hanife Merve Özlem Esra Büşra Gül Derya Seda Aslı "
    "Ebru Şule Pınar Tuğba Gizem İrem Ceren Dilek Nur Sibel Yasemin Çiğdem Gülşen Işıl Hans Peter "
    "Klaus Jürgen Wolfgang Michael Thomas Andreas Stefan Frank Uwe Günter Dieter Jörg Matthias "
    "Sebastian Tobias Florian Lukas Jonas Maximilian Friedrich Johannes Josef Ursula Monika Petra "
    "Sabine Andrea Claudia Susanne Birgit Katharina Julia Anna Lena Sophie Jana Stefanie "
    "Franziska Marie Gisela Renate Ingrid Brigitte Heike Jutta Käthe Bärbel John William James "
    "Robert David Richard Christopher Daniel Matthew Andrew Joseph Edward Samuel Benjamin Anthony "
    "Nicholas Steven Alexander Elizabeth Katherine Margaret Jennifer Susan Sarah Emma Olivia "
    "Charlotte Emily Jessica Laura Rachel Hannah Liam Noah Oliver Jack Harry George Charlie Jacob "
    "Isla Ava Mia Grace Chloe Lucy Ella Amelia Zoe Ruby Leo Oscar Archie Henry Freddie Alfie"
).split()
SURNAME_ROOTS = (
    "Yılmaz Kaya Demir Şahin Çelik Yıldız Yıldırım Öztürk Aydın Özdemir Arslan Doğan Kılıç "
    "Aslan Çetin Kara Koç Kurt Özkan Şimşek Polat Korkmaz Karataş Erdoğan Güneş Aksoy Keskin "
    "Tekin Ünal Işık Acar Uçar Bulut Ateş Güler Avcı Müller Schmidt Schneider Fischer Weber "
    "Meyer Wagner Becker Schulz Hoffmann Schäfer Koch Bauer Richter Klein Wolf Schröder Neumann "
    "Schwarz Zimmermann Braun Krüger Hofmann Hartmann Lange Weiß Krause Lehmann Köhler Maier "
    "Huber Kaiser Fuchs Peters Jung Möller Groß Smith Jones Taylor Brown Williams Wilson Johnson "
    "Davies Robinson Wright Thompson Evans Walker White Roberts Green Hall Wood Jackson Clarke "
    "Patel Hughes Edwards Turner Morris Martin Cooper Ward Morgan King Baker Harris Lewis Young "
    "Allen Mitchell O'Brien McDonald Campbell Stewart Anderson Scott Murray Reid Ross Paterson"
).split()
SURNAME_ENDINGS = ("", "", "", "", "son", "er", "mann", "oğlu", "ley", "ton", "soy", "han")
STREETS = (
    "High Street, Station Road, Church Lane, Victoria Road, Park Avenue, Mill Lane, Queens Road, "
    "King Street, Green Lane, Manor Road, Church Street, Park Road, London Road, The Crescent, "
    "Hauptstraße, Bahnhofstraße, Schulstraße, Gartenstraße, Dorfstraße, Lindenallee, Bergweg, "
    "Kirchweg, Waldstraße, Ringstraße, Atatürk Caddesi, İstiklal Caddesi, Gül Sokak, "
    "Cumhuriyet Caddesi, Bağdat Caddesi, Lale Sokak, Menekşe Sokak, İnönü Bulvarı, Barış Sokak, "
    "Acacia Avenue, Elm Grove, Oak Drive, Willow Close, Beech Road, Cedar Court, Maple Way"
).split(", ")
ABBREVIATIONS = {
    "Street": "St",
    "Road": "Rd",
    "Avenue": "Ave",
    "Lane": "Ln",
    "Drive": "Dr",
    "Close": "Cl",
    "Court": "Ct",
    "straße": "str.",
    "Caddesi": "Cad.",
    "Sokak": "Sk.",
    "Bulvarı": "Blv.",
}
SUBURBS = (
    "Kadıköy Beşiktaş Üsküdar Bakırköy Şişli Çankaya Keçiören Bornova Karşıyaka Nilüfer "
    "Osmangazi Selçuklu Mitte Pankow Altona Eimsbüttel Schwabing Bogenhausen Ehrenfeld Deutz "
    "Linden List Camden Hackney Islington Headingley Clifton Bedminster Didsbury Jesmond "
    "Edgbaston Roundhay Kirkstall Southville Chorlton Gosforth Harborne Moseley Fulham Putney"
).split()
STATES = tuple(
    state.replace("_", " ")
    for state in "İstanbul Ankara İzmir Bursa Konya Berlin Hamburg Bayern NRW Niedersachsen "
    "Greater_London West_Yorkshire Bristol Greater_Manchester".split()
)
NICKNAMES = {
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
_ASCII = str.maketrans("çğıöşüÇĞİÖŞÜ", "cgiosuCGIOSU")
_ASCII_DE = {"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"}
_KEYS = "qwertyuiopasdfghjklzxcvbnm"


def _zipf(n: int, s: float = 1.0) -> list[float]:
    return [1.0 / (k + 1) ** s for k in range(n)]


@dataclass(frozen=True, slots=True)
class Person:
    given: str
    surname: str
    number: str
    street: str
    address_2: str
    suburb: str
    postcode: str
    state: str
    birth: date


@dataclass(frozen=True, slots=True)
class Places:
    """Suburbs with their postcodes and state, shared by every person of a generator run."""

    suburbs: list[tuple[str, list[str], str]]
    weights: list[float]


def _places(rnd: random.Random) -> Places:
    suburbs = []
    for i, name in enumerate(SUBURBS):
        # a suburb spans several postcodes, as a city district does
        base = 10000 + i * 2000 + rnd.randrange(500)
        codes = [f"{base + k * 7:05d}" for k in range(rnd.randint(5, 30))]
        suburbs.append((name, codes, STATES[i % len(STATES)]))
    return Places(suburbs, _zipf(len(suburbs), 0.6))


def _person(rnd: random.Random, places: Places, given_w: list[float], sur_w: list[float]) -> Person:
    given = rnd.choices(GIVEN, given_w)[0]
    surname = rnd.choices(SURNAME_ROOTS, sur_w)[0] + rnd.choice(SURNAME_ENDINGS)
    suburb, codes, state = rnd.choices(places.suburbs, places.weights)[0]
    address_2 = ""
    if rnd.random() < 0.15:
        address_2 = rnd.choice(("Flat ", "Apt ", "Daire ", "Wohnung ")) + str(rnd.randint(1, 40))
    return Person(
        given=given,
        surname=surname,
        number=str(rnd.randint(1, 250)),
        street=rnd.choices(STREETS, _zipf(len(STREETS), 0.5))[0],
        address_2=address_2,
        suburb=suburb,
        postcode=rnd.choice(codes),
        state=state,
        birth=date(1940, 1, 1) + timedelta(days=rnd.randint(0, 26000)),
    )


def _typo(rnd: random.Random, text: str) -> str:
    """One keying error: a letter dropped, doubled, swapped with the next, or mistyped."""
    if len(text) < 3:
        return text
    i = rnd.randint(1, len(text) - 2)
    op = rnd.random()
    if op < 0.25:
        return text[:i] + text[i + 1 :]
    if op < 0.45:
        return text[:i] + text[i] + text[i:]
    if op < 0.7:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    return text[:i] + rnd.choice(_KEYS) + text[i + 1 :]


def _ascii(text: str) -> str:
    for a, b in _ASCII_DE.items():
        text = text.replace(a, b)
    return text.translate(_ASCII)


def _digit(rnd: random.Random, digits: str) -> str:
    i = rnd.randrange(len(digits))
    return digits[:i] + str((int(digits[i]) + rnd.randint(1, 9)) % 10) + digits[i + 1 :]


def _drop(field: str) -> Callable[[dict[str, str], random.Random], None]:
    def drop(row: dict[str, str], rnd: random.Random) -> None:
        row[field] = ""

    return drop


def _typed(field: str) -> Callable[[dict[str, str], random.Random], None]:
    def typo(row: dict[str, str], rnd: random.Random) -> None:
        row[field] = _typo(rnd, row[field])

    return typo


def _digit_of(field: str) -> Callable[[dict[str, str], random.Random], None]:
    def digit(row: dict[str, str], rnd: random.Random) -> None:
        if row[field]:
            row[field] = _digit(rnd, row[field])

    return digit


def _nickname(row: dict[str, str], rnd: random.Random) -> None:
    row["given_name"] = NICKNAMES.get(row["given_name"], row["given_name"])


def _initial(row: dict[str, str], rnd: random.Random) -> None:
    if row["given_name"]:
        row["given_name"] = row["given_name"][0] + "."


def _transliterated(row: dict[str, str], rnd: random.Random) -> None:
    row["given_name"], row["surname"] = _ascii(row["given_name"]), _ascii(row["surname"])


def _swapped(row: dict[str, str], rnd: random.Random) -> None:
    row["given_name"], row["surname"] = row["surname"], row["given_name"]


def _birth_changed(row: dict[str, str], rnd: random.Random) -> None:
    if not row["date_of_birth"]:
        return
    y, m, d = row["date_of_birth"].split("-")
    if int(d) <= 12 and d != m and rnd.random() < 0.5:
        row["date_of_birth"] = f"{y}-{d}-{m}"  # day and month read the other way round
    else:
        digits = _digit(rnd, y + m + d)
        row["date_of_birth"] = f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"


# What a re-recording gets wrong, and how often each kind of error is chosen: the typing and
# reading errors a register's clerks make, and parts they leave out. A re-recording carries one
# to three of them (as FEBRL's generator limits modifications per record).
ERRORS: tuple[tuple[Callable[[dict[str, str], random.Random], None], float], ...] = (
    (_typed("given_name"), 10),
    (_typed("surname"), 10),
    (_nickname, 3),
    (_initial, 2),
    (_transliterated, 6),
    (_swapped, 4),
    (_typed("address_1"), 5),
    (_digit_of("street_number"), 3),
    (_typed("suburb"), 5),
    (_digit_of("postcode"), 3),
    (_birth_changed, 6),
    (_drop("given_name"), 3),
    (_drop("surname"), 2),
    (_drop("street_number"), 3),
    (_drop("address_1"), 3),
    (_drop("suburb"), 4),
    (_drop("postcode"), 3),
    (_drop("date_of_birth"), 6),
)


def record(p: Person, rnd: random.Random | None = None) -> dict[str, str]:
    """One row of `p`: exactly as drawn when `rnd` is None, else a re-recording with one to
    three errors, and the street type written short or the flat left out as people do."""
    row = {
        "given_name": p.given,
        "surname": p.surname,
        "street_number": p.number,
        "address_1": p.street,
        "address_2": p.address_2,
        "suburb": p.suburb,
        "postcode": p.postcode,
        "state": p.state,
        "date_of_birth": p.birth.isoformat(),
    }
    if rnd is None:
        return row
    if rnd.random() < 0.3:
        for long, short in ABBREVIATIONS.items():
            row["address_1"] = row["address_1"].replace(long, short)
    if rnd.random() < 0.3:
        row["address_2"] = ""
    errors, weights = zip(*ERRORS, strict=True)
    for error in rnd.choices(errors, weights, k=rnd.choices((1, 2, 3), (50, 35, 15))[0]):
        error(row, rnd)
    return row


def iter_register(
    n: int, seed: int = 42, max_duplicates: int = 4
) -> Iterator[tuple[int, dict[str, str]]]:
    """`n` rows, as (the real person's number, the row), in a shuffled order: about 40% of
    the people are recorded more than once (one to `max_duplicates` more times)."""
    rnd = random.Random(seed)
    places = _places(rnd)
    given_w, sur_w = _zipf(len(GIVEN), 0.7), _zipf(len(SURNAME_ROOTS), 0.8)
    owners: list[int] = []
    people: list[Person] = []
    while len(owners) < n:
        pid = len(people)
        people.append(_person(rnd, places, given_w, sur_w))
        copies = 1 + (rnd.randint(1, max_duplicates) if rnd.random() < 0.4 else 0)
        owners.extend([pid] * min(copies, n - len(owners)))
    rnd.shuffle(owners)
    seen: set[int] = set()
    for pid in owners:
        row = record(people[pid], rnd if pid in seen else None)
        seen.add(pid)
        yield pid, row


def write_csv(path: Path, rows: Sequence[tuple[int, dict[str, str]]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(COLUMNS)
        for i, (pid, row) in enumerate(rows):
            out.writerow([f"rec-{pid}-{i}", *(row[c] for c in COLUMNS[1:])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    write_csv(args.out, list(iter_register(args.rows, args.seed)))


if __name__ == "__main__":
    main()
