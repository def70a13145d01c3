"""Whether an agent may be offered a job, as far as egress goes: the one rule the matcher, the claim-time
steal and the catalogue (submit's refusal, the offer) share.

A job without network fits anywhere. An egress job needs a provider that allows egress, and then its host
lists must agree (depu.jobs.egress_hosts.provider_takes): a provider without a list takes any egress job; one
with a list takes only a job whose own list lies wholly inside it, never a job without a list (that job asked
for any public host, and most of its connections would be refused there).
"""
from __future__ import annotations

from typing import Any

from depu.agents.registry import Agent
from depu.jobs.egress_hosts import provider_takes
from depu.jobs.spec import wants_egress


def takes(agent: Agent, params: dict[str, Any] | None) -> bool:
    """``agent`` may run a job with these params, as far as egress goes."""
    if not wants_egress(params):
        return True
    if not agent.egress_allowed:
        return False
    hosts = (params or {}).get("egress_hosts")
    return provider_takes(list(agent.egress_hosts or []) or None,
                          list(hosts) if isinstance(hosts, list) else None)
