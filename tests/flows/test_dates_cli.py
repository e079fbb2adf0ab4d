"""A lead's id and every row's received_at do not depend on where the files are or their mtime.

The bundled samples run through the real command line from two copies (another folder, as a
second clone would be) whose sheets were `touch`ed to different dates: every raw record's
received_at and every lead's id and source come out the same.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from flows.cli import main
from tests.conftest import EXAMPLES, ROOT
from warehouse import db


def _project(folder: Path, url: str, *, touch: str | None, dated: bool = True) -> Path:
    """A copy of the samples and the bundled config under `folder`, sheets touched to `touch`."""
    folder.mkdir(parents=True)
    shutil.copytree(EXAMPLES, folder / "sources")
    if touch:
        ts = datetime.fromisoformat(touch).replace(tzinfo=UTC).timestamp()
        for f in (folder / "sources").iterdir():
            os.utime(f, (ts, ts))
    cfg = (ROOT / "leadflow.yaml").read_text(encoding="utf-8")
    cfg = cfg.replace("examples/sources", str(folder / "sources"))
    cfg = cfg.replace("sqlite:///leadflow.db", url)
    if not dated:
        cfg = "\n".join(ln for ln in cfg.splitlines() if "received_at:" not in ln) + "\n"
    cfg += f"quality:\n  docs_dir: {folder / 'docs'}\n"
    path = folder / "leadflow.yaml"
    path.write_text(cfg, encoding="utf-8")
    return path


def _state(url: str) -> dict[str, Any]:
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            raw = conn.execute(
                text("select source, source_record_id, received_at from raw_contacts")
            ).all()
            leads = conn.execute(
                text("select lead_id, lead_source, first_seen_at, status from leads")
            ).all()
            by_source = conn.execute(
                text("select lead_source, count(*) from leads group by lead_source")
            ).all()
    finally:
        engine.dispose()
    return {
        "raw": sorted((r[0], r[1], str(db_time(r[2]))) for r in raw),
        "leads": sorted((r[0], r[1], str(db_time(r[2])), r[3]) for r in leads),
        "by_source": sorted(tuple(r) for r in by_source),
    }


def db_time(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_two_copies_touched_differently_give_the_same_dates_and_ids(
    prefect_api: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_url = f"sqlite:///{tmp_path / 'a.db'}"
    b_url = f"sqlite:///{tmp_path / 'b.db'}"
    a = _project(tmp_path / "clone_a", a_url, touch=None)
    b = _project(tmp_path / "elsewhere" / "clone_b", b_url, touch="2026-09-15 00:00:00")
    assert main(["run", "--config", str(a)]) == 0
    assert main(["run", "--config", str(b)]) == 0
    capsys.readouterr()
    first, second = _state(a_url), _state(b_url)
    assert len(first["raw"]) == 23 and len(first["leads"]) > 0
    assert first == second
    # the sheets are dated as the config says, not by the copy's or the touch's time
    sheets = {(s, t) for s, _, t in first["raw"] if s in ("fair_istanbul", "partners_hannover")}
    assert sheets == {
        ("fair_istanbul", "2026-10-14 00:00:00+00:00"),
        ("partners_hannover", "2026-10-08 00:00:00+00:00"),
    }


def test_undated_sheets_keep_their_first_landing_when_moved_and_touched(
    prefect_api: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    a = _project(tmp_path / "here", url, touch=None, dated=False)
    assert main(["run", "--config", str(a)]) == 0
    before = _state(url)
    # the same files in another folder, touched to another day, read into the same warehouse
    b = _project(tmp_path / "there", url, touch="2026-09-15 00:00:00", dated=False)
    assert main(["run", "--config", str(b)]) == 0
    capsys.readouterr()
    assert _state(url) == before
    engine = db.make_engine(url)
    with engine.connect() as conn:
        cursor = conn.execute(
            text("select cursor from source_cursors where source = 'fair_istanbul'")
        ).scalar_one()
    engine.dispose()
    cursor = cursor if isinstance(cursor, dict) else __import__("json").loads(cursor)
    assert len(cursor["files"]) == 2 and len(cursor["first_landed"]) == 1  # one content
    landed = {t for s, _, t in before["raw"] if s == "fair_istanbul"}
    (first,) = cursor["first_landed"].values()
    assert landed == {str(datetime.fromisoformat(first))}
