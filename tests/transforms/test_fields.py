"""Header aliases: which column header names which canonical field."""

from __future__ import annotations

import pytest

from transforms.fields import CANONICAL, canonical_field, header_scorer


@pytest.mark.parametrize(
    "header",
    [
        "Created",
        "Created at",
        "Date created",
        "Submitted at",
        "Submission date",
        "Signed up",
        "Timestamp",
        "Kayıt Tarihi",
        "Oluşturma Tarihi",
        "Erstellt am",
        "Datum",
        "received_at",
    ],
)
def test_date_headers_name_received_at(header: str) -> None:
    assert "received_at" in CANONICAL
    assert canonical_field(header) == "received_at"


def test_a_date_column_alone_identifies_nobody() -> None:
    # a date column counts as a known field, but a header needs an identifying one
    assert header_scorer()(["Kayıt Tarihi", "Şehir"]) == (2, False)
    assert header_scorer()(["Kayıt Tarihi", "E-posta"]) == (2, True)
