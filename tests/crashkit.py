"""Kill the pipeline with SIGKILL at chosen moments, run it again, and check the warehouse is whole.

A *fork server* (`python -m tests.crashkit serve`) imports leadflow once, then forks one child per
run; the child runs the pipeline's stages (extract and land every source, then normalize →
resolve → qualify → validate → publish, with its `pipeline_runs` row) and reports each stage it
enters on stdout. The parent kills the child with SIGKILL the moment it enters a chosen stage
(plus a random few milliseconds) or after a random delay, so every stage is hit on purpose
without paying the import of Prefect and Great Expectations per run.

After every kill the warehouse must hold no half-landed batch: each source's cursor covers only
records that are in `raw_contacts`. After the final run every table must equal a clean run's.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "sources"

# Where a child can be when it dies: reading a source, inside a landing transaction, normalizing,
# publishing, validating the merged state just before the commit, and writing the run log.
STAGES = ("extract", "land", "normalize", "publish", "validate_published", "finish")

FIRST = ["Ayşe", "Mehmet", "Jürgen", "Anna", "İsmail", "Zeynep", "Klaus", "Elif", "John", "Can"]
LAST = ["Yılmaz", "Kaya", "Weiß", "Müller", "Işık", "Demir", "Schmidt", "Öztürk", "Smith", "Ak"]
TITLES = ["CEO", "Satın Alma Müdürü", "Einkauf", "Engineer", "", "Genel Müdür"]
NOTES = ["Fiyat teklifi istiyoruz", "please send a quote", "Demo bitte", "", "3 ay içinde"]


def write_sample(folder: Path, rows: int = 300, files: int = 3, seed: int = 7) -> Path:
    """The bundled samples plus a folder of `files` generated sheets with `rows` rows in all:
    repeated people in other spellings, junk rows and a ragged row among them."""
    import shutil

    rng = random.Random(seed)
    src = folder / "sources"
    shutil.copytree(EXAMPLES, src)
    bulk = src / "bulk"
    bulk.mkdir()
    per = rows // files
    n = 0
    for f in range(files):
        lines = ["Ad Soyad;E-posta;Telefon;Firma;Ülke;Unvan;Not;KVKK Onayı"]
        for _ in range(per):
            i = rng.randrange(rows // 2)  # about half are repeats of someone seen before
            first, last = FIRST[i % 10], LAST[(i // 10) % 10]
            name = [f"{first} {last}", f"{last.upper()} {first}", f"{last}, {first}"][n % 3]
            email = f"{first.lower()}.{last.lower()}{i}@firma{i % 37}.com.tr"
            phone = f"0532 {i % 1000:03d} {i % 100:02d} {(i * 7) % 100:02d}" if i % 4 else ""
            if n % 41 == 0:
                email, name, phone = "", "", ""  # junk: nobody to identify
            cells = [name, email, phone, f"Firma {i % 37} A.Ş.", "TR", TITLES[i % 6]]
            cells += [NOTES[i % 5], "Evet" if i % 3 else "Hayır"]
            lines.append(";".join(cells))
            n += 1
        if f == 0:
            lines.append("Bozuk;satır")  # ragged: a reject with its reason
        (bulk / f"fair_{f:02d}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = folder / "leadflow.yaml"
    body = (
        (ROOT / "leadflow.yaml").read_text(encoding="utf-8").replace("examples/sources", "sources")
    )
    body = body.replace("url: sqlite:///leadflow.db", "url: sqlite:///unused.db")
    # The generated sheets have no date column: the source dates them, so a clean run and a
    # crashed one (landed minutes apart) give the same rows; undated, each warehouse would date
    # them by its own first landing.
    body += "  - name: fair_bulk\n    kind: spreadsheet\n    path: sources/bulk\n"
    body += "    received_at: 2026-10-20\n"
    body += f"quality:\n  docs_dir: {folder / 'docs'}\n"
    cfg.write_text(body, encoding="utf-8")
    return cfg


# ---- the child: one pipeline run that reports its stages ---------------------------------------


def _mark(stage: str) -> None:
    os.write(1, f"stage {stage}\n".encode())


def _instrument() -> None:
    """Report stage entries; wraps module attributes in the (forked, short-lived) child only."""
    from flows import stages
    from warehouse import landing, publish, quality

    def wrap(owner: Any, name: str, stage: str | Callable[..., str]) -> None:
        inner = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            _mark(stage(*args, **kwargs) if callable(stage) else stage)
            return inner(*args, **kwargs)

        setattr(owner, name, wrapper)

    wrap(stages, "iter_source", "extract")
    wrap(landing, "land_batch", "land")
    wrap(stages, "normalize_batch", "normalize")
    wrap(publish, "publish", "publish")
    wrap(quality, "published_frames", "validate_published")


def run_pipeline(config: str, url: str) -> None:
    """The pipeline's stages in order, as the flow wires them, with its run log."""
    import uuid

    from flows import stages
    from flows.settings import load_settings
    from warehouse import db, runs

    settings = load_settings(config)
    engine = db.make_engine(url)
    db.upgrade(engine)
    run_id = f"run_{uuid.uuid4().hex[:20]}"
    with engine.begin() as conn:
        runs.start_run(conn, run_id, "pipeline", {"sources": [s.name for s in settings.sources]})
    stats: dict[str, Any] = {"sources": {}}
    for source in settings.sources:
        stats["sources"][source.name] = stages.extract_and_land(engine, source, run_id).as_dict()
    stats["process"] = stages.process_pending(engine, settings, run_id).as_dict()
    _mark("finish")
    with engine.begin() as conn:
        runs.finish_run(conn, run_id, "succeeded", stats)
    engine.dispose()


