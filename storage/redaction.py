"""Credentials never leave the process: one function hides them in any text that may hold a URL.

A team passes ``--storage postgresql+psycopg://user:password@host/db`` and ``--tracking-uri
https://user:password@mlflow:5000``; those URLs end up in messages, in the JSON result, in MLflow
params and in library log lines (MLflow's REST errors quote the full request URL). `redact_url` is
applied to each of them, and `protect_logs` applies it to every log record of the process.
"""

from __future__ import annotations

import logging
import re

HIDDEN = "***"

# scheme://user:password@ — the password runs to the last '@' of the URL (a raw '@' or '/' in a
# password is common in hand-written URLs and must not end the match early).
_URL_CREDENTIALS = re.compile(
    r"(?P<prefix>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"<>]*:)(?P<password>[^\s'\"<>]*)@(?P<rest>[^\s@'\"<>]*)")
# ...?password=... and friends: libpq, SQLAlchemy and MLflow all accept credentials as query parameters.
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|sslpassword|token|access_token|secret|api_key|apikey|sig)=)(?P<value>[^&;\s'\"<>#]*)",
    re.IGNORECASE)


def redact_url(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (user, host, port and
    database stay readable); secret query parameters (``?password=``, ``&token=``, ...) likewise.

    >>> redact_url("postgresql+psycopg://autoaug:s3cret@db:5432/optuna")
    'postgresql+psycopg://autoaug:***@db:5432/optuna'
    """
    if not isinstance(text, str) or ("://" not in text and "=" not in text):
        return text
    text = _URL_CREDENTIALS.sub(lambda match: f"{match['prefix']}{HIDDEN}@{match['rest']}", text)
    return _QUERY_SECRET.sub(lambda match: f"{match['key']}{HIDDEN}", text)


class _RedactingRecordFactory:
    """Wraps the process's log-record factory: each record's message is redacted once, at creation,
    so every handler (MLflow's, Optuna's, Ray's, the root's) only ever sees the redacted text."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __call__(self, *args, **kwargs) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report, not ours
            return record
        redacted = redact_url(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and record.exc_info[1] is not None and redact_url(str(record.exc_info[1])) != str(record.exc_info[1]):
            # the traceback text would quote the URL again: keep the redacted one-line summary instead
            record.msg, record.args = f"{redacted} ({type(record.exc_info[1]).__name__}: " \
                                      f"{redact_url(str(record.exc_info[1]))})", ()
            record.exc_info, record.exc_text = None, None
        return record


def protect_logs() -> None:
    """Redact URLs in every log record created from now on in this process (idempotent)."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _RedactingRecordFactory):
        logging.setLogRecordFactory(_RedactingRecordFactory(factory))
