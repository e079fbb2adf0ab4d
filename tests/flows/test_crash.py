"""SIGKILL at random points of a run, at least 20 times: nothing lost, nothing counted twice.

See tests/crashkit.py for how runs are forked, killed and checked.
"""

from __future__ import annotations

import itertools
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import pg_database
from tests.crashkit import STAGES, crash_and_compare, write_sample

pytestmark = pytest.mark.slow


def test_killed_runs_on_sqlite_leave_the_same_tables_as_a_clean_run(tmp_path: Path) -> None:
    config = write_sample(tmp_path)
    n = itertools.count()
    report = crash_and_compare(config, lambda: f"sqlite:///{tmp_path}/w{next(n)}.db", kills=20)
    print(report.summary())
    assert report.kills >= 20
    # every stage was hit at least once, whatever the machine's speed
    assert set(STAGES) <= set(report.died_in), report.summary()


def test_killed_runs_on_postgresql_leave_the_same_tables_as_a_clean_run(tmp_path: Path) -> None:
    """The same on the production warehouse: one episode that dies once in every stage."""
    config = write_sample(tmp_path)
    with ExitStack() as stack:
        report = crash_and_compare(
            config,
            lambda: stack.enter_context(pg_database()),
            kills=len(STAGES),
            per_episode=len(STAGES),
            seed=42,
            random_share=0.0,
        )
    print(report.summary())
    assert report.kills >= len(STAGES)
    assert set(STAGES) <= set(report.died_in), report.summary()
