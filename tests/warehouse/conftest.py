"""Warehouse fixtures: the bundled samples published once, with more landed and pending."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from flows import stages
from flows.settings import Settings, load_settings
from tests.flows.test_pipeline import _use
from warehouse import db


@pytest.fixture
def warehouse(sample_config: Path, warehouse_url: str) -> Iterator[tuple[Settings, Engine]]:
    """The samples landed and published once, without the fair sheet's rows (they come later)."""
    _use(sample_config, warehouse_url)
    settings = load_settings(sample_config)
    csv = sample_config.parent / "sources" / "fair_istanbul_2026.csv"
    full = csv.read_text()
    csv.write_text(full.splitlines()[0] + "\n")
    engine = db.make_engine(warehouse_url)
    db.upgrade(engine)
    land(engine, settings, "run_first")
    stages.process_pending(engine, settings, "run_first")
    csv.write_text(full)
    land(engine, settings, "run_second")
    yield settings, engine
    engine.dispose()


def land(engine: Engine, settings: Settings, run_id: str) -> None:
    for source in settings.sources:
        stages.extract_and_land(engine, source, run_id)
