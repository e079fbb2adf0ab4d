"""The matching columns of a contact and the blocking rules over them (pure): what the scoring
model compares, and which pairs it is asked to compare."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import phonenumbers
import pyarrow as pa

from transforms.normalize import fold
from transforms.phones import parse_number
from transforms.records import Contact

# Nicknames and short forms → the formal first name, for matching only (never shown).
NICKNAMES: dict[str, str] = {
    "bob": "robert",
    "bobby": "robert",
    "rob": "robert",
    "robbie": "robert",
    "bill": "william",
    "billy": "william",
    "will": "william",
    "liz": "elizabeth",
    "beth": "elizabeth",
    "betty": "elizabeth",
    "lisa": "elizabeth",
    "mike": "michael",
    "mick": "michael",
    "kate": "katherine",
    "katie": "katherine",
    "kathy": "katherine",
    "catherine": "katherine",
    "alex": "alexander",
    "sasha": "alexander",
    "chris": "christopher",
    "tom": "thomas",
    "tommy": "thomas",
    "jim": "james",
    "jimmy": "james",
    "joe": "joseph",
    "joey": "joseph",
    "dave": "david",
    "dan": "daniel",
    "danny": "daniel",
    "steve": "steven",
    "stephen": "steven",
    "andy": "andrew",
    "drew": "andrew",
    "tony": "anthony",
    "nick": "nicholas",
    "matt": "matthew",
    "sam": "samuel",
    "ben": "benjamin",
    "ed": "edward",
    "ted": "edward",
    "eddie": "edward",
    "jenny": "jennifer",
    "jen": "jennifer",
    "sue": "susan",
    "peggy": "margaret",
    "maggie": "margaret",
    "dick": "richard",
    "rick": "richard",
    "rich": "richard",
    "jack": "john",
    "johnny": "john",
    "hans": "johannes",
    "sepp": "josef",
    "fritz": "friedrich",
    "franz": "franziskus",
    "uli": "ulrich",
    "steffi": "stefanie",
    "memo": "mehmet",
    "mehmed": "mehmet",
    "muhammed": "mehmet",
    "mustafa": "mustafa",
    "ahmed": "ahmet",
    "mahmud": "mahmut",
    "ismael": "ismail",
    "aysha": "ayse",
    "fatima": "fatma",
    "huseyin": "huseyin",
    "yusuf": "yusuf",
    "josef": "joseph",
    "jose": "joseph",
    "giuseppe": "joseph",
    "johann": "johannes",
    "jon": "john",
    "ivan": "john",
}

_DIGRAPHS = (("ae", "a"), ("oe", "o"), ("ue", "u"), ("ph", "f"), ("th", "t"), ("ck", "k"))
_SOUND = str.maketrans("czqwvyj", "sskvfii")


def name_token(text: str | None) -> str:
    """Folded, transliterated form of one name part: 'Müller' and 'Mueller' both give 'muller'."""
    if not text:
        return ""
    key = re.sub(r"[^a-z ]+", "", fold(text)).strip()
    for a, b in _DIGRAPHS:
        key = key.replace(a, b)
    return key


def _canonical_nicknames() -> dict[str, str]:
    out = {}
    for nick in NICKNAMES:
        formal = nick
        while formal in NICKNAMES and NICKNAMES[formal] != formal:
            formal = NICKNAMES[formal]  # chains: sepp → josef → joseph
        out[name_token(nick)] = name_token(formal)
    return out


def first_key(first: str | None) -> str:
    """Canonical first name for matching: first given name, folded, nickname resolved."""
    token = name_token(first).split(" ")[0] if first else ""
    return _NICK.get(token, token)


_NICK = _canonical_nicknames()
_DIGIT = re.compile(r"\d")

# The columns the model compares, computed once per contact at normalize time and stored with it
# (`contact_features`): resolution reads these for the existing contacts, never whole contacts.
MATCH_COLUMNS: tuple[str, ...] = (
    "first",  # first given name, folded, nickname resolved: Bob → robert, Müller → muller
    "last",  # surname, folded and transliterated
    "email_key",  # a person's mailbox (role mailboxes such as info@ say nobody's name)
    "email_local",  # its local part
    "email_domain",  # a company domain only: free-mail and disposable domains say nothing
    "phone",  # E.164
    "phone_nsn",  # the national significant number: the same line written for another country
    "company",  # company key
    "house",  # the house number of the street address
    "street_name",  # the street without house number or flat, street types written one way
    "postcode",  # upper-case letters and digits
    "city",  # city or suburb, folded
    "birth",  # date of birth, ISO
    "country",  # ISO 3166 alpha-2
)

_STREET_WORDS = {
    "strasse": "str",
    "str": "str",
    "street": "st",
    "st": "st",
    "caddesi": "cad",
    "cad": "cad",
    "cd": "cad",
    "cadde": "cad",
    "sokak": "sok",
    "sokagi": "sok",
    "sk": "sok",
    "sok": "sok",
    "mahallesi": "mah",
    "mah": "mah",
    "mh": "mah",
    "bulvari": "blv",
    "bulvar": "blv",
    "blv": "blv",
    "avenue": "ave",
    "ave": "ave",
    "road": "rd",
    "rd": "rd",
    "lane": "ln",
    "ln": "ln",
    "drive": "dr",
    "dr": "dr",
    "close": "cl",
    "cl": "cl",
    "court": "ct",
    "ct": "ct",
    "place": "pl",
    "pl": "pl",
    "square": "sq",
    "sq": "sq",
    "platz": "pl",
    "weg": "weg",
    "allee": "allee",
    "gasse": "g",
    "g": "g",
    "no": "",
    "nr": "",
}
# What follows these words on a street line is a flat or a unit, not the street.
_UNIT = re.compile(
    r"\b(flat|apt|apartment|daire|d|wohnung|whg|unit|suite|ste|kat|floor|etage)\b.*$"
)
_HOUSE = re.compile(r"\b\d+[a-z]?\b")


def street_parts(raw: str | None) -> tuple[str, str]:
    """(house number, street name) of a street line: 'Hauptstraße 5, Whg. 3' → ('5', 'haupt str');
    '115 Park Road Flat 2' → ('115', 'park rd'). Either may be empty."""
    if not raw:
        return "", ""
    text = fold(raw).replace("ß", "ss")
    text = re.sub(r"([a-z])(strasse|str)\b", r"\1 \2", text)
    text = _UNIT.sub("", re.sub(r"[^a-z0-9]+", " ", text)).strip()
    numbers = _HOUSE.findall(text)
    words = [_STREET_WORDS.get(w, w) for w in _HOUSE.sub(" ", text).split()]
    return (numbers[0] if numbers else ""), " ".join(w for w in words if w)


def postcode_key(raw: str | None) -> str:
    return re.sub(r"[^0-9A-Z]", "", raw.upper()) if raw else ""


def national_number(e164: str | None) -> str:
    """The national significant number of an E.164 phone: +90 532 … and +49 532 … share it."""
    if not e164:
        return ""
    try:
        return str(parse_number(e164, None).national_number)
    except phonenumbers.NumberParseException:
        return e164.lstrip("+")


def match_row(c: Contact) -> dict[str, str | None]:
    """One contact's matching columns; an empty value is None (missing, never compared)."""
    ekey = c.email_key if c.email_key and not c.email_is_role else ""
    local, _, domain = ekey.partition("@")
    if c.email_is_free or c.email_is_disposable:
        domain = ""
    house, street = street_parts(c.street)
    values = {
        "first": first_key(c.first_name),
        "last": name_token(c.last_name),
        "email_key": ekey,
        "email_local": local,
        "email_domain": domain,
        "phone": c.phone or "",
        "phone_nsn": national_number(c.phone),
        "company": c.company_key or "",
        "house": house,
        "street_name": street,
        "postcode": postcode_key(c.postal_code),
        "city": name_token(c.city),
        "birth": c.birth_date.isoformat() if c.birth_date else "",
        "country": c.country or "",
    }
    return {k: (v or None) for k, v in values.items()}


