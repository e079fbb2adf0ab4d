"""A real dovecot on loopback for the IMAP tests, started once per session and stopped after."""

from __future__ import annotations

import imaplib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PASSWORD = "s3cret-test-only"


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

    def new_user(self) -> str:
        user = f"u{uuid.uuid4().hex[:10]}"
        with self.users.open("a") as fh:
            fh.write(f"{user}:{{PLAIN}}{PASSWORD}\n")
        return user

    def login(self, user: str) -> imaplib.IMAP4:
        conn = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        conn.login(user, PASSWORD)
        return conn

    def append(self, user: str, messages: list[bytes], folder: str = "INBOX") -> None:
        conn = self.login(user)
        try:
            for raw in messages:
                typ, data = conn.append(folder, "", imaplib.Time2Internaldate(time.time()), raw)
                assert typ == "OK", data
        finally:
            conn.logout()

    def maildir(self, user: str) -> Path:
        return self.root / "mail" / user / "Maildir"

    def reset_uidvalidity(self, user: str) -> None:
        """What a server migration does: the same messages come back under a new UIDVALIDITY."""
        md = self.maildir(user)
        for name in (
            "dovecot-uidlist",
            "dovecot.index",
            "dovecot.index.cache",
            "dovecot.index.log",
        ):
            (md / name).unlink(missing_ok=True)
        # dovecot takes a new UIDVALIDITY from the clock, in seconds
        time.sleep(1.1)


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


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if not os.path.exists(binary):
        pytest.fail("dovecot is not installed: apt-get install -y dovecot-imapd")
    root = Path(tempfile.mkdtemp(prefix="leadflow-dovecot-"))
    os.chmod(root, 0o777)
    for sub in ("run", "state", "mail"):
        (root / sub).mkdir()
        os.chmod(root / sub, 0o777)
    users = root / "users"
    users.write_text("")
    os.chmod(users, 0o644)
    port = free_port()
    conf = root / "dovecot.conf"
    conf.write_text(_config(root, port, users))
    # dovecot forks into the background keeping its stdout/stderr: captured pipes never close
    subprocess.run(
        [binary, "-c", str(conf)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    log = (root / "dovecot.log").read_text(errors="replace")[-2000:]
                    pytest.fail(f"dovecot did not listen on {port}: {log}")
                time.sleep(0.05)
        yield Dovecot(root, port, conf, users)
    finally:
        subprocess.run([binary, "-c", str(conf), "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
