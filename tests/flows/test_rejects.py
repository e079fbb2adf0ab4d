"""The quarantine: rejected records are listed, and replayed after a fix they land and leave it."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main
from tests.conftest import write_config
from tests.flows.test_pipeline import count, snapshot

# First names only: without their mailboxes nobody is identified (a full name alone would be).
EXPO = """Ad;Kontakt Adresi;Firma
Deniz;deniz.kaya@kayalojistik.com.tr;Kaya Lojistik
Emre;emre@demirinsaat.com.tr;Demir İnşaat
;;
"""


def test_replay_after_a_fix_lands_the_quarantined_records(
    prefect_api: None,
    tmp_path: Path,
    warehouse_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sheet = tmp_path / "expo.csv"
    sheet.write_text(EXPO, encoding="utf-8")
    body = (
        f"quality:\n  docs_dir: {tmp_path / 'docs'}\n"
        f"sources:\n  - name: expo\n    kind: spreadsheet\n    path: {sheet}\n"
    )
    cfg = write_config(tmp_path / "leadflow.yaml", warehouse_url, body)
    assert main(["run", "--config", str(cfg)]) == 0
    # Nobody told leadflow that "Kontakt Adresi" is the email column: nobody is identified.
    assert count(warehouse_url, "select count(*) from contacts") == 0
    capsys.readouterr()
    assert main(["rejects", "list", "--reason", "no_identity", "--config", str(cfg)]) == 0
    listed = capsys.readouterr().out
    assert "2 record(s)" in listed and "no_identity" in listed

    # Replaying without a fix changes nothing: the records stay in quarantine.
    before = snapshot(warehouse_url)
    assert main(["rejects", "replay", "--reason", "no_identity", "--config", str(cfg)]) == 0
    assert snapshot(warehouse_url) == before

    # The fix: map the column. Replay re-processes the kept raw payloads.
    fixed = body.replace(
        f"    path: {sheet}\n", f"    path: {sheet}\n    columns: {{Kontakt Adresi: email}}\n"
    )
    write_config(cfg, warehouse_url, fixed)
    capsys.readouterr()
    assert main(["rejects", "replay", "--reason", "no_identity", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "2 landed and left the quarantine" in out and "Data Docs:" in out
    assert count(warehouse_url, "select count(*) from contacts") == 2
    assert count(warehouse_url, "select count(*) from leads") == 2
    assert (
        count(
            warehouse_url,
            "select count(*) from rejects where status = 'replayed' and replay_run_id is not null",
        )
        == 2
    )
    assert main(["rejects", "list", "--reason", "no_identity", "--config", str(cfg)]) == 0
    assert "no rejects with reason no_identity" in capsys.readouterr().out
    # Kept for the record: the history still shows them, marked as replayed.
    assert main(["rejects", "list", "--all", "--config", str(cfg)]) == 0
    assert capsys.readouterr().out.count("replayed") >= 2
    # The empty row never was a record; a second replay is a no-op.
    after = snapshot(warehouse_url)
    assert main(["rejects", "replay", "--config", str(cfg)]) == 0
    assert snapshot(warehouse_url) == after
    assert (
        count(
            warehouse_url,
            "select count(*) from pipeline_runs p where not exists "
            "(select 1 from dq_results d where d.run_id = p.run_id)",
        )
        == 0
    ), "every run records its checks"
