"""prefect.yaml for real: a local Prefect server, `leadflow serve`, the work pool, `deploy --all`, a worker, a backfill run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tests.conftest import ROOT
from warehouse import db

BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
PREFECT = str(BIN / "prefect")
DEPLOYMENTS = {
    "leadflow-pipeline/hourly-ingestion": "5 * * * *",
    "leadflow-rebuild/nightly-rebuild": "30 2 * * *",
    "leadflow-backfill/backfill": None,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Prefect's server, worker and `serve` stop cleanly on SIGINT (not SIGTERM)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def _wait_for(
    what: str, ready: Callable[[], bool], log: Path, proc: subprocess.Popen[bytes]
) -> None:
    """Poll `ready` every 0.2 s for up to four minutes (a server's first start migrates its
    database, slow on a busy machine); fail with the process's log if it dies first."""
    deadline = time.monotonic() + 240
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{what}: {_tail(log)}")
        time.sleep(0.2)


class Api:
    """The few REST calls the test reads back with (no Prefect client: nothing shared in-process)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.load(resp)

    def healthy(self) -> bool:
        try:
            return self.call("/health") is True
        except OSError:
            return False

    def deployments(self) -> dict[str, dict[str, Any]]:
        """Deployments by their `flow/deployment` name."""
        flows = {f["id"]: f["name"] for f in self.call("/flows/filter", {})}
        return {
            f"{flows[d['flow_id']]}/{d['name']}": d for d in self.call("/deployments/filter", {})
        }


class _Procs:
    """Background processes of one test, each logging to its own file, all stopped at the end."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        self.running: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(
        self, name: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - closed in stop_all
        proc = subprocess.Popen(
            list(args), env=env or self.env, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT
        )
        self.running.append((proc, log))
        return proc

    def stop_all(self) -> None:
        for proc, log in reversed(self.running):
            _stop(proc)
            log.close()


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[tuple[dict[str, str], Api, _Procs]]:
    """`prefect server start` on a free loopback port with its own PREFECT_HOME, and its processes."""
    port = _free_port()
    env = {
        # without LEADFLOW_HOME: only the worker is given one (see the pull step below)
        **{k: v for k, v in os.environ.items() if k != "LEADFLOW_HOME"},
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_CLI_PROMPT": "false",
        # A worker asks for work every 10 s by default; the test need not wait that long.
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    procs = _Procs(tmp_path, env)
    api = Api(env["PREFECT_API_URL"])
    server = procs.start(
        "server", PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)
    )
    try:
        _wait_for("prefect server did not start", api.healthy, tmp_path / "server.log", server)
        yield env, api, procs
    finally:
        procs.stop_all()


def _schedules(deployment: dict[str, Any]) -> list[tuple[str | None, str | None]]:
    return [
        (s["schedule"].get("cron"), s["schedule"].get("timezone")) for s in deployment["schedules"]
    ]


def _prefect(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        [PREFECT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_deployments_are_served_then_deployed_and_a_backfill_runs_through_a_worker(
    prefect_server: tuple[dict[str, str], Api, _Procs], sample_config: Path, sqlite_url: str
) -> None:
    base_env, api, procs = prefect_server
    logs = sample_config.parent
    env = {**base_env, "LEADFLOW_HOME": str(ROOT), "LEADFLOW_WAREHOUSE_URL": sqlite_url}

    # `leadflow serve` registers the three schedules itself, with no pool and no worker. The pool
    # is created meanwhile: it has nothing to do with the served deployments.
    serve = procs.start(
        "serve", str(BIN / "leadflow"), "--config", str(sample_config), "serve", env=env
    )
    pool = subprocess.Popen(
        [PREFECT, "work-pool", "create", "leadflow", "--type", "process"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    _wait_for(
        "leadflow serve registered no deployments",
        lambda: set(DEPLOYMENTS) <= set(api.deployments()),
        logs / "serve.log",
        serve,
    )
    served = api.deployments()
    _stop(serve)
    for name, cron in DEPLOYMENTS.items():
        assert served[name]["work_pool_name"] is None  # served from the process, no pool
        assert served[name]["parameters"] == {"config": str(sample_config)}
        assert _schedules(served[name]) == ([(cron, "UTC")] if cron else [])
    assert pool.wait(timeout=120) == 0, pool.communicate()[0]

    # The README's path: deploy everything in prefect.yaml onto the pool, a worker runs them.
    worker = procs.start(
        "worker", PREFECT, "worker", "start", "--pool", "leadflow", "--limit", "1", env=env
    )
    # Deployed from a shell without LEADFLOW_HOME: the pull step keeps its placeholder, which
    # the worker fills from its own environment when the run starts.
    out = _prefect(base_env, "--no-prompt", "deploy", "--all")
    deployed = api.deployments()
    for name, cron in DEPLOYMENTS.items():
        assert name.split("/")[1] in out
        assert deployed[name]["work_pool_name"] == "leadflow"
        assert deployed[name]["parameters"] == {"config": "leadflow.yaml"}
        assert _schedules(deployed[name]) == ([(cron, "UTC")] if cron else [])
        assert deployed[name]["description"] == served[name]["description"]
    assert deployed["leadflow-backfill/backfill"]["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $LEADFLOW_HOME }}"}}
    ]

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
            "-p",
            'sources=["fair_istanbul", "sales_inbox"]',
            "-p",
            f"config={sample_config}",  # the samples' copy: Data Docs go to the test's folder
            "--watch",
            "--watch-timeout",
            "100",
        )
    except AssertionError:
        raise AssertionError(_tail(logs / "worker.log")) from None
    assert "Completed" in out, out
    assert worker.poll() is None  # the worker ran it and is still waiting for more

    backfill_id = deployed["leadflow-backfill/backfill"]["id"]
    (run,) = [r for r in api.call("/flow_runs/filter", {}) if r["deployment_id"] == backfill_id]
    assert run["state_type"] == "COMPLETED"
    assert run["parameters"]["sources"] == ["fair_istanbul", "sales_inbox"]
    # the run explains itself in the UI: the funnel, its data-quality checks, rejects by reason
    artifacts = api.call("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})
    keys = sorted(a["key"].split("-run-")[0] for a in artifacts)
    assert keys == ["data-quality", "leadflow-funnel", "leadflow-rejects"]
    engine = db.make_engine(sqlite_url)
    with engine.connect() as conn:
        logged = conn.execute(text("select flow, status, params from pipeline_runs")).one()
        raw = conn.execute(
            text("select source, count(*) from raw_contacts group by source order by source")
        ).all()
        cursors = conn.execute(text("select count(*) from source_cursors")).scalar_one()
    engine.dispose()
    assert (logged.flow, logged.status) == ("backfill", "succeeded")
    params = logged.params if isinstance(logged.params, dict) else json.loads(logged.params)
    assert params["start"] == "2026-01-01" and params["sources"] == ["fair_istanbul", "sales_inbox"]
    # Only the two sources named landed, all of them (the bounce is skipped); no cursor moved.
    assert [tuple(r) for r in raw] == [("fair_istanbul", 7), ("sales_inbox", 4)]
    assert cursors == 0
    assert list((logs / "leadflow_docs").glob("run_*/index.html"))  # the config given was used