MATCH_SCHEMA = pa.schema(
    [pa.field("contact_id", pa.string(), nullable=False)]
    + [pa.field(name, pa.string()) for name in MATCH_COLUMNS]
)


def _per_value(fn: Callable[[Any], Any], values: list[Any]) -> list[Any]:
    """`fn(v) or None` for each of `values`, computed once per distinct value."""
    memo = {v: fn(v) or None for v in set(values)}
    return [memo[v] for v in values]


def match_table(contacts: Iterable[Contact]) -> pa.Table:
    """The matching columns of `contacts` as one Arrow table (contact_id first): `match_row`
    of each, computed a column at a time, once per distinct value of the column."""
    cs = list(contacts)
    mailbox = [
        (c.email_key or "", c.email_is_role, c.email_is_free or c.email_is_disposable) for c in cs
    ]
    email = _per_value(_email_columns, mailbox)
    street = _per_value(street_parts, [c.street for c in cs])
    phones = [c.phone for c in cs]
    cols: dict[str, list[Any]] = {
        "contact_id": [c.contact_id for c in cs],
        "first": _per_value(first_key, [c.first_name for c in cs]),
        "last": _per_value(name_token, [c.last_name for c in cs]),
        "email_key": [e[0] if e else None for e in email],
        "email_local": [e[1] if e else None for e in email],
        "email_domain": [e[2] if e else None for e in email],
        "phone": [p or None for p in phones],
        "phone_nsn": _per_value(national_number, phones),
        "company": [c.company_key or None for c in cs],
        "house": [s[0] or None if s else None for s in street],
        "street_name": [s[1] or None if s else None for s in street],
        "postcode": _per_value(postcode_key, [c.postal_code for c in cs]),
        "city": _per_value(name_token, [c.city for c in cs]),
        "birth": [c.birth_date.isoformat() if c.birth_date else None for c in cs],
        "country": [c.country or None for c in cs],
    }
    return pa.table(cols, schema=MATCH_SCHEMA)


