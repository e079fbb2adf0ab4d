"""The run imports Great Expectations on a thread of its own while it reads its sources; the
run's own SQLAlchemy calls on the main thread must never meet a half-imported module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A fresh interpreter, as a `leadflow run` is: start the early import, then bind values the way
# the migrations and every statement do, for as long as the import thread lives.
SCRIPT = """
import threading
import time
from sqlalchemy import inspection
from flows import pipeline

class Plain:
    pass

pipeline._import_quality_gate_early()
thread = next(t for t in threading.enumerate() if t.name == "leadflow-import-gx")
calls = 0
while thread.is_alive():
    inspection.inspect(Plain(), False)
    calls += 1
    time.sleep(0)  # let the import go on
thread.join()
import great_expectations  # the thread finished its import
print(calls)
"""


def test_sqlalchemy_on_the_main_thread_never_meets_the_half_imported_orm() -> None:
    # Before the fix every try failed: "partially initialized module 'sqlalchemy.orm.exc' has no
    # attribute 'UnmappedClassError'", as a run failed in its migrations.
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert int(done.stdout.strip().splitlines()[-1]) > 0  # it did call while the import ran
