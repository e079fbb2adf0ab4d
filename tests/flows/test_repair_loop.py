"""The repair loop: fixing a source's config reads its files again, `rejects replay` re-reads
extraction rejects itself, rejects whose records landed close, and a person can dismiss the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from flows.cli import main
from tests.conftest import write_config
from warehouse import db

UNKNOWN = "Kim;Posta;Gün\nAda Demir;ada@demir.com.tr;03.10.2026\nCan Ak;can@ak.com.tr;04.10.2026\n"
RAGGED = "Name;Email\nEmre Çelik;emre@celik.com.tr\nBad Row;bad@row.com;extra;cells\n"


def _rejects(url: str) -> dict[str, tuple[str, str | None, str | None]]:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("select source, code, status, dismissed_by, dismissed_why from rejects")
        ).all()
    engine.dispose()
    return {f"{r.source}:{r.code}": (r.status, r.dismissed_by, r.dismissed_why) for r in rows}


def _count(url: str, sql: str) -> int:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        n = conn.execute(text(sql)).scalar_one()
    engine.dispose()
    return int(n)


def test_fix_replay_close_and_dismiss(
    prefect_api: None, tmp_path: Path, warehouse_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.csv").write_text(UNKNOWN, encoding="utf-8")
    (tmp_path / "b.csv").write_text(UNKNOWN.replace("Ada", "Ece"), encoding="utf-8")
    (tmp_path / "c.csv").write_text(RAGGED, encoding="utf-8")
    body = (
        f"quality:\n  docs_dir: {tmp_path / 'docs'}\n"
        "sources:\n"
        f"  - {{name: a, kind: spreadsheet, path: {tmp_path / 'a.csv'}}}\n"
        f"  - {{name: b, kind: spreadsheet, path: {tmp_path / 'b.csv'}}}\n"
        f"  - {{name: c, kind: spreadsheet, path: {tmp_path / 'c.csv'}}}\n"
    )
    cfg = write_config(tmp_path / "leadflow.yaml", warehouse_url, body)
    # nothing could be read from a and b: the run is partial and says so
    assert main(["run", "--config", str(cfg)]) == 3
    err = capsys.readouterr().err
    assert "leadflow: warning: source a: a.csv: no header row names" in err
    assert 'fix: add to source b: columns: {"Posta": email}' in err
    assert _rejects(warehouse_url) == {
        "a:no_header": ("open", None, None),
        "b:no_header": ("open", None, None),
        "c:ragged_row": ("open", None, None),
    }
    # a replay before any fix reads the files again and closes nothing
    assert main(["rejects", "replay", "--config", str(cfg)]) == 0
    assert {v[0] for v in _rejects(warehouse_url).values()} == {"open"}

    # b gets its column map, then a replay: b's files are read again by the replay itself
    fix = "columns: {Kim: full_name, Posta: email, Gün: received_at}"
    cfg.write_text(
        cfg.read_text().replace(
            f"path: {tmp_path / 'b.csv'}}}", f"path: {tmp_path / 'b.csv'}, {fix}}}"
        )
    )
    capsys.readouterr()
    assert main(["rejects", "replay", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "1 extraction rejects closed" in out
    assert _rejects(warehouse_url)["b:no_header"][0] == "replayed"
    assert _count(warehouse_url, "select count(*) from contacts where source = 'b'") == 2
    # dated by the column the map names, not by when the fix came
    assert (
        _count(
            warehouse_url,
            "select count(*) from raw_contacts where source = 'b' and received_at < '2026-10-05'",
        )
        == 2
    )

    # a gets its column map, then a plain run: the changed config reads its file again
    cfg.write_text(
        cfg.read_text().replace(
            f"path: {tmp_path / 'a.csv'}}}", f"path: {tmp_path / 'a.csv'}, {fix}}}"
        )
    )
    assert main(["run", "--config", str(cfg)]) == 0
    assert _rejects(warehouse_url)["a:no_header"][0] == "replayed"
    assert _count(warehouse_url, "select count(*) from contacts where source = 'a'") == 2
    assert _count(warehouse_url, "select count(*) from contacts where source = 'c'") == 1

    # the ragged row is dropped by a person, with who and why
    capsys.readouterr()
    assert main(["rejects", "dismiss", "--config", str(cfg), "--reason", "ragged_row"]) == 2
    assert "--by NAME and --why TEXT" in capsys.readouterr().err
    args = ["--reason", "ragged_row", "--by", "Ana", "--why", "test row from the fair's demo"]
    assert main(["rejects", "dismiss", "--config", str(cfg), *args]) == 0
    assert "dismissed 1 reject(s) by Ana" in capsys.readouterr().out
    assert _rejects(warehouse_url)["c:ragged_row"] == (
        "dismissed",
        "Ana",
        "test row from the fair's demo",
    )
    assert main(["rejects", "dismiss", "--config", str(cfg), *args]) == 2  # nothing open
    assert main(["rejects", "list", "--config", str(cfg)]) == 0
    assert "quarantine is empty" in capsys.readouterr().out
