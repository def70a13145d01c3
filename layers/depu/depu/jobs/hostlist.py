"""Egress host lists, the one rule for both sides: a renter's job (``egress_hosts`` in the job spec) and a
provider's agent (the ``egress_hosts`` setting) name the only hosts egress may reach.

This file has a twin. Its source is agent/depu_agent/hostlist.py (the agent is installed alone on a provider's
machine and may not import the cloud layer); layers/depu/depu/jobs/hostlist.py is a byte-for-byte copy written
by scripts/sync_hostlist.py, and tests/test_hostlist.py fails when the two differ. Stdlib only, no imports from
either package.

An entry is a DNS name (``pypi.example.com``) or a wildcard of one (``*.example.com``: any name below it, at
any depth, not the name itself). Addresses are not accepted: a list exists to name hosts, and an address would
bypass the name. A wildcard keeps at least two labels (``*.com`` would open a whole top-level domain), and the
top label is never all digits (no address sneaks in as a "name").

Two lists combine by name: a name may be reached when BOTH allow it. ``intersect`` writes that as one list:
equal names stay; a name below a wildcard of the other list stays; of two wildcards one of which lies below the
other (``*.x.example`` and ``*.example``), the narrower stays; anything else is dropped. ``uncovered`` says
which entries of a job's list the provider's list does not wholly allow (a wildcard is covered only by a
wildcard at or above it: ``*.example`` never by ``example`` nor by ``a.example``).
"""
from __future__ import annotations

import re

MAX_HOSTS = 32
MAX_HOST_CHARS = 253
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_TOP_LABEL = re.compile(r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class HostListError(ValueError):
    """A list or an entry that breaks the rule; the message says what to write instead."""


def clean_entry(raw: object) -> str:
    """One entry as stored (lower case, no trailing dot), or HostListError."""
    if not isinstance(raw, str):
        raise HostListError("a host list holds host names as text, e.g. [\"pypi.example.com\", \"*.example.org\"]")
    entry = raw.strip().lower().rstrip(".")
    wildcard = entry.startswith("*.")
    name = entry[2:] if wildcard else entry
    labels = name.split(".")
    if not name or len(name) > MAX_HOST_CHARS or "*" in name or len(labels) < 2 \
            or not all(_LABEL.match(label) for label in labels) or not _TOP_LABEL.match(labels[-1]):
        shown = "".join(char if char.isprintable() else "?" for char in raw.strip()[:80])
        raise HostListError(f"{shown!r} is not a host name: give a name with a dot such as pypi.example.com, or "
                            "*.example.com for every name below it (no addresses, ports, paths or other wildcards)")
    return entry


def clean_list(values: object) -> tuple[str, ...]:
    """A whole list as stored (checked entries, no duplicates, sorted), or HostListError. Its length is
    checked before any entry is read, so an oversized list costs nothing."""
    if not isinstance(values, (list, tuple)):
        raise HostListError("a host list is a list of host names, e.g. [\"pypi.example.com\"]")
    if not values:
        raise HostListError("a host list names at least one host")
    if len(values) > MAX_HOSTS:
        raise HostListError(f"a host list names at most {MAX_HOSTS} hosts")
    return tuple(sorted({clean_entry(raw) for raw in values}))


def _below(name: str, domain: str) -> bool:
    """``name`` lies strictly below ``domain`` (at a label boundary)."""
    return name.endswith("." + domain)


def allowed(name: str, hosts: tuple[str, ...]) -> bool:
    """``name`` (lower case, no trailing dot) is one of ``hosts``, or below a ``*.`` entry of it."""
    return any(name == entry or (entry.startswith("*.") and _below(name, entry[2:])) for entry in hosts)


def covered(entry: str, hosts: tuple[str, ...]) -> bool:
    """Every name ``entry`` allows is allowed by ``hosts``."""
    if not entry.startswith("*."):
        return allowed(entry, hosts)
    domain = entry[2:]
    return any(other.startswith("*.") and (domain == other[2:] or _below(domain, other[2:])) for other in hosts)


def uncovered(job: tuple[str, ...], provider: tuple[str, ...]) -> tuple[str, ...]:
    """The entries of ``job`` that ``provider`` does not wholly allow (empty: the job fits the provider)."""
    return tuple(entry for entry in job if not covered(entry, provider))


def intersect(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    """One list allowing exactly the names both lists allow (sorted; empty when they share none)."""
    kept = {entry for entry in first if covered(entry, second)}
    kept.update(entry for entry in second if covered(entry, first))
    return tuple(sorted(kept))
