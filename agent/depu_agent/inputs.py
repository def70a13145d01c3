"""A job spec's input files, fetched by the agent in the setup phase (not billed) into the job's inputs/.

The job's workspace is fresh and nothing of the job runs yet, so nothing can swap a path under the agent;
still, each file is created with O_EXCL | O_NOFOLLOW relative to the inputs/ directory descriptor, under a
plain name (no separator, no leading dot), and given to the job's uid. What the links serve is bounded by
``max_input_mb`` for the whole job, counted as it streams (a server's Content-Length is not trusted), and
each file by the ``size`` DePU checked when the user uploaded it. A link pinned to a version (``if_match``)
is fetched with that ``If-Match`` header (signed into the link, so it must be sent): a file changed since
the check answers 412 and the setup fails, so the job never runs on something the user did not submit.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import requests

from .envcache import SetupFailed

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
CHUNK = 1 << 20


def _expected_size(item: dict) -> int | None:
    size = item.get("size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise SetupFailed("an input file's size is not valid")
    return size


def fetch(items: list, inputs_dir: Path, owner_uid: int | None, max_bytes: int,
          on_line: Callable[[str], None]) -> list[str]:
    """Download every ``{"name", "url"}`` into ``inputs_dir``; the names placed, or SetupFailed saying why."""
    if not items:
        return []
    directory = os.open(inputs_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    placed: list[str] = []
    total = 0
    try:
        for item in items[:64]:
            name = str(item.get("name", "")) if isinstance(item, dict) else ""
            url = item.get("url") if isinstance(item, dict) else None
            if not _NAME.match(name) or not isinstance(url, str) or not url.startswith(("https://", "http://")):
                raise SetupFailed(f"an input file's name or link is not valid ({name[:40]!r})")
            expected = _expected_size(item)
            headers = {"If-Match": str(item["if_match"])} if item.get("if_match") else {}
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=directory)
            with os.fdopen(fd, "wb") as sink:
                written = 0
                try:
                    with requests.get(url, stream=True, timeout=60, headers=headers) as response:
                        if response.status_code == 412:
                            raise SetupFailed(f"the input file {name} changed after it was checked")
                        response.raise_for_status()
                        for chunk in response.iter_content(CHUNK):
                            total += len(chunk)
                            written += len(chunk)
                            if total > max_bytes:
                                raise SetupFailed(f"the input files are over this machine's cap of "
                                                  f"{max_bytes // (1024 * 1024)} MiB")
                            if expected is not None and written > expected:
                                raise SetupFailed(f"the input file {name} is larger than the {expected} bytes "
                                                  "checked at submit")
                            sink.write(chunk)
                except requests.RequestException as error:
                    raise SetupFailed(f"could not fetch the input file {name} ({type(error).__name__})") from error
                if expected is not None and written != expected:
                    raise SetupFailed(f"the input file {name} is {written} bytes, not the {expected} checked")
                if owner_uid is not None:
                    os.fchown(sink.fileno(), owner_uid, -1)
            placed.append(name)
            on_line(f"[setup] input {name} ready")
    finally:
        os.close(directory)
    return placed
