"""Matching keys, blocking keys and Fellegi–Sunter pair scores for entity resolution (pure)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from rapidfuzz.distance import JaroWinkler
from rapidfuzz.fuzz import token_sort_ratio

from transforms.normalize import fold
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


@lru_cache(maxsize=262_144)
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


@lru_cache(maxsize=262_144)
def first_key(first: str | None) -> str:
    """Canonical first name for matching: first given name, folded, nickname resolved."""
    token = name_token(first).split(" ")[0] if first else ""
    return _NICK.get(token, token)


@lru_cache(maxsize=262_144)
def sound_key(text: str) -> str:
    """A small phonetic key (first letter kept, later vowels and doubled letters dropped)."""
    t = text.replace(" ", "").translate(_SOUND).replace("h", "")
    if not t:
        return ""
    out = [t[0]]
    for ch in t[1:]:
        if ch in "aeiou" or ch == out[-1]:
            continue
        out.append(ch)
    return "".join(out)[:6]


_NICK = _canonical_nicknames()
_DIGIT = re.compile(r"\d")


@dataclass(slots=True)
class Features:
    """What the comparisons look at, computed once per contact."""

    first: str
    last: str
    email_key: str
    email_local: str
    email_domain: str  # a company domain only: free-mail and disposable domains say nothing
    phone: str
    postal: str
    street: str
    city: str
    company: str
    birth: date | None


def features(c: Contact) -> Features:
    first, last = first_key(c.first_name), name_token(c.last_name)
    ekey = c.email_key if c.email_key and not c.email_is_role else ""
    local, _, domain = ekey.partition("@")
    if c.email_is_free or c.email_is_disposable:
        domain = ""
    return Features(
        first=first,
        last=last,
        email_key=ekey,
        # A bare "first.last" local part says no more than the name; one with digits does.
        email_local=local if len(local) >= 6 and _DIGIT.search(local) else "",
        email_domain=domain,
        phone=c.phone or "",
        postal=_postal(c.postal_code),
        street=_street(c.street),
        city=name_token(c.city),
        company=c.company_key or "",
        birth=c.birth_date,
    )


@lru_cache(maxsize=65_536)
def _postal(raw: str | None) -> str:
    return re.sub(r"[^0-9A-Z]", "", raw.upper()) if raw else ""


_STREET_WORDS = {
    "strasse": "str",
    "str": "str",
    "street": "st",
    "st": "st",
    "caddesi": "cad",
    "cad": "cad",
    "cd": "cad",
    "sokak": "sok",
    "sokagi": "sok",
    "sk": "sok",
    "sok": "sok",
    "mahallesi": "mah",
    "mah": "mah",
    "mh": "mah",
    "avenue": "ave",
    "ave": "ave",
    "road": "rd",
    "rd": "rd",
    "no": "",
}


@lru_cache(maxsize=262_144)
def _street(raw: str | None) -> str:
    if not raw:
        return ""
    text = re.sub(r"([a-z])(str)\b", r"\1 \2", fold(raw).replace("ß", "ss"))
    words = re.findall(r"[a-z]+|\d+", text.replace("strasse", " strasse"))
    return " ".join(w for w in (_STREET_WORDS.get(x, x) for x in words) if w)


# Prefixes of the keys that link on their own (same email key, same phone): never "too common".
EXACT_KEYS = ("e:", "p:")


def block_keys(f: Features) -> tuple[str, ...]:
    """Keys that put plausible pairs in the same block; a pair is compared if it shares one."""
    keys: list[str] = []
    sf, sl = sound_key(f.first), sound_key(f.last)
    if f.email_key:
        keys.append("e:" + f.email_key)
    if f.phone:
        keys.append("p:" + f.phone)
    if sf and sl:
        keys.append("n:" + ":".join(sorted((sf, sl))))
    if f.postal and sl:
        keys.append(f"pl:{f.postal}:{sl}")
    if f.postal and sf:
        keys.append(f"pf:{f.postal}:{sf}")
    if f.company and sl:
        keys.append(f"cl:{f.company}:{sl}")
    if f.email_domain and sl:
        keys.append(f"dl:{f.email_domain}:{sl}")
    if f.email_local:
        keys.append("el:" + f.email_local)
    if f.birth and sf:
        keys.append(f"bf:{f.birth.isoformat()}:{sf}")
    return tuple(keys)


@dataclass(frozen=True, slots=True)
class MatchSettings:
    """Thresholds on the summed log2 weight of a pair; the defaults come from the benchmark."""

    link_weight: float = 20.0
    review_weight: float = 10.0
    strong_name: float = 0.93
    max_block_size: int = 60
    prior_log2: float = -10.0


def _w(m: float, u: float) -> float:
    return math.log2(m / u)


# (m, u) per comparison level: how often the level occurs among true matches and among
# random pairs. Summed log2(m/u) is the Fellegi–Sunter match weight.
W = {
    "first_exact": _w(0.85, 0.01),
    "first_close": _w(0.10, 0.02),
    "first_initial": _w(0.03, 0.06),
    "first_diff": _w(0.02, 0.91),
    "last_exact": _w(0.88, 0.002),
    "last_close": _w(0.09, 0.01),
    "last_diff": _w(0.03, 0.988),
    "email_same": _w(0.60, 0.000_01),
    "email_diff": _w(0.30, 0.999),
    "local_same": _w(0.05, 0.000_5),
    "phone_same": _w(0.60, 0.000_1),
    "phone_diff": _w(0.25, 0.999),
    "postal_same": _w(0.85, 0.005),
    "postal_diff": _w(0.15, 0.995),
    "street_same": _w(0.80, 0.001),
    "street_close": _w(0.12, 0.01),
    "street_diff": _w(0.08, 0.989),
    "city_same": _w(0.90, 0.05),
    "city_diff": _w(0.10, 0.95),
    "company_same": _w(0.60, 0.002),
    "company_close": _w(0.10, 0.005),
    "company_diff": _w(0.30, 0.993),
    "domain_same": _w(0.50, 0.05),
    "birth_same": _w(0.95, 0.000_3),
    "birth_diff": _w(0.000_1, 0.999_7),
}


def _name_level(a: str, b: str, close: float, part: str) -> tuple[str, float]:
    if a == b:
        return f"{part}_exact", 1.0
    if part == "first" and (len(a) == 1 or len(b) == 1) and a[0] == b[0]:
        return "first_initial", 0.9
    sim = JaroWinkler.normalized_similarity(a, b)
    return (f"{part}_close" if sim >= close else f"{part}_diff"), sim


def _street_level(a: str, b: str) -> str:
    if a == b:
        return "street_same"
    if re.findall(r"\d+", a) != re.findall(r"\d+", b):
        return "street_diff"  # another house number is another household
    r = token_sort_ratio(a, b)
    return "street_same" if r >= 90 else "street_close" if r >= 75 else "street_diff"


def compare(a: Features, b: Features, close: float = 0.88) -> tuple[float, dict[str, str], bool]:
    """(weight, level per compared field, strong name evidence) for one pair."""
    levels: dict[str, str] = {}
    strong = False
    swapped = False
    if a.first and a.last and b.first and b.last:
        fl, fs = _name_level(a.first, b.first, close, "first")
        ll, ls = _name_level(a.last, b.last, close, "last")
        if fs + ls < 2.0:
            # Swapped order ("Işık İsmail"): compare crosswise and keep the better reading.
            xf, xfs = _name_level(a.first, b.last, close, "first")
            xl, xls = _name_level(a.last, b.first, close, "last")
            if xfs + xls > fs + ls + 0.1:
                fl, fs, ll, ls, swapped = xf, xfs, xl, xls, True
        levels["first"], levels["last"] = fl, ll
        strong = min(fs, ls) >= 0.93
    elif a.last and b.last:
        levels["last"] = _name_level(a.last, b.last, close, "last")[0]
    if a.email_key and b.email_key:
        if a.email_key == b.email_key:
            levels["email"] = "email_same"
        elif a.email_local and a.email_local == b.email_local:
            levels["email"] = "local_same"
        else:
            levels["email"] = "email_diff"
    if a.email_domain and a.email_domain == b.email_domain:
        levels["domain"] = "domain_same"
    if a.phone and b.phone:
        levels["phone"] = "phone_same" if a.phone == b.phone else "phone_diff"
    if a.postal and b.postal:
        levels["postal"] = "postal_same" if a.postal == b.postal else "postal_diff"
    if a.street and b.street:
        levels["street"] = _street_level(a.street, b.street)
    elif a.city and b.city:
        levels["city"] = "city_same" if a.city == b.city else "city_diff"
    if a.company and b.company:
        if a.company == b.company:
            levels["company"] = "company_same"
        else:
            r = JaroWinkler.normalized_similarity(a.company, b.company)
            levels["company"] = "company_close" if r >= 0.92 else "company_diff"
    if a.birth and b.birth:
        levels["birth"] = "birth_same" if a.birth == b.birth else "birth_diff"
    weight = sum(map(W.__getitem__, levels.values()))
    if swapped:
        levels["name_order"] = "swapped"
    return weight, levels, strong


def probability(weight: float, prior_log2: float) -> float:
    """Match probability from the weight and the prior odds of a pair in a block."""
    x = weight + prior_log2
    return 1.0 / (1.0 + 2.0 ** (-x)) if x > -60 else 0.0
