"""A job's egress host allow-list: the names an egress job may reach, chosen by the renter at submit; and how
it meets a provider's own list.

Without a list an egress job reaches any public address (ports 80 and 443) through the provider's filtering
proxy. With one (``egress_hosts``, only next to ``network: "egress"``) the proxy also refuses every CONNECT or
http request whose host is not on it, before it resolves anything; what it does reach still passes every
address check. The syntax (names, ``*.name`` wildcards, no addresses) is depu.jobs.hostlist's, the rule the
agent checks too (agent/depu_agent/hostlist.py is its source).

A provider may restrict egress to a list of its own (agent setting ``egress_hosts``, told with each heartbeat).
Placement (``provider_takes``): a job with a list goes only where every entry is wholly inside the provider's
list (or the provider has none); a job without a list asked for any public host, so it goes only to providers
without a list: placed on a restricted one it would find most of its connections refused.
"""
from __future__ import annotations

from typing import Any

from depu.errors import UserError
from depu.jobs import hostlist

MAX_EGRESS_HOSTS = hostlist.MAX_HOSTS
MAX_HOST_CHARS = hostlist.MAX_HOST_CHARS


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
    try:
        return hostlist.clean_list(value)
    except hostlist.HostListError as error:
        raise UserError(f"egress_hosts: {error}.") from None


def provider_takes(provider_hosts: tuple[str, ...] | list[str] | None, job_hosts: list[str] | None) -> bool:
    """Whether a provider allowing egress with ``provider_hosts`` (None: any public host) may run an egress job
    naming ``job_hosts`` (None: any public host)."""
    if not provider_hosts:
        return True
    if job_hosts is None:
        return False
    return not hostlist.uncovered(tuple(job_hosts), tuple(provider_hosts))
