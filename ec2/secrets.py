"""Keeps credentials and private keys out of every log record and error message.

botocore and urllib3 log request headers and response bodies at DEBUG: the
access key id (in ``Authorization``), the session token
(``X-Amz-Security-Token``), CreateKeyPair's ``keyMaterial`` and the role
session's keys in AssumeRole's answer. A log record factory, installed with
the first client, redacts those patterns and every secret value the plugin
has seen in ``aws_config``, the environment or an assumed role's session,
whatever the logger and level. ``redact`` does the same for error messages.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable
from typing import Any

MASK = "<redacted>"
SECRET_SETTINGS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
SECRET_ENVIRONMENT = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
# (pattern, replacement): what gives a secret away in a log line or a message.
PATTERNS = (
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S), MASK),
    (re.compile(r"(<keyMaterial>).*?(</keyMaterial>|$)", re.S), rf"\1{MASK}\2"),
    (re.compile(r"(['\"]?KeyMaterial['\"]?\s*[:=]\s*['\"]?)[^'\"]*"), rf"\1{MASK}"),
    (re.compile(r"(Credential=)[^/\s,'\"]+"), rf"\1{MASK}"),
    # An assumed role's session, as AssumeRole answers it (XML) and as botocore parses it.
    (re.compile(r"(<(AccessKeyId|SecretAccessKey|SessionToken)>).*?(</\2>|$)", re.S), rf"\1{MASK}\3"),
    (
        re.compile(r"(['\"]?(?:AccessKeyId|SecretAccessKey|SessionToken)['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+"),
        rf"\1{MASK}",
    ),
    (re.compile(r"((?:X-Amz-Security-Token|SecurityToken)['\"]?\s*[:=]\s*b?['\"]?)[^'\"\s,}]+", re.I), rf"\1{MASK}"),
    (re.compile(r"(//[^:/@\s]+:)[^@/\s]+(@)"), rf"\1{MASK}\2"),  # user:password@ in a proxy URL
)
# Values shorter than this are not redacted on their own: they would mask ordinary words.
MIN_SECRET_LENGTH = 6

_known: set[str] = set()
_lock = threading.Lock()
_installed = False


def remember(values: Iterable[Any]) -> None:
    with _lock:
        _known.update(str(value) for value in values if value and len(str(value)) >= MIN_SECRET_LENGTH)


def redact(text: str) -> str:
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        text = text.replace(value, MASK)
    return text


def install_log_filter(settings: dict) -> None:
    """Remembers a client's secrets and installs the redacting record factory once."""
    global _installed
    remember(settings.get(key) for key in SECRET_SETTINGS)
    remember(os.environ.get(name) for name in SECRET_ENVIRONMENT)
    proxies = settings.get("proxies") or {}
    remember(re.findall(r"//[^:/@\s]+:([^@/\s]+)@", " ".join(proxies.values())))
    with _lock:
        if _installed:
            return
        _installed = True
        previous = logging.getLogRecordFactory()

    def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is left for logging to report
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return record

    logging.setLogRecordFactory(redacting_factory)