def _email_columns(mailbox: tuple[str, bool, bool]) -> tuple[str | None, str | None, str | None]:
    """(email_key, email_local, email_domain) as `match_row` gives them, from (email key, role
    mailbox, free or disposable domain)."""
    key, role, free = mailbox
    ekey = key if key and not role else ""
    local, _, domain = ekey.partition("@")
    return ekey or None, local or None, (domain if not free else "") or None


@dataclass(frozen=True, slots=True)
class BlockingRule:
    """Pairs agreeing on every column of `columns` are compared. `exact` rules carry an
    identifier (an email, a phone): never too common to be told, and their pairs form a star."""

    code: str
    columns: tuple[str, ...]
    exact: bool = False


# Together these reach every pair a person would merge: the same mailbox or phone, the same
# name in the same place, the same address, the same name and birth date, and names swapped.
BLOCKING_RULES: tuple[BlockingRule, ...] = (
    BlockingRule("e", ("email_key",), exact=True),
    BlockingRule("p", ("phone",), exact=True),
    BlockingRule("el", ("email_local",)),
    BlockingRule("np", ("name_pair", "postcode")),
    BlockingRule("lp", ("last", "postcode")),
    BlockingRule("fp", ("first", "postcode")),
    BlockingRule("lc", ("last", "city")),
    BlockingRule("fl", ("first", "last")),
    BlockingRule("lb", ("last", "birth")),
    BlockingRule("fb", ("first", "birth")),
    BlockingRule("nb", ("name_pair", "birth")),
    BlockingRule("pb", ("postcode", "birth")),
    BlockingRule("cb", ("city", "birth")),
    BlockingRule("sp", ("street_name", "house", "postcode")),
    BlockingRule("sc", ("street_name", "house", "city")),
    BlockingRule("sf", ("street_name", "house", "first")),
    BlockingRule("sl", ("street_name", "house", "last")),
    BlockingRule("cl", ("company", "last")),
    BlockingRule("dl", ("email_domain", "last")),
)
EXACT_RULES = frozenset(r.code for r in BLOCKING_RULES if r.exact)


