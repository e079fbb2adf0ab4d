"""A standalone dovecot on a free loopback port, for the IMAP tests and the read benchmark.

It runs as a daemon of its own (its own config, base, state and log in a temporary folder);
the system's dovecot service is never touched.
"""

from __future__ import annotations

import email
import imaplib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PASSWORD = "s3cret-test-only"
USERS = 200  # mailboxes a session can hand out, one per test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Dovecot:
    """A running dovecot; each test gets its own user, so mailboxes never leak between tests."""

    root: Path
    port: int
    conf: Path
    users: Path
    serial: Iterator[int] = field(default_factory=itertools.count)

    def new_user(self) -> str:
        # dovecot re-reads its passwd-file at most once a second: users written in the same
        # second as a login would be unknown to it, so they are all written before it starts
        return f"u{next(self.serial):03d}"

    def login(self, user: str) -> imaplib.IMAP4:
        conn = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        conn.login(user, PASSWORD)
        return conn

    def append(
        self, user: str, messages: list[bytes], folder: str = "INBOX", *, dated: bool = True
    ) -> None:
        """APPEND each message; `dated` sets its internal date (what SEARCH SINCE reads) from Date:."""
        conn = self.login(user)
        try:
            for raw in messages:
                when = internal_date(raw) if dated else None
                stamp = imaplib.Time2Internaldate(when or time.time())
                typ, data = conn.append(_quoted(folder), "", stamp, raw)
                assert typ == "OK", data
        finally:
            conn.logout()

    def recreate_folder(self, user: str, folder: str) -> None:
        """Delete and create a folder again: dovecot gives it a new UIDVALIDITY, as a migration would."""
        conn = self.login(user)
        try:
            for command in (conn.delete, conn.create):
                typ, data = command(_quoted(folder))
                assert typ == "OK", data
        finally:
            conn.logout()


def _quoted(folder: str) -> str:
    return f'"{folder}"'


def internal_date(raw: bytes) -> datetime | None:
    head = email.message_from_bytes(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
    try:
        return parsedate_to_datetime(str(head["Date"])) if head["Date"] else None
    except (TypeError, ValueError):
        return None


def corpus(*names: str) -> list[bytes]:
    """Messages of the committed corpus, by file name (all of them, in order, without names)."""
    folder = FIXTURES / "mail"
    paths = [folder / n for n in names] if names else sorted(folder.glob("*.eml"))
    return [p.read_bytes() for p in paths]


def _config(root: Path, port: int, users: Path) -> str:
    return f"""
instance_name = leadflow-test-{port}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_failure_delay = 0
mail_fsync = never
auth_mechanisms = plain login
mail_location = maildir:{root}/mail/%u/Maildir
default_internal_user = nobody
default_internal_group = nogroup
default_login_user = nobody
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {users}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""


class DovecotError(RuntimeError):
    """dovecot is missing, or did not start."""


@contextmanager
def running_dovecot() -> Iterator[Dovecot]:
    """Start a dovecot, wait until it listens, and stop it (and remove its files) afterwards."""
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if not os.path.exists(binary):
        raise DovecotError(
            "dovecot is not installed: make services (apt-get install dovecot-imapd)"
        )
    root = Path(tempfile.mkdtemp(prefix="leadflow-dovecot-"))
    os.chmod(root, 0o777)
    for sub in ("run", "state", "mail"):
        (root / sub).mkdir()
        os.chmod(root / sub, 0o777)
    users = root / "users"
    users.write_text("".join(f"u{n:03d}:{{PLAIN}}{PASSWORD}\n" for n in range(USERS)))
    os.chmod(users, 0o644)
    port = free_port()
    conf = root / "dovecot.conf"
    conf.write_text(_config(root, port, users))
    # dovecot daemonizes and its children keep the parent's stdout/stderr: a pipe here would
    # never reach EOF, so its start-up output goes to a file
    with (root / "start.log").open("wb") as out:
        started = subprocess.run([binary, "-c", str(conf)], stdout=out, stderr=out, timeout=30)
    try:
        if started.returncode != 0:
            log = (root / "start.log").read_text(errors="replace")
            raise DovecotError(f"dovecot did not start: {log}")
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    log = (root / "dovecot.log").read_text(errors="replace")[-2000:]
                    raise DovecotError(f"dovecot did not listen on {port}: {log}") from None
                time.sleep(0.05)
        yield Dovecot(root, port, conf, users)
    finally:
        subprocess.run(
            [binary, "-c", str(conf), "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
        shutil.rmtree(root, ignore_errors=True)
