"""Log lines never carry secrets, and mask emails and phones by default."""

from __future__ import annotations

import logging

import pytest

from flows import logmask

CASES = [
    ("email", "contact ismail.isik@isiktekstil.com.tr failed", "contact <email> failed"),
    ("phone_tr", "phone 0532 111 22 33 invalid", "phone <phone> invalid"),
    ("phone_e164", "got +905321112233.", "got <phone>."),
    ("phone_paren", "call +90 (216) 444 55 66 now", "call <phone> now"),
    (
        "url_password",
        "connecting to postgresql+psycopg://app:s3cr3t@db:5432/crm",
        "connecting to postgresql+psycopg://app:***@db:5432/crm",
    ),
    ("token_pair", "header Authorization: Bearer abc.def.ghi", "header Authorization: ***"),
    ("api_key", "api_key=XYZ123&page=2", "api_key=***&page=2"),
    ("timestamp_kept", "at 2026-11-27 00:25:10 ok", "at 2026-11-27 00:25:10 ok"),
    ("counts_kept", "landed 50000 of 123456 rows", "landed 50000 of 123456 rows"),
    (
        "ids_kept",
        "lead lead_4f2a9c0d11e2 run_1234567890ab",
        "lead lead_4f2a9c0d11e2 run_1234567890ab",
    ),
]


@pytest.mark.parametrize(("name", "line", "expected"), CASES, ids=[c[0] for c in CASES])
def test_mask(name: str, line: str, expected: str) -> None:
    assert logmask.mask(line) == expected


def test_personal_data_can_be_shown_but_secrets_never() -> None:
    line = "a@b.com token=abc postgresql://u:pw@h/db"
    assert logmask.mask(line, personal=False) == "a@b.com token=*** postgresql://u:***@h/db"


def test_installed_masking_reaches_every_handler(caplog: pytest.LogCaptureFixture) -> None:
    logmask.install(personal=True)
    log = logging.getLogger("leadflow.test")
    with caplog.at_level(logging.INFO):
        log.info("lead %s with %s", "ayse.yilmaz@gmail.com", "+90 532 111 22 33")
        try:
            raise ValueError("bad row for ayse.yilmaz@gmail.com")
        except ValueError:
            log.exception("row failed")
    text = caplog.text
    assert "ayse.yilmaz" not in text and "532" not in text
    assert "lead <email> with <phone>" in text
    assert "bad row for <email>" in text
