"""A logging filter that keeps secrets and personal data (emails, phones) out of every log line."""

from __future__ import annotations

import logging
import re
from typing import Any

# Credentials in URLs (scheme://user:password@host) and key=value / "key": "value" secrets.
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^\s:/@]+:)[^\s@/]+(?P<at>@)")
_SECRET_PAIR = re.compile(
    r"(?i)(?P<key>\b(?:password|passwd|pwd|secret|token|api[_-]?key|authorization)\b[\"']?\s*[:=]\s*[\"']?)"
    r"(?:Bearer\s+|Basic\s+)?[^\s\"',;&]+"
)
_EMAIL = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
# Phone-like runs: an optional +, then 7+ digits allowed to be broken by spaces, dots, dashes or
# parentheses. Runs that start like an ISO date (timestamps in log lines) are left alone.
_PHONE = re.compile(r"(?<![\w.-])\+?\(?\d(?:[\s().-]{0,2}\d){6,16}(?![\w-])")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    return text if _ISO_DATE.match(text) else "<phone>"


def mask(text: str, personal: bool = True) -> str:
    """Secrets are always masked; emails and phones too unless `personal` is False."""
    text = _URL_PASSWORD.sub(r"\g<head>***\g<at>", text)
    text = _SECRET_PAIR.sub(r"\g<key>***", text)
    if personal:
        text = _EMAIL.sub("<email>", text)
        text = _PHONE.sub(_phone, text)
    return text


class MaskingFilter(logging.Filter):
    """Rewrites each record's message (and exception text) masked; never drops a record."""

    def __init__(self, personal: bool = True) -> None:
        super().__init__()
        self.personal = personal

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = mask(record.getMessage(), self.personal)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text, self.personal)
        return True


_installed: dict[str, Any] = {}


def install(personal: bool = True) -> None:
    """Mask at the source: every record any logger makes is masked before a handler sees it.

    A record factory (not a handler filter) so handlers configured later (Prefect's API handler,
    a worker's console) get masked records too. Calling again only changes `personal`.
    """
    if "filter" in _installed:
        _installed["filter"].personal = personal
        return
    filt = MaskingFilter(personal)
    base = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        filt.filter(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed["filter"] = filt
