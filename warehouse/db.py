"""Engines and schema upgrades: how leadflow connects to its warehouse and brings it up to date."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, exc, inspect, make_url
from sqlalchemy.engine import URL

MIGRATIONS = Path(__file__).with_name("migrations")
URL_FORMS = "postgresql+psycopg://user@host:5432/dbname or sqlite:///path/to/file.db"


class WarehouseUnavailable(RuntimeError):
    """The warehouse cannot be reached or opened; the message is one line naming what was tried
    (dialect, host, port, database, user; never the password) and what to check."""


def _url(url: str) -> URL:
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return make_url(url)


def masked(url: str) -> str:
    """The URL with its password replaced by ***, as the summary and the errors show it."""
    try:
        u = _url(url)
    except exc.ArgumentError:
        return "(not a URL)"
    path = _sqlite_path(u) if u.get_backend_name() == "sqlite" else None
    if path is not None:
        u = u.set(database=str(path))  # the file a relative path names from here
    return u.render_as_string(hide_password=True)


def describe(url: str) -> str:
    """What a connection to `url` tries, in words: the dialect and where, never the password."""
    try:
        u = _url(url)
    except exc.ArgumentError:
        return "warehouse.url"
    if u.get_backend_name() == "sqlite":
        return f"sqlite file {_sqlite_path(u) or ':memory:'}"
    where = f"{u.host or 'localhost'}:{u.port or 'default port'}"
    who = f", user {u.username}" if u.username else ""
    return f"{u.get_backend_name()} at {where}, database {u.database or '(none)'}{who}"


def _sqlite_path(u: URL) -> Path | None:
    if not u.database or u.database == ":memory:" or u.database.startswith("file:"):
        return None
    return Path(u.database).resolve()


# What to check, by what the driver said (the first that matches); the rest gets a generic hint.
_HINTS = (
    ("connection refused", "check the host and port, and that the server is running"),
    ("does not exist", "check the database name, or create it first (createdb)"),
    ("password authentication failed", "check the user and password (LEADFLOW_WAREHOUSE_URL)"),
    ("no password supplied", "give the password in LEADFLOW_WAREHOUSE_URL"),
    ("could not translate host name", "check the host name"),
    ("name or service not known", "check the host name"),
    ("timeout", "check the host, the port and the network between here and the server"),
    ("timed out", "check the host, the port and the network between here and the server"),
    ("unable to open database file", "check that the file's folder exists and is writable"),
    ("readonly database", "check that the file and its folder are writable"),
    ("not a database", "the file is not a SQLite database: check the path"),
)


def cause(error: BaseException) -> str:
    """The driver's own first line for an error, without SQLAlchemy's background link."""
    inner = getattr(error, "orig", None) or error
    lines = [ln.strip() for ln in str(inner).splitlines() if ln.strip()]
    return lines[0] if lines else type(inner).__name__


def unavailable(url: str, error: BaseException) -> WarehouseUnavailable:
    """The one-line error for a warehouse URL that could not be used."""
    if isinstance(error, exc.NoSuchModuleError | exc.ArgumentError):
        kind = url.split("://", 1)[0] if "://" in url else url[:20]
        if isinstance(error, exc.NoSuchModuleError):
            why = f"unknown database kind {kind!r}"
        else:
            why = "not a database URL"
        return WarehouseUnavailable(f"warehouse.url: {why}: use {URL_FORMS}")
    if isinstance(error, ModuleNotFoundError):
        return WarehouseUnavailable(
            f"warehouse.url: the driver {error.name!r} is not installed: use {URL_FORMS}"
        )
    text = cause(error)
    low = text.lower()
    hint = next((h for k, h in _HINTS if k in low), "check warehouse.url or LEADFLOW_WAREHOUSE_URL")
    return WarehouseUnavailable(f"cannot open the warehouse ({describe(url)}): {text}; {hint}")


def check(url: str) -> None:
    """Connect once (SQLite: open or create the file); raise WarehouseUnavailable if that fails."""
    try:
        engine = make_engine(url)
    except (exc.ArgumentError, ModuleNotFoundError) as error:
        raise unavailable(url, error) from None
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("select 1")
    except (exc.DBAPIError, sqlite3.Error) as error:
        raise unavailable(url, error) from None
    finally:
        engine.dispose()


def read_only_engine(url: str) -> Engine | None:
    """An engine that cannot write (None when there is no warehouse yet: a SQLite file that does
    not exist). Opening it creates nothing; a dry run reads cursors through it."""
    try:
        u = _url(url)
    except exc.ArgumentError as error:
        raise unavailable(url, error) from None
    if u.get_backend_name() == "sqlite":
        path = _sqlite_path(u)
        if path is None or not path.is_file():
            return None
        # Without a -wal file the database is whole in its main file: `immutable` reads it without
        # creating -wal and -shm files. With one (a writer has it open), read through it.
        wal = path.with_name(path.name + "-wal").exists()
        uri = f"file:{path}?mode=ro" + ("" if wal else "&immutable=1")
        return create_engine(
            "sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)
        )
    try:
        engine = create_engine(u, connect_args={"options": "-c default_transaction_read_only=on"})
        with engine.connect() as conn:
            conn.exec_driver_sql("select 1")
    except (exc.ArgumentError, ModuleNotFoundError, exc.DBAPIError) as error:
        raise unavailable(url, error) from None
    return engine


def has_schema(engine: Engine) -> bool:
    """Whether the warehouse has been created (its cursors table exists)."""
    return inspect(engine).has_table("source_cursors")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for the warehouse URL; SQLite gets WAL so readers see the old or the new state."""
    engine = create_engine(_url(url), **kwargs)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # The sqlite3 module opens a transaction at the first write of a block; IMMEDIATE
            # takes the write lock right there, waiting on busy_timeout. A deferred one (the
            # default) can hold a read snapshot from that point (a write to a temporary key table,
            # then a join) and then fail at once with "database is locked" when it upgrades to
            # a writer after another connection committed: no busy wait can help that.
            dbapi_conn.isolation_level = "IMMEDIATE"
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # SQLite has one writer: a run landing a batch waits while another run's publish
            # holds the write lock for its whole transaction, minutes on a big chunk or a busy
            # machine. Runs are serialized by design (`pipeline_locks`); this is how long a
            # writer waits for SQLite's own lock before the run fails.
            cur.execute("PRAGMA busy_timeout=600000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Apply the migrations up to `revision` (all heads by default)."""
    from warehouse.load import ddl_in_transaction  # Arrow with it: not for every command's start

    cfg = _alembic_config()
    with engine.begin() as conn:
        # Without it each CREATE TABLE committed on its own on SQLite: a run killed mid-upgrade
        # left tables without the revision that made them, and every later upgrade failed on
        # "table already exists".
        ddl_in_transaction(conn)
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revisions(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(MigrationContext.configure(conn).get_current_heads())


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(_alembic_config()).get_heads())
