"""phonenumbers' parse and validity for plainly written numbers, without its per-character work.

`parse_number(text, region)` is `phonenumbers.parse(text, region)`, and `number_kind(num)` is
`phonenumbers.number_type(num)` for a number `phonenumbers.is_valid_number` accepts (None
otherwise), computed with one pass over the region's patterns where the library makes two.

For text of ASCII digits and plain separators (space . - / ( )), optionally led by "+",
`parse_number` takes the steps `phonenumbers.parse` takes, calling the library's own helpers
for every decision (country code, national prefix, lengths), and skips only what is provably a
no-op on such text: extracting the number out of surrounding text (it starts with "+" or a
digit and ends with a digit), RFC 3966 parameters (no ";"), extensions (every extension form
needs a letter, "#", "~", "," or ";"), and normalizing digits one character at a time (the
digits are already ASCII: normalizing keeps exactly them). Anything else, and any text the
library would refuse, goes to `phonenumbers.parse` itself. tests/transforms/test_phones.py
compares both on generated numbers of many regions and shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import phonenumbers
from phonenumbers import (
    REGION_CODE_FOR_NON_GEO_ENTITY,
    PhoneMetadata,
    PhoneNumber,
    PhoneNumberDesc,
    PhoneNumberType,
)
from phonenumbers import phonenumberutil as _pn

# The library compiles a metadata pattern on each use unless told to keep them (a bounded set,
# from its fixed metadata); keeping them changes no result.
phonenumbers.enable_pattern_cache()

# A leading "+" or digit, digits and separators, a digit at the end; at least three digits
# (fewer: the library's viability rules differ, it decides).
_PLAIN = re.compile(r"\+?[0-9][0-9 ./()\-]*[0-9]", re.ASCII)
_SEPARATORS = str.maketrans("", "", " ./()-")
# the outcomes of `_test_number_length` after which parse keeps the national prefix
_KEEP_PREFIX = (
    _pn.ValidationResult.TOO_SHORT,
    _pn.ValidationResult.IS_POSSIBLE_LOCAL_ONLY,
    _pn.ValidationResult.INVALID_LENGTH,
)


def parse_number(text: str, region: str | None) -> PhoneNumber:
    """`phonenumbers.parse(text, region)`; raises its NumberParseException where it does."""
    num = _parse_plain(text, region) if len(text) <= 250 and _PLAIN.fullmatch(text) else None
    return num if num is not None else phonenumbers.parse(text, region)


def _parse_plain(text: str, region: str | None) -> PhoneNumber | None:
    """The library's parse of plain text, or None where it would raise or take a branch this
    does not follow (the caller then asks the library)."""
    plus = text[0] == "+"
    digits = text[1:].translate(_SEPARATORS) if plus else text.translate(_SEPARATORS)
    if len(digits) < 3:
        return None
    if not plus and not _pn._is_valid_region_code(region):
        return None  # the library raises INVALID_COUNTRY_CODE
    num = PhoneNumber()
    metadata = None if region is None else PhoneMetadata.metadata_for_region(region.upper(), None)
    if plus:
        # _maybe_extract_country_code after a "+": the digits must name a calling code
        country_code, national = _pn._extract_country_code(digits)
        if country_code == 0:
            return None  # the library retries without the "+" or raises
        num.country_code = country_code
    else:
        assert metadata is not None  # a valid region code has metadata
        try:
            country_code, national = _pn._maybe_extract_country_code(digits, metadata, False, num)
        except phonenumbers.NumberParseException:
            return None
    if country_code != 0:
        number_region = _pn.region_code_for_country_code(country_code)
        if number_region != region:
            metadata = PhoneMetadata.metadata_for_region_or_calling_code(
                country_code, number_region
            )
    else:
        national += digits  # no calling code: the national number is the normalized text
        if region is not None:
            assert metadata is not None  # a valid region code has metadata
            num.country_code = metadata.country_code
    if len(national) < _pn._MIN_LENGTH_FOR_NSN:
        return None
    if metadata is not None:
        _, potential, _ = _pn._maybe_strip_national_prefix_carrier_code(national, metadata)
        if _pn._test_number_length(potential, metadata) not in _KEEP_PREFIX:
            national = potential
    if len(national) > _pn._MAX_LENGTH_FOR_NSN:
        return None
    _pn._set_italian_leading_zeros_for_phone_number(national, num)
    num.national_number = int(national)
    return num


def number_kind(num: PhoneNumber) -> int | None:
    """`number_type(num)` when `is_valid_number(num)`, else None: one match of the number
    against its region's patterns, which the two library calls would each make."""
    country_code = num.country_code
    if country_code is None:
        return None
    regions = _pn.COUNTRY_CODE_TO_REGION_CODE.get(country_code)
    if regions is None:  # no region for an unknown code
        return None
    nsn = _pn.national_significant_number(num)
    region = regions[0] if len(regions) == 1 else _region_among(regions, nsn)
    if region is None:
        return None
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region.upper())
    if metadata is None or (
        region != REGION_CODE_FOR_NON_GEO_ENTITY
        and country_code != _pn.country_code_for_valid_region(region)
    ):
        return None
    kind = _type_of(nsn, metadata)
    return None if kind == PhoneNumberType.UNKNOWN else kind


