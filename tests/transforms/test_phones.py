"""The plain-text parse and the one-pass validity agree with phonenumbers' own parse,
is_valid_number and number_type, on numbers of every region written in many ways."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import phonenumberutil

from transforms.phones import number_kind, parse_number

REGIONS = sorted(phonenumberutil.SUPPORTED_REGIONS)
CODES = sorted(phonenumberutil.COUNTRY_CODE_TO_REGION_CODE)
SEPARATORS = [" ", "-", ".", "/", "(", ")", "  ", "x", "#", ",", "+", ";"]


def _text(rnd: random.Random) -> str:
    roll = rnd.random()
    digits = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 16)))
    if roll < 0.35:
        text = f"+{rnd.choice(CODES)}{digits}"
    elif roll < 0.55:
        example = phonenumbers.example_number_for_type(rnd.choice(REGIONS), rnd.randint(0, 4))
        if example is None:
            return "+1"
        text = phonenumbers.format_number(example, rnd.randint(0, 3))
        if rnd.random() < 0.3:  # one digit off: often no longer valid
            text = text[:-1] + rnd.choice("0123456789")
        return text
    elif roll < 0.75:
        text = rnd.choice(["0", "00", "", "1", "011", "9", "8", "+", "+0"]) + digits
    else:
        text = digits
    out = []
    for ch in text:
        out.append(ch)
        if rnd.random() < 0.2:
            out.append(rnd.choice(SEPARATORS))
    return "".join(out).strip()


def _library(text: str, region: str | None) -> object:
    try:
        num = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as e:
        return ("raises", e.error_type)
    valid = phonenumbers.is_valid_number(num)
    return (
        num,
        num.italian_leading_zero,
        num.number_of_leading_zeros,
        num.extension,
        valid,
        phonenumbers.number_type(num) if valid else None,
    )


def _ours(text: str, region: str | None) -> object:
    try:
        num = parse_number(text, region)
    except phonenumbers.NumberParseException as e:
        return ("raises", e.error_type)
    kind = number_kind(num)
    return (
        num,
        num.italian_leading_zero,
        num.number_of_leading_zeros,
        num.extension,
        kind is not None,
        kind,
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_parse_and_kind_agree_with_phonenumbers(seed: int) -> None:
    rnd = random.Random(seed)
    regions: list[str | None] = [*REGIONS, None, "TR", "DE", "US", "IT", "AR", "ZZ", "tr"]
    for _ in range(20_000):
        text, region = _text(rnd), rnd.choice(regions)
        assert _ours(text, region) == _library(text, region), (text, region)


@pytest.mark.parametrize(
    ("text", "region"),
    [
        ("+39 06 1234 5678", "TR"),  # Italy keeps its leading zero
        ("+54 9 11 1234-5678", None),  # Argentina's mobile 9
        ("+1 650-253-0000", "DE"),  # a calling code shared by many regions
        ("+0 123", "TR"),  # no calling code after the "+"
        ("+800 1234 5678", None),  # a non-geographic code
        ("0532 123 45 67", "TR"),
        ("0532 123 45 67", "ZZ"),  # no region to read a national number in
        ("12", "TR"),
        ("123456789012345678901", "DE"),
        ("(0)30/1234567", "DE"),
        ("011 49 30 1234567", "US"),  # an IDD other than 00
        ("90 532 123 45 67", "TR"),  # the region's calling code without "+"
    ],
)
def test_written_forms_agree_with_phonenumbers(text: str, region: str | None) -> None:
    assert _ours(text, region) == _library(text, region)
