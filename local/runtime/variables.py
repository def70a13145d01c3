"""The process environment the functions see: every function's resolved variables plus the local endpoints.

In-process, all functions share one ``os.environ``; the template gives them the same values, and a function
that sets one differently is warned about (one value wins). ``restore`` puts back what was there before, so a
stopped runtime leaves nothing behind.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable

from local import signing_key
from local.runtime.environments import LocalFunction
from local.template import REGION

log = logging.getLogger("local.runtime")


class ProcessEnvironment:
    """Applies the functions' variables to ``os.environ`` and restores the previous values."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}

    def apply(self, functions: Iterable[LocalFunction], aws_endpoint: str, extra: dict[str, str]) -> None:
        env: dict[str, str] = {}
        for function in functions:
            for name, value in function.spec.environment.items():
                if env.get(name, value) != value:
                    log.warning("%s sets %s differently from another function; in-process, one value wins",
                                function.name, name)
                env[name] = value
        env.update(
            {
                "AWS_ENDPOINT_URL": aws_endpoint,
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
                "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
                "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally
                # the local agent API signs install.sh and the package with the stack's own key (deployed: none)
                signing_key.KEY_FILE_ENV: str(signing_key.key_path()),
            }
        )
        env.update(extra)
        for name, value in env.items():
            self._saved.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        clear_settings_cache()

    def restore(self) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved.clear()
        clear_settings_cache()


def clear_settings_cache() -> None:
    """DePU reads settings once (``depu.config.get_settings``); a changed environment must be read again."""
    settings = sys.modules.get("depu.config")
    if settings is not None:
        settings.get_settings.cache_clear()