def _derived(row: Mapping[str, Any]) -> Mapping[str, Any]:
    first, last = row.get("first"), row.get("last")
    # Both orders of a name give one key: "Işık İsmail" meets "İsmail Işık".
    pair = "|".join(sorted((first, last))) if first and last else None
    return {**row, "name_pair": pair}


def block_keys(row: Mapping[str, Any]) -> list[str]:
    """The blocking keys of one contact's matching columns: a rule's code and its values."""
    values = _derived(row)
    keys = []
    for rule in BLOCKING_RULES:
        parts = [values.get(col) for col in rule.columns]
        if all(parts):
            keys.append(rule.code + ":" + "\x1f".join(str(p) for p in parts))
    return keys


def rule_of(key: str) -> str:
    return key.partition(":")[0]


# A stored blocking key is a 64-bit integer, not its text: the rule's position in BLOCKING_RULES
# in the top byte, the low 56 bits of the key's MD5 below it. The index PostgreSQL keeps over
# ~5 stored keys per contact is a third of the text's size and takes a chunk's keys ~2× faster
# at a few million rows. Two keys of one rule meet by chance with odds ~n²/2⁵⁷ (n of that rule's
# keys: ~10⁻⁵ at a million); such a collision only adds candidates to a chunk's context, whose
# pairs are then made and scored from the contacts' own columns.
_HASH_BITS = 56
_HASH_MASK = (1 << _HASH_BITS) - 1
_RULE_AT = {r.code: i for i, r in enumerate(BLOCKING_RULES)}


def block_hash(key: str) -> int:
    """The stored form of a blocking key (`block_keys_sql` computes the same in DuckDB)."""
    digest = int.from_bytes(hashlib.md5(key.encode()).digest()[:8], "little")  # noqa: S324
    return _RULE_AT[rule_of(key)] << _HASH_BITS | digest & _HASH_MASK


def hash_rule(block_hash: int) -> str:
    """The rule code a stored blocking key belongs to."""
    return BLOCKING_RULES[block_hash >> _HASH_BITS].code


def _key_sql(rule: BlockingRule) -> str:
    parts = [
        "case when first is not null and last is not null then least(first, last) || '|' "
        "|| greatest(first, last) end"
        if col == "name_pair"
        else col
        for col in rule.columns
    ]
    return f"'{rule.code}:' || " + " || chr(31) || ".join(parts)


def block_keys_sql(relation: str, carried: tuple[str, ...] = ("contact_id",)) -> str:
    """SQL (DuckDB) giving the `carried` columns (contact_id by default), key, rule, exact and
    rule_at for every blocking key of the contacts in `relation` (a table with the carried and
    the matching columns): the same keys as `block_keys`, computed a column at a time."""
    # Built from the rule table above, a relation and column names of ours: no value reaches
    # the SQL.
    front = ", ".join(carried)
    selects = [
        f"select {front}, {_key_sql(r)} as key, '{r.code}' as rule, {str(r.exact).lower()} "  # noqa: S608
        f"as exact, {i} as rule_at from {relation}"
        for i, r in enumerate(BLOCKING_RULES)
    ]
    return "select * from (" + " union all ".join(selects) + ") where key is not null"  # noqa: S608


# `block_hash` in DuckDB: md5_number_upper is the first 8 bytes of the digest, little-endian
_HASH_SQL = f"(rule_at::BIGINT << {_HASH_BITS}) | (md5_number_upper(key) & {_HASH_MASK})::BIGINT"


def block_key_rows(table: pa.Table, con: Any) -> pa.Table:
    """(block_key, contact_id) for every contact of a matching table, computed in DuckDB."""
    con.register("__lf_match", table)
    try:
        return con.sql(
            f"select key as block_key, contact_id from ({block_keys_sql('__lf_match')})"  # noqa: S608
        ).to_arrow_table()
    finally:
        con.unregister("__lf_match")


