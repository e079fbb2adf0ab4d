"""Run the real `leadflow` command in a child process, with a clean environment of the test's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def command() -> list[str]:
    script = Path(sys.executable).with_name("leadflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]


def env(home: Path, **extra: str | None) -> dict[str, str]:
    """The test process's environment, less what would leak between tests, plus `extra`
    (a None value removes that variable)."""
    out = {k: v for k, v in os.environ.items() if not k.startswith(("LEADFLOW_", "PREFECT_"))}
    out.update(
        HOME=str(home),
        PYTHONPATH=str(ROOT),
        PREFECT_HOME=str(home / ".prefect-test"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="600",
    )
    for k, v in extra.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def leadflow(
    args: list[str], environ: dict[str, str], timeout: float = 600, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command(), *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=kwargs.pop("stdin", subprocess.DEVNULL),
        **kwargs,
    )