def _region_among(regions: tuple[str, ...], nsn: str) -> str | None:
    """The library's `_region_code_for_number_from_list` (a calling code several regions share):
    the first whose leading digits, or else whose patterns, the number matches."""
    for region_code, leading, metadata in _tells_apart(regions):
        if leading is not None:
            if leading.match(nsn):
                return region_code
        elif _type_of(nsn, metadata) != PhoneNumberType.UNKNOWN:
            return region_code
    return None


@cache  # one per calling code that several regions share: bounded
def _tells_apart(
    regions: tuple[str, ...],
) -> tuple[tuple[str, re.Pattern[str] | None, PhoneMetadata], ...]:
    """Each region with metadata, in order, with its leading-digits pattern (None: told apart by
    its number patterns)."""
    out = []
    for region_code in regions:
        metadata = PhoneMetadata.metadata_for_region(region_code.upper(), None)
        if metadata is not None:
            leading = metadata.leading_digits
            out.append((region_code, None if leading is None else re.compile(leading), metadata))
    return tuple(out)


# phonenumbers' `_number_type_helper` tries the types in this order, after the general pattern
_SPECIAL_TYPES = (
    ("premium_rate", PhoneNumberType.PREMIUM_RATE),
    ("toll_free", PhoneNumberType.TOLL_FREE),
    ("shared_cost", PhoneNumberType.SHARED_COST),
    ("voip", PhoneNumberType.VOIP),
    ("personal_number", PhoneNumberType.PERSONAL_NUMBER),
    ("pager", PhoneNumberType.PAGER),
    ("uan", PhoneNumberType.UAN),
    ("voicemail", PhoneNumberType.VOICEMAIL),
)


@dataclass(frozen=True, slots=True)
class _Desc:
    """A number type's description as the library matches it: a possible length (any, when the
    metadata lists none) and the whole number matching the pattern (its `match`-then-`fullmatch`
    is `fullmatch`: a full match is a match)."""

    lengths: frozenset[int]
    pattern: re.Pattern[str]

    def matches(self, nsn: str) -> bool:
        return (not self.lengths or len(nsn) in self.lengths) and (
            self.pattern.fullmatch(nsn) is not None
        )


@dataclass(frozen=True, slots=True)
class _Types:
    """A region's number types in the order `_number_type_helper` tries them; a type without a
    pattern matches nothing and is left out."""

    general: _Desc | None
    special: tuple[tuple[int, _Desc], ...]
    fixed_line: _Desc | None
    mobile: _Desc | None
    same_mobile_and_fixed_line: bool


def _desc(desc: PhoneNumberDesc | None) -> _Desc | None:
    if desc is None or not desc.national_number_pattern:
        return None
    return _Desc(frozenset(desc.possible_length), re.compile(desc.national_number_pattern))


# one per metadata object of the library (which keeps them for good), so bounded by it; the
# metadata is held beside its types so that its id stays its own
_TYPES: dict[int, tuple[PhoneMetadata, _Types]] = {}


def _types(metadata: PhoneMetadata) -> _Types:
    found = _TYPES.get(id(metadata))
    if found is not None and found[0] is metadata:
        return found[1]
    special = ((kind, _desc(getattr(metadata, name))) for name, kind in _SPECIAL_TYPES)
    types = _Types(
        _desc(metadata.general_desc),
        tuple((kind, d) for kind, d in special if d is not None),
        _desc(metadata.fixed_line),
        _desc(metadata.mobile),
        bool(metadata.same_mobile_and_fixed_line_pattern),
    )
    _TYPES[id(metadata)] = metadata, types
    return types


def _type_of(nsn: str, metadata: PhoneMetadata) -> int:
    """The library's `_number_type_helper`, each pattern compiled once and matched once."""
    types = _types(metadata)
    if types.general is None or not types.general.matches(nsn):
        return PhoneNumberType.UNKNOWN
    for kind, desc in types.special:
        if desc.matches(nsn):
            return kind
    same, fixed, mobile = types.same_mobile_and_fixed_line, types.fixed_line, types.mobile
    if fixed is not None and fixed.matches(nsn):
        if same or (mobile is not None and mobile.matches(nsn)):
            return PhoneNumberType.FIXED_LINE_OR_MOBILE
        return PhoneNumberType.FIXED_LINE
    if not same and mobile is not None and mobile.matches(nsn):
        return PhoneNumberType.MOBILE
    return PhoneNumberType.UNKNOWN
