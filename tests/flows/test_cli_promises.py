"""What the README promises of the command line, through the real `leadflow` in a child process:
a dry run writes nothing and counts from the cursors, forget says what it will do and asks,
a --reason nobody was rejected for is an error, the summary names its warnings and its warehouse,
a closed pipe ends quietly, and Prefect's database goes beside the config file."""

from __future__ import annotations

import hashlib
import os
import pty
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.clirun import command, env, leadflow
from tests.conftest import EXAMPLES, ROOT, pg_database


def _counts(stdout: str, column: str) -> dict[str, int]:
    """A column of the run summary table, by source (cells are read at the header's offsets)."""
    lines = stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("source ") and column in ln)
    header = lines[head]
    start = header.index(f" {column} ") + 1 if f" {column} " in header else header.index(column)
    end = start + len(column)
    out = {}
    for ln in lines[head + 2 :]:
        if not ln.strip() or ln.startswith(("warehouse:", "processed ", "data quality")):
            break
        out[ln.split()[0]] = int(ln[start:end].strip() or 0)
    return out


def _tree(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder` with its content hash and modification time."""
    return {
        str(p.relative_to(folder)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@dataclass
class Project:
    folder: Path
    home: Path
    config: Path
    db: Path
    environ: dict[str, str]
    fresh_dry_run: subprocess.CompletedProcess[str]
    run: subprocess.CompletedProcess[str]
    before_run: dict[str, tuple[str, int]]

    def scalar(self, sql: str) -> int:
        engine = create_engine(f"sqlite:///{self.db}")
        with engine.connect() as conn:
            value = int(conn.execute(text(sql)).scalar_one())
        engine.dispose()
        return value


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The samples in a folder of their own, a dry run on it, then one real run, with no
    PREFECT_HOME set (as outside `make`) and a home folder of the test's own."""
    folder = tmp_path_factory.mktemp("project")
    home = tmp_path_factory.mktemp("home")
    shutil.copytree(EXAMPLES, folder / "sources")
    config = folder / "leadflow.yaml"
    body = (
        (ROOT / "leadflow.yaml").read_text(encoding="utf-8").replace("examples/sources", "sources")
    )
    config.write_text(body, encoding="utf-8")
    environ = env(home, PREFECT_HOME=None)
    before = _tree(folder)
    fresh = leadflow(["run", "--config", str(config), "--dry-run"], environ, cwd=folder)
    assert _tree(folder) == before, "a dry run wrote into the project folder"
    run = leadflow(["run", "--config", str(config)], environ, cwd=folder)
    assert run.returncode == 0, run.stderr[-3000:]
    return Project(folder, home, config, folder / "leadflow.db", environ, fresh, run, before)


def test_a_dry_run_on_a_fresh_folder_writes_nothing_and_counts_what_a_run_lands(
    project: Project,
) -> None:
    dry = project.fresh_dry_run
    assert dry.returncode == 0, dry.stderr
    assert "nothing was written" in dry.stdout
    # no warehouse file, no Prefect database beside the config or in the home folder
    assert not (project.home / ".prefect").exists()
    assert "Traceback" not in dry.stderr
    assert _counts(dry.stdout, "would_land") == _counts(project.run.stdout, "landed")
    assert sum(_counts(dry.stdout, "would_land").values()) > 0


def test_a_dry_run_after_a_run_counts_from_the_cursors_and_changes_no_byte(
    project: Project,
) -> None:
    before = _tree(project.folder)
    dry = leadflow(
        ["run", "--config", str(project.config), "--dry-run"], project.environ, cwd=project.folder
    )
    assert dry.returncode == 0, dry.stderr
    would = _counts(dry.stdout, "would_land")
    assert set(would) == set(_counts(project.run.stdout, "landed"))
    assert all(n == 0 for n in would.values()), dry.stdout  # a real run would land nothing
    assert _tree(project.folder) == before  # not a byte, not a new -wal or -shm file


def test_a_dry_run_on_postgresql_creates_no_table_and_shows_the_url_masked(tmp_path: Path) -> None:
    cfg = tmp_path / "leadflow.yaml"
    body = (ROOT / "leadflow.yaml").read_text(encoding="utf-8")
    cfg.write_text(body.replace("examples/sources", str(EXAMPLES)), encoding="utf-8")
    with pg_database() as url:
        secret_url = url.replace("postgres@", "postgres:pa55word@")
        dry = leadflow(
            ["run", "--config", str(cfg), "--dry-run"],
            env(tmp_path, LEADFLOW_WAREHOUSE_URL=secret_url),
            cwd=tmp_path,
        )
        engine = create_engine(url)
        tables = inspect(engine).get_table_names()
        engine.dispose()
    assert dry.returncode == 0, dry.stderr
    assert tables == []
    assert "pa55word" not in dry.stdout + dry.stderr
    assert "warehouse: postgresql+psycopg://postgres:***@127.0.0.1" in dry.stdout
    assert sum(_counts(dry.stdout, "would_land").values()) > 0


def test_the_summary_names_every_warning_and_the_warehouse(project: Project) -> None:
    out = project.run.stdout
    failed = project.scalar(
        "select count(*) from dq_results where not success and expectation != 'row_count'"
    )
    m = re.search(r"data quality: \d+ checks, (\d+) warnings?;", out)
    assert m, out
    assert int(m.group(1)) == failed >= 1
    named = sorted(ln for ln in out.splitlines() if ln.startswith("  warning: "))
    assert len(named) == failed
    # each line names its check as dq_results does: suite, expectation and the column it is on
    engine = create_engine(f"sqlite:///{project.db}")
    with engine.connect() as conn:
        checks = conn.execute(
            text(
                "select suite, expectation, column_name from dq_results "
                "where not success and expectation != 'row_count'"
            )
        ).all()
    engine.dispose()
    heads = sorted(f"  warning: {s} {e}" + (f" on {c}:" if c else ":") for s, e, c in checks)
    assert len(heads) == len(named)
    assert all(ln.startswith(h) for ln, h in zip(named, heads, strict=True)), (named, heads)
    assert any("freshness ExpectColumnValuesToBeBetween" in ln for ln in named), named
    assert f"warehouse: sqlite:///{project.db}\n" in out


def test_prefect_keeps_its_database_beside_the_config_when_prefect_home_is_unset(
    project: Project,
) -> None:
    assert (project.folder / ".prefect").is_dir()
    assert any((project.folder / ".prefect").iterdir())
    assert not (project.home / ".prefect").exists()


def _tombstones(project: Project) -> int:
    return project.scalar("select count(*) from erasure_tombstones")


def test_forget_without_a_terminal_refuses_unless_yes(project: Project) -> None:
    before = _tombstones(project)
    args = ["forget", "--config", str(project.config), "nobody-at-all@example.org"]
    refused = leadflow(args, project.environ, cwd=project.folder)
    assert refused.returncode == 2
    assert "nothing in the warehouse matches" in refused.stdout
    assert refused.stderr.strip().splitlines() == [
        "leadflow: forget: not confirmed (no terminal to ask on): give --yes to erase; "
        "nothing was written"
    ]
    assert _tombstones(project) == before
    done = leadflow([*args[:3], "--yes", args[3]], project.environ, cwd=project.folder)
    assert done.returncode == 0, done.stderr
    assert "nothing in the warehouse matches; will only keep a hashed tombstone" in done.stdout
    assert _tombstones(project) == before + 1


def _on_a_terminal(project: Project, args: list[str], answer: str) -> tuple[int, str]:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [*command(), *args],
        env=project.environ,
        cwd=project.folder,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    seen = b""
    while b"[y/N]" not in seen:
        chunk = os.read(primary, 4096)
        assert chunk, seen
        seen += chunk
    os.write(primary, answer.encode() + b"\n")
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(primary)
    return proc.wait(timeout=120), seen.decode(errors="replace")


def test_forget_on_a_terminal_says_what_it_will_erase_and_asks(project: Project) -> None:
    who = "ayse.yilmaz@gmail.com"
    leads = project.scalar("select count(*) from leads")
    args = ["forget", "--config", str(project.config), who]
    code, shown = _on_a_terminal(project, args, "n")
    assert code == 2 and "will erase leads=1" in shown and "cancelled" in shown
    assert project.scalar("select count(*) from leads") == leads
    code, shown = _on_a_terminal(project, args, "y")
    assert code == 0 and "erased: leads=1" in shown, shown
    assert project.scalar("select count(*) from leads") == leads - 1


@pytest.mark.parametrize("action", ["replay", "list"])
def test_a_reason_nobody_was_rejected_for_is_an_error(project: Project, action: str) -> None:
    runs = project.scalar("select count(*) from pipeline_runs")
    result = leadflow(
        ["rejects", "--config", str(project.config), action, "--reason", "nosuch"],
        project.environ,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("leadflow: --reason nosuch: no record was ever rejected")
    assert "(reasons seen: " in line  # the reasons in the warehouse, or "none yet"
    assert project.scalar("select count(*) from pipeline_runs") == runs  # no replay run started


def test_output_cut_short_by_a_closed_pipe_ends_quietly(project: Project) -> None:
    proc = subprocess.Popen(
        [*command(), "status", "--config", str(project.config)],
        env=project.environ,
        cwd=project.folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `| head` that has read enough, before anything was written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert err == ""


def test_the_deployment_commands_turn_prefect_telemetry_off() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Deployments", 1)[1].split("```", 2)[1]
    first = block.strip().splitlines()[1]
    assert first.startswith("export ") and "PREFECT_SERVER_ANALYTICS_ENABLED=false" in first
    assert "DO_NOT_TRACK=1" in first
    import yaml

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    for d in spec["deployments"]:
        envs = d["work_pool"]["job_variables"]["env"]
        assert envs["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and envs["DO_NOT_TRACK"] == "1"
