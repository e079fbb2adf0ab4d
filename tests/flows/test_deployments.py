"""prefect.yaml for real: a local Prefect server, the work pool, `deploy --all`, a worker, a backfill run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.conftest import ROOT
from warehouse import db

PREFECT = str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "prefect")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Prefect's server and worker stop cleanly on SIGINT (not SIGTERM)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A `prefect server start` on a free loopback port with its own PREFECT_HOME."""
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_CLI_PROMPT": "false",
        "COLUMNS": "240",  # rich tables unwrapped, so names can be read back
    }
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{env['PREFECT_API_URL']}/health", timeout=2) as r:
                    if json.load(r) is True:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(
                    "prefect server did not start: " + _tail(tmp_path / "server.log")
                )
            time.sleep(0.5)
        yield env
    finally:
        _stop(server)
        log.close()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _prefect(env: dict[str, str], *args: str, timeout: float = 90) -> str:
    done = subprocess.run(
        [PREFECT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_deployments_run_on_a_local_server_through_a_worker(
    prefect_server: dict[str, str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    env = {**prefect_server, "LEADFLOW_HOME": str(ROOT), "LEADFLOW_WAREHOUSE_URL": url}

    # `leadflow serve` registers the three schedules itself, with no pool and no worker.
    serve_log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    serve = subprocess.Popen(
        [
            str(Path(PREFECT).with_name("leadflow")),
            "--config",
            str(ROOT / "leadflow.yaml"),
            "serve",
        ],
        env=env,
        cwd=tmp_path,
        stdout=serve_log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while "leadflow-backfill/backfill" not in _prefect(env, "deployment", "ls"):
            assert serve.poll() is None, _tail(tmp_path / "serve.log")
            assert time.monotonic() < deadline, _tail(tmp_path / "serve.log")
            time.sleep(1)
    finally:
        _stop(serve)
        serve_log.close()
    assert serve.returncode is not None

    _prefect(env, "work-pool", "create", "leadflow", "--type", "process")
    out = _prefect(env, "--no-prompt", "deploy", "--all")
    for name in ("hourly-ingestion", "nightly-rebuild", "backfill"):
        assert name in out
    listed = _prefect(env, "deployment", "ls")
    assert "leadflow-backfill/backfill" in listed and "leadflow-rebuild/nightly-rebuild" in listed

    worker_log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed below
    worker = subprocess.Popen(
        [PREFECT, "worker", "start", "--pool", "leadflow", "--limit", "1"],
        env=env,
        cwd=tmp_path,  # the pull step, not the worker's folder, decides where the flow runs
        stdout=worker_log,
        stderr=subprocess.STDOUT,
    )
    try:
        out = _prefect(
            env,
            "deployment",
            "run",
            "leadflow-backfill/backfill",
            "-p",
            "start=2026-01-01",
            "-p",
            "end=2027-01-01",
            "--watch",
            "--watch-timeout",
            "80",
            timeout=90,
        )
    except AssertionError:
        raise AssertionError(_tail(tmp_path / "worker.log")) from None
    finally:
        _stop(worker)
        worker_log.close()
    assert "Completed" in out, out

    engine = db.make_engine(url)
    with engine.connect() as conn:
        run = conn.execute(text("select flow, status, params from pipeline_runs")).one()
        raw = conn.execute(text("select count(*) from raw_contacts")).scalar_one()
        cursors = conn.execute(text("select count(*) from source_cursors")).scalar_one()
    engine.dispose()
    assert (run.flow, run.status) == ("backfill", "succeeded")
    # The whole sample landed (the bounce in the mailbox is skipped, not landed); no cursor moved.
    assert raw == 23 and cursors == 0