def serve(config: str) -> None:
    """Read `run URL` lines; fork a child per line; report `pid N`, its stages, `exit N CODE`."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    # Everything a run needs is imported (and Great Expectations warmed up) before any fork.
    import logging

    import great_expectations  # noqa: F401

    from flows import stages  # noqa: F401
    from warehouse import quality  # noqa: F401

    logging.disable(logging.WARNING)
    _emit("ready")
    for line in sys.stdin:
        cmd, _, url = line.strip().partition(" ")
        if cmd != "run":
            break
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                _instrument()
                run_pipeline(config, url)
            except BaseException as exc:  # reported to the parent, which fails the test
                os.write(2, f"child failed: {type(exc).__name__}: {exc}\n".encode())
                code = 1
            finally:
                os._exit(code)
        _emit(f"pid {pid}")
        _, status = os.waitpid(pid, 0)
        _emit(f"exit {pid} {os.waitstatus_to_exitcode(status)}")


def _emit(text: str) -> None:
    os.write(1, (text + "\n").encode())


# ---- the parent: drive the server, kill, check -------------------------------------------------


@dataclass
class Attempt:
    target: str  # a stage, or "random"
    died_in: str | None  # the last stage the child reported before it died (None: never started)
    killed: bool
    seconds: float


@dataclass
class ForkServer:
    proc: subprocess.Popen[bytes]
    buffer: bytes = b""
    log: list[str] = field(default_factory=list)

    def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"the fork server said nothing for {timeout} s: {self.log[-5:]}")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the fork server ended: {self.log[-5:]}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        text = line.decode()
        self.log.append(text)
        return text

    def _start(self, url: str) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {url}\n".encode())
        self.proc.stdin.flush()
        line = self._line(60)
        assert line.startswith("pid "), line
        return int(line.split()[1])

    def _until_exit(self, pid: int, timeout: float = 300) -> tuple[int, str | None]:
        last: str | None = None
        while True:
            line = self._line(timeout)
            if line.startswith("stage "):
                last = line.split()[1]
            elif line.startswith(f"exit {pid} "):
                return int(line.split()[2]), last

    def complete(self, url: str) -> float:
        """One run to its end; its duration."""
        t0 = time.monotonic()
        pid = self._start(url)
        code, _ = self._until_exit(pid)
        if code != 0:
            raise AssertionError(f"a complete run failed (exit {code}); see stderr")
        return time.monotonic() - t0

    def kill_at(self, url: str, target: str, rng: random.Random, budget: float) -> Attempt:
        """Start a run and SIGKILL it on entering `target` (after 0–20 ms), or after a random
        delay within `budget` seconds when `target` is "random"."""
        t0 = time.monotonic()
        pid = self._start(url)
        deadline = t0 + (rng.uniform(0.05, budget) if target == "random" else 600)
        last: str | None = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                line = self._line(left)
            except TimeoutError:
                break
            if line.startswith("stage "):
                last = line.split()[1]
                if last == target:
                    # the run log's last write is quick: catch it inside, not after
                    time.sleep(rng.uniform(0, 0.002 if target == "finish" else 0.02))
                    break
            elif line.startswith(f"exit {pid} "):
                code = int(line.split()[2])
                if code != 0:
                    raise AssertionError(f"a run failed on its own (exit {code})")
                return Attempt(target, last, False, time.monotonic() - t0)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it finished (and was reaped) in the meantime: the exit line says so
        code, after = self._until_exit(pid)
        return Attempt(target, after or last, code == -signal.SIGKILL, time.monotonic() - t0)

    def close(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(b"quit\n")
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def fork_server(config: Path, stderr: IO[bytes] | None = None) -> Iterator[ForkServer]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.crashkit", "serve", str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=str(ROOT),
        env=env,
    )
    server = ForkServer(proc)
    try:
        line = server._line(180)
        assert line == "ready", line
        yield server
    finally:
        server.close()


# ---- what must hold --------------------------------------------------------------------------


def snapshot(url: str) -> dict[str, list[tuple[str, ...]]]:
    """Every data table's rows (cursors included), sorted, without the run ids that name runs."""
    from sqlalchemy import select

    from warehouse import db
    from warehouse.schema import DATA_TABLES, metadata

    engine = db.make_engine(url)
    out: dict[str, list[tuple[str, ...]]] = {}
    with engine.connect() as conn:
        for name in DATA_TABLES:
            table = metadata.tables[name]
            cols = [c for c in table.columns if c.name != "run_id"]
            out[name] = sorted(tuple(map(repr, r)) for r in conn.execute(select(*cols)))
    engine.dispose()
    return out


