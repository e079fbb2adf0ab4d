"""Shared connector-test fixtures: a real dovecot for the session, and landing helpers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tests.connectors.dovecot import (
    FIXTURES,
    PASSWORD,
    Dovecot,
    DovecotError,
    corpus,
    running_dovecot,
)

__all__ = ["FIXTURES", "PASSWORD", "Dovecot", "corpus", "land_source", "rows_of"]


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """One dovecot for the whole session (it starts in milliseconds); each test takes a new user."""
    try:
        with running_dovecot() as server:
            yield server
    except DovecotError as exc:
        pytest.fail(str(exc))


def land_source(
    cfg: Path, name: str, start: date | None = None, end: date | None = None
) -> dict[str, int]:
    """One extract-and-land of a configured source (a backfill with start/end), as a run does it;
    its counts as the run log keeps them."""
    from flows.settings import load_settings
    from flows.stages import extract_and_land
    from warehouse import db

    settings = load_settings(cfg)
    engine = db.make_engine(settings.warehouse.url)
    db.upgrade(engine)
    try:
        return extract_and_land(engine, settings.source(name), "run_test", start, end).as_dict()
    finally:
        engine.dispose()


def rows_of(cfg: Path, *cols: Any) -> list[tuple[Any, ...]]:
    """The warehouse's rows for these columns, in storage order."""
    from sqlalchemy import select

    from flows.settings import load_settings
    from warehouse import db

    engine = db.make_engine(load_settings(cfg).warehouse.url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(*cols))]
    finally:
        engine.dispose()
