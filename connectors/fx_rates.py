"""Reads an exchange-rate file the user points at: its text and its fingerprint (the cursor)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def read_rates_file(path: str) -> tuple[str, str]:
    """The file's text (UTF-8, a BOM tolerated) and the SHA-256 of its bytes."""
    data = Path(path).read_bytes()
    return data.decode("utf-8-sig", errors="replace"), hashlib.sha256(data).hexdigest()