def check_consistent(config: Path, url: str) -> list[str]:
    """What a crash may never leave behind, as a list of violations (empty when whole):

    - a cursor ahead of the landed data (it covers a file whose records are not all landed);
    - a raw record counted twice (two contacts, two open normalize rejects, or both);
    - a contact without its raw record or its lead link.
    """
    from sqlalchemy import select, text

    from flows.settings import load_settings
    from flows.sources import iter_source
    from transforms.records import raw_id_for
    from warehouse import db
    from warehouse.schema import raw_contacts, source_cursors

    problems: list[str] = []
    settings = load_settings(config)
    engine = db.make_engine(url)
    db.upgrade(engine)  # a run killed before or during its first upgrade: the next one completes it
    with engine.connect() as conn:
        landed = {r.raw_id for r in conn.execute(select(raw_contacts.c.raw_id))}
        cursors = {r.source: r.cursor for r in conn.execute(select(source_cursors))}
        for source in settings.sources:
            stored = (cursors.get(source.name) or {}).get("files", {})
            for batch in iter_source(source, None):
                files = batch.cursor.get("files", {})
                covered = files and all(stored.get(p) == fp for p, fp in files.items())
                missing = [
                    r.source_record_id
                    for r in batch.records
                    if raw_id_for(r.source, r.source_record_id) not in landed
                ]
                if covered and missing:
                    problems.append(
                        f"cursor of {source.name} is ahead of the landed data: "
                        f"{len(missing)} records of a covered file are not landed"
                    )
        twice = conn.execute(
            text(
                "select raw_id, count(*) from ("
                " select raw_id from contacts"
                " union all select raw_id from rejects where stage = 'normalize' and status = 'open'"
                ") t group by raw_id having count(*) > 1"
            )
        ).all()
        problems += [f"raw record {r[0]} counted {r[1]} times" for r in twice]
        orphans = conn.execute(
            text(
                "select count(*) from contacts c where not exists "
                "(select 1 from raw_contacts r where r.raw_id = c.raw_id) or not exists "
                "(select 1 from lead_links l where l.contact_id = c.contact_id)"
            )
        ).scalar_one()
        if orphans:
            problems.append(f"{orphans} contacts without their raw record or lead link")
    engine.dispose()
    return problems


