"""One failing source does not stop the others: the run publishes them and is marked partial."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select, text

from flows.cli import EXIT_PARTIAL, main
from tests.faultserver import FaultServer, free_port, imap_source, serve, source_yaml, submissions
from warehouse import db
from warehouse.schema import pipeline_runs, source_cursors


def test_failing_sources_make_a_partial_run_and_the_others_publish(
    prefect_api: None,
    quick_retries: None,
    sample_config: Path,
    sqlite_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MAILBOX_PASSWORD", "not-used-the-port-is-closed")
    base = sample_config.read_text().replace("sqlite:///leadflow.db", sqlite_url)
    fake = FaultServer(submissions(4), always={1: "500"})
    closed = free_port()

    def configure(with_mailbox: bool) -> None:
        extra = source_yaml("api_forms", fake.url, attempts=2)
        if with_mailbox:
            extra += imap_source("mailbox", closed, "MAILBOX_PASSWORD")
        sample_config.write_text(base.replace("sources:\n", "sources:\n" + extra))

    engine = db.make_engine(sqlite_url)
    with serve(fake):
        configure(with_mailbox=True)
        assert main(["run", "--config", str(sample_config)]) == EXIT_PARTIAL
        out, err = capsys.readouterr()
        assert "source api_forms failed" in err and "HTTP 500" in err
        assert "source mailbox failed" in err and "ConnectionRefusedError" in err
        assert "partial" in out and "FAILED" in out
        # 2 attempts per request, and the connector task tried 4 times (3 retries): 8 requests
        assert len(fake.seen) == 8

        with engine.connect() as conn:
            (run,) = conn.execute(select(pipeline_runs)).all()
            cursors = {r.source: r.cursor for r in conn.execute(select(source_cursors))}
            contacts = conn.execute(text("select count(*) from contacts")).scalar_one()
        assert run.status == "partial"
        assert "api_forms: " in run.error and "HTTP 500" in run.error
        assert "mailbox: " in run.error and "Connection refused" in run.error
        assert set(run.stats["failed_sources"]) == {"api_forms", "mailbox"}
        # The four healthy sample sources were published as in any run; the failed ones hold no
        # position, so the next run reads them from the start.
        assert contacts == 20  # Mehmet Kaya (full name, a disposable mailbox) is a contact too
        assert not cursors.get("api_forms") and "mailbox" not in cursors
        assert {"fair_istanbul", "partners_hannover", "sales_inbox", "website_forms"} <= set(
            cursors
        )

        # The API recovers and the mailbox is taken out: the next run is whole again and picks
        # up everything the failed run could not read.
        fake.always.clear()
        configure(with_mailbox=False)
        assert main(["run", "--config", str(sample_config)]) == 0
    with engine.connect() as conn:
        api_raw = conn.execute(
            text("select count(*) from contacts where source = 'api_forms'")
        ).scalar_one()
        statuses = [r.status for r in conn.execute(select(pipeline_runs.c.status))]
    assert api_raw == 4
    assert sorted(statuses) == ["partial", "succeeded"]
    engine.dispose()
