"""A job's egress host allow-list: the names an egress job may reach, chosen by the renter at submit.

Without a list an egress job reaches any public address (ports 80 and 443) through the provider's filtering
proxy. With one (``egress_hosts``, only next to ``network: "egress"``) the proxy also refuses every CONNECT or
http request whose host is not on it, before it resolves anything; what it does reach still passes every
address check. An entry is a DNS name (``pypi.example.com``) or a wildcard of one (``*.example.com``: any
name below it, at any depth, not the name itself). Addresses are not accepted: a list exists to name hosts,
and an address would bypass the name. A wildcard must keep at least two labels (``*.com`` would open a whole
top-level domain). The agent checks the list again (agent/depu_agent/egress.py, ``job_hosts``).
"""
from __future__ import annotations

import re
from typing import Any

from depu.errors import UserError

MAX_EGRESS_HOSTS = 32
MAX_HOST_CHARS = 253
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_TOP_LABEL = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")  # never all digits: no address sneaks in


def _clean_entry(raw: Any) -> str:
    if not isinstance(raw, str):
        raise UserError("egress_hosts lists host names as text, e.g. [\"pypi.example.com\", \"*.example.org\"].")
    entry = raw.strip().lower().rstrip(".")
    wildcard = entry.startswith("*.")
    name = entry[2:] if wildcard else entry
    labels = name.split(".")
    if not name or len(name) > MAX_HOST_CHARS or "*" in name or len(labels) < 2 \
            or not all(_LABEL.match(label) for label in labels) or not _TOP_LABEL.match(labels[-1]):
        shown = raw.strip()[:80]
        raise UserError(f"egress_hosts: {shown!r} is not a host name: give a name with a dot such as "
                        "pypi.example.com, or *.example.com for every name below it (no addresses, ports, "
                        "paths or other wildcards).")
    return entry


def clean_egress_hosts(value: Any, *, egress: bool) -> tuple[str, ...] | None:
    """The list as stored (lower case, no duplicates, sorted), None when the job gave none; ``UserError``
    saying what to fix otherwise. ``egress``: whether the job asked for it (a list means nothing without)."""
    if value is None:
        return None
    if not egress:
        raise UserError("egress_hosts goes with network 'egress': a job without egress reaches no host at all.")
    if not isinstance(value, list):
        raise UserError("egress_hosts is a list of host names, e.g. [\"pypi.example.com\"].")
    if not value:
        raise UserError("egress_hosts lists at least one host; leave it out to reach any public host.")
    if len(value) > MAX_EGRESS_HOSTS:
        raise UserError(f"egress_hosts lists at most {MAX_EGRESS_HOSTS} hosts.")
    return tuple(sorted({_clean_entry(raw) for raw in value}))