def accounted(url: str) -> tuple[int, int]:
    """(raw records, raw records that became exactly one contact or one open reject)."""
    from sqlalchemy import text

    from warehouse import db

    engine = db.make_engine(url)
    with engine.connect() as conn:
        raw = conn.execute(text("select count(*) from raw_contacts")).scalar_one()
        done = conn.execute(
            text(
                "select count(distinct raw_id) from ("
                " select raw_id from contacts"
                " union all select raw_id from rejects where stage = 'normalize'"
                ") t"
            )
        ).scalar_one()
    engine.dispose()
    return int(raw), int(done)


@dataclass
class CrashReport:
    kills: int
    attempts: list[Attempt]
    died_in: Counter[str]
    seconds: float

    def summary(self) -> str:
        where = ", ".join(f"{k} {v}" for k, v in sorted(self.died_in.items()))
        return f"{self.kills} kills in {self.seconds:.1f} s; died in: {where}"


def crash_and_compare(
    config: Path,
    fresh_url: Callable[[], str],
    *,
    kills: int,
    per_episode: int = 5,
    seed: int = 20261127,
    random_share: float = 0.3,
    verbose: bool = False,
) -> CrashReport:
    """Episodes on fresh warehouses: up to `per_episode` kills, then a complete run, then the
    tables must equal a clean run's. Stops when `kills` runs were killed."""
    rng = random.Random(seed)
    t0 = time.monotonic()
    attempts: list[Attempt] = []
    with fork_server(config) as server:
        clean = fresh_url()
        budget = server.complete(clean)
        if verbose:
            print(f"clean run: {budget:.2f} s", file=sys.stderr)
        expected = snapshot(clean)
        assert expected["contacts"], "the clean run published nothing"
        done = episode = 0
        hit: set[str] = set()
        # Until `kills` runs died and every stage was hit (a kill can miss a stage that passed
        # faster than the signal; a bounded number of extra episodes makes up for it).
        while (done < kills or hit < set(STAGES)) and episode < 3 * kills:
            url = fresh_url()
            # Stages in the order a run meets them, so each kill finds its stage still ahead:
            # a later run of the episode resumes from what the earlier kills left.
            # Each episode leaves out another stage, so a few episodes hit every one of them.
            skip = STAGES[episode % len(STAGES)] if per_episode < len(STAGES) else None
            targets = [s for s in STAGES if s != skip][:per_episode]
            if rng.random() < random_share:
                targets.insert(0, "random")
            episode += 1
            for target in targets if done >= kills else targets[: kills - done]:
                attempt = server.kill_at(url, target, rng, budget)
                attempts.append(attempt)
                if verbose:
                    print(attempt, file=sys.stderr)
                done += attempt.killed
                if attempt.killed and attempt.died_in:
                    hit.add(attempt.died_in)
                problems = check_consistent(config, url)
                assert not problems, f"after {attempt}: {problems}"
            server.complete(url)
            assert not check_consistent(config, url)
            raw, done_raw = accounted(url)
            assert raw == done_raw, f"{raw - done_raw} landed records were never processed"
            got = snapshot(url)
            for table in expected:
                assert got[table] == expected[table], f"{table} differs from the clean run"
    died = Counter(a.died_in or "start-up" for a in attempts if a.killed)
    return CrashReport(done, attempts, died, time.monotonic() - t0)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    else:
        print(json.dumps({"usage": "python -m tests.crashkit serve CONFIG"}))
        sys.exit(2)