def block_table(table: pa.Table) -> pa.Table:
    """The distinct (block_key, block_hash, contact_id) of a matching table, in key order,
    computed in DuckDB: once per chunk, beside its normalizing, for both the chunk's context
    (which keys it looks up) and the index it is published into (which keys it stores, as
    `block_hash`)."""
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET threads = 2")
        con.register("__lf_match", table)
        return con.sql(
            f"select distinct key as block_key, {_HASH_SQL} as block_hash, contact_id "  # noqa: S608
            f"from ({block_keys_sql('__lf_match')}) order by block_key, contact_id"
        ).to_arrow_table()
    finally:
        con.close()


def candidate_pairs(
    records: pa.Table, common: Iterable[str], max_block_size: int, con: Any
) -> pa.Table:
    """The pairs to score: contacts sharing a blocking key, at least one of them new.

    `records` holds contact_id, `is_new`, `ord` (the order contacts were first seen, which is
    their row's position: a pair is written earlier → later) and the matching columns. A key
    shared by more than `max_block_size` contacts here, or listed in `common` (too common over
    the warehouse), is left out; an identifier key (email, phone) never is, and pairs each
    contact only with the first contact seen with it (a star: a mailbox shared by a thousand
    sightings gives a thousand pairs, not half a million). Returns contact_id_l, contact_id_r and the rule of the
    first key the pair shares."""
    con.register("__lf_records", records)
    con.register("__lf_common", pa.table({"key": pa.array(sorted(set(common)), pa.string())}))
    try:
        # A key is grouped and joined by its 64-bit hash, not its text (1.4× faster on a chunk
        # of 142k contacts); the common keys are left out by their text first. Two keys of
        # a chunk meet by chance with odds ~n²/2⁶⁵ (~10⁻⁸ at the ~800k keys of a 142k chunk).
        sql = f"""
        with keys as (
            select hash(key) as key, rule, exact, is_new, ord
            from ({block_keys_sql("__lf_records", ("is_new", "ord"))})
            where exact or key not in (select key from __lf_common)
        ),
        sizes as (select key, count(*) as n, min(ord) as first_ord from keys group by key),
        usable as (
            select keys.*, sizes.first_ord from keys join sizes using (key)
            where keys.exact or sizes.n <= {int(max_block_size)}
        ),
        pairs as (
            -- a pair holds a new contact on its right, or only on its left: each join filters
            -- its sides before it, so a block of a hundred existing contacts and one new gives a
            -- hundred pairs, not five thousand
            select a.ord as ord_l, b.ord as ord_r, a.rule
            from usable a join (select * from usable where is_new) b
              on a.key = b.key and a.ord < b.ord
            where not a.exact or a.ord = a.first_ord
            union all
            select a.ord, b.ord, a.rule
            from (select * from usable where is_new and (not exact or ord = first_ord)) a
              join (select * from usable where not is_new) b on a.key = b.key and a.ord < b.ord
        )
        -- a contact's position stands for it (grouping two integers, not two ids)
        select ord_l, ord_r, min(rule) as rule
        from pairs
        group by ord_l, ord_r
        order by ord_l, ord_r
        """  # noqa: S608
        found = con.sql(sql).to_arrow_table()
    finally:
        con.unregister("__lf_records")
        con.unregister("__lf_common")
    ids = records.column("contact_id")
    return pa.table(
        {
            "contact_id_l": ids.take(found.column("ord_l")),
            "contact_id_r": ids.take(found.column("ord_r")),
            "rule": found.column("rule"),
        }
    )


@dataclass(frozen=True, slots=True)
class MatchSettings:
    """When a scored pair links, when it goes to a person, and which blocks are too common.

    Thresholds are match probabilities from the model (its prior included). A block (contacts
    agreeing on one blocking rule) larger than `max_block_size`, counted over the warehouse,
    says nothing about who is who and is not compared; email and phone blocks never count as
    too common (their pairs are a star around the first contact seen)."""

    link_probability: float = 0.85
    review_probability: float = 0.5
    max_block_size: int = 100
