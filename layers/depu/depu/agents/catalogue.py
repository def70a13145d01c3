"""The GPU classes on offer right now, with their price per hour and how many machines serve them.

Prices are credits per hour (1 credit = 0.001 USD) for one GPU of the class; a class we have no list price
for is priced by its memory. Listing scans the (small) agents table once, filtering on last_seen_at, since a
menu must show classes nobody configured in advance.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from depu.agents import egress_fit
from depu.agents.registry import CPU_CLASS, Agent
from depu.jobs.leases import ONLINE_SECONDS

PRICE_PER_HOUR: dict[str, int] = {
    "h200-141gb": 3500,
    "h100-80gb": 2500,
    "a100-80gb": 1600,
    "a100-40gb": 1200,
    "l40s-48gb": 900,
    "a10g-24gb": 600,
    "l4-24gb": 450,
    "rtx4090-24gb": 400,
    "rtx3090-24gb": 250,
    "t4-16gb": 200,
    CPU_CLASS: 30,
}
PRICE_PER_GB_HOUR = 25
MIN_GPU_PRICE = 100


def price_per_hour(gpu_class: str) -> int:
    if gpu_class in PRICE_PER_HOUR:
        return PRICE_PER_HOUR[gpu_class]
    try:
        memory_gb = int(gpu_class.rsplit("-", 1)[1].removesuffix("gb"))
    except (IndexError, ValueError):
        memory_gb = 0
    return max(MIN_GPU_PRICE, math.ceil(memory_gb * PRICE_PER_GB_HOUR))


def describe(gpu_class: str) -> str:
    """'h100-80gb' -> 'H100 80GB'; 'cpu' -> 'CPU (no GPU)'."""
    if gpu_class == CPU_CLASS:
        return "CPU (no GPU)"
    model, _, memory = gpu_class.rpartition("-")
    return f"{model.upper()} {memory.upper()}".strip()


@dataclass(frozen=True)
class Offer:
    gpu_class: str
    label: str
    price_per_hour: int
    agents_online: int
    gpus_free: int
    # the best reliability among its online verified agents (challenges passed, leases completed; 0..1)
    reliability: float = 0.0
    # how many of them allow egress (their providers' policy): a job asking for it runs only on those
    egress_agents: int = 0
    # of those, how many reach any public host, and the distinct host lists the others are restricted to
    egress_open_agents: int = 0
    egress_lists: tuple[tuple[str, ...], ...] = ()

    @property
    def egress(self) -> str:
        """The class's egress policy as the offer shows it: 'allowed' (any public host, on some machine),
        'only to a, b or c' (every machine allowing egress has a list of its own), or 'none'."""
        if self.egress_open_agents:
            return "allowed"
        if self.egress_lists:
            text = " or ".join(", ".join(hosts) for hosts in self.egress_lists)
            return "only to " + (text if len(text) <= MAX_LISTS_CHARS else text[:MAX_LISTS_CHARS - 1] + "…")
        return "none"


MAX_LISTS_CHARS = 120  # the offer is one line (a chat button); the full lists are in submit's refusal


def egress_offered(gpu_class: str, now: float | None = None) -> bool:
    """Whether an online verified agent of ``gpu_class`` takes an egress job without a host list (any public
    host) now: what the chat's own-job flow offers."""
    return egress_refusal(gpu_class, None, now) is None


def egress_refusal(gpu_class: str, hosts: list[str] | None, now: float | None = None) -> str | None:
    """Why no online verified agent of ``gpu_class`` can take an egress job naming ``hosts`` (None: any public
    host) right now, in words a renter can act on; None when one can."""
    allowing = [agent for agent in _online(now).get(gpu_class, []) if agent.egress_allowed]
    if not allowing:
        return ("No online provider of this class allows egress right now: run the job without network (network "
                "'none'), or choose a class whose offer says 'egress: allowed'.")
    params = {"network": "egress", **({"egress_hosts": list(hosts)} if hosts is not None else {})}
    if any(egress_fit.takes(agent, params) for agent in allowing):
        return None
    lists = "; ".join(", ".join(hosts_) for hosts_ in _distinct_lists(allowing))[:600]
    if hosts is None:
        return ("Every online provider of this class that allows egress reaches only listed hosts (" + lists + "): "
                "name the hosts your job needs in egress_hosts, inside one of those lists, or run it without network.")
    return ("No online provider of this class allows egress to all of " + ", ".join(hosts)[:300] + ": their "
            "lists are " + lists + ". Name only hosts inside one of those lists in egress_hosts.")


def _distinct_lists(agents: list[Agent]) -> tuple[tuple[str, ...], ...]:
    return tuple(sorted({tuple(agent.egress_hosts) for agent in agents if agent.egress_allowed and agent.egress_hosts}))


def _online(now: float | None) -> dict[str, list[Agent]]:
    """The online verified agents by class (one scan of the small agents table)."""
    now = now or time.time()
    online: dict[str, list[Agent]] = {}
    for agent in Agent.scan(Agent.last_seen_at >= int(now - ONLINE_SECONDS)):
        if agent.verified:
            online.setdefault(agent.gpu_class, []).append(agent)
    return online


def offers(now: float | None = None) -> list[Offer]:
    """Classes with at least one verified agent online, most expensive (most capable) first."""
    found = [
        Offer(
            gpu_class,
            describe(gpu_class),
            price_per_hour(gpu_class),
            len(agents),
            sum(max(0, int(a.gpu_count) - int(a.busy or 0)) for a in agents),
            max(a.reliability for a in agents),
            sum(1 for a in agents if a.egress_allowed),
            sum(1 for a in agents if a.egress_allowed and not a.egress_hosts),
            _distinct_lists(agents),
        )
        for gpu_class, agents in _online(now).items()
    ]
    return sorted(found, key=lambda offer: (-offer.price_per_hour, offer.gpu_class))
