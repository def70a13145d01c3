"""Keep the bot token and secret values out of third-party debug logs.

Our own code never logs them, but at DEBUG level urllib3 logs every request line (the Bot API puts the
token in the URL path) and botocore logs response bodies (``GetSecretValue`` returns the secret). A filter
on exactly those loggers rewrites the message before any handler sees it, whatever the log level.
"""
from __future__ import annotations

import logging
import re

_PATTERNS = (
    (re.compile(r"/bot[^/\s\"']+"), "/bot<redacted>"),
    (re.compile(r"(SecretString\W+)[^\"'\\]*"), r"\1<redacted>"),
    (re.compile(r"(SecretBinary\W+)[^\"'\\]*"), r"\1<redacted>"),
)
_LOGGERS = ("urllib3.connectionpool", "botocore.parsers", "botocore.endpoint", "botocore.hooks", "botocore.auth")


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot format itself: leave it to the handler's own error path
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


_FILTER = RedactingFilter()


def install() -> None:
    """Attach the filter (once) to the loggers that can echo tokens or secret values."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
