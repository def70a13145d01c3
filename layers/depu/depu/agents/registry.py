"""Agents: what a provider's machine declared at registration, and what its heartbeats tell us since.

An agent serves one GPU class (the class of its first GPU, or ``cpu`` without one). ``busy`` counts the jobs
assigned to or running on it; it changes only inside the job lifecycle's transactions, so it cannot drift from
the jobs themselves, and the matcher never offers an agent more jobs than it has GPUs.
"""
from __future__ import annotations

import math
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.exceptions import DoesNotExist, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from depu.agents import tokens
from depu.agents.gpuclass import CPU_CLASS, gpu_class_of
from depu.agents.verification import BenchmarkVerdict, judge_benchmark
from depu.config import get_settings
from depu.jobs import hostlist

AWAITING_CHALLENGE = "awaiting its first hardware challenge"
RENTAL_CAPABILITY = "gpu"  # "runs rental jobs" (a CPU-only agent declares it too); fork hosts say "fork_host"
MAX_GPUS_PER_AGENT = 16
MAX_CPU_SLOTS = 8  # a CPU-only machine may offer several job slots (tests use two)
MAX_FAULT_CHARS = 300
EGRESS_ALLOWED = "allowed"  # what an agent whose provider allows egress reports (contracts.agent_api.EgressPolicy)
_UNCHANGED: Any = object()
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]+")


class AgentsByProvider(GlobalSecondaryIndex):
    class Meta:
        index_name = "by_provider"
        projection = AllProjection()

    provider_id = NumberAttribute(hash_key=True)


class AgentsByGpuClass(GlobalSecondaryIndex):
    class Meta:
        index_name = "by_gpu_class"
        projection = AllProjection()

    gpu_class = UnicodeAttribute(hash_key=True)
    last_seen_at = NumberAttribute(range_key=True)


class Agent(Model):
    class Meta:
        table_name = get_settings().agents_table

    agent_id = UnicodeAttribute(hash_key=True)
    provider_id = NumberAttribute()
    gpu_class = UnicodeAttribute()
    last_seen_at = NumberAttribute()
    registered_at = NumberAttribute()
    name = UnicodeAttribute()
    gpus = JSONAttribute(default=list)
    gpu_count = NumberAttribute()
    capabilities = ListAttribute(of=UnicodeAttribute, default=list)
    benchmark = JSONAttribute(default=dict)
    benchmark_score = NumberAttribute(default=0)
    verified = BooleanAttribute(default=False)
    verdict = UnicodeAttribute(null=True)
    version = UnicodeAttribute(null=True)
    fork_rpc_base_url = UnicodeAttribute(null=True)
    # SHA-256 (hex) of the certificate the host's https fork fronts serve: the proxy accepts that one only
    fork_tls_sha256 = UnicodeAttribute(null=True)
    busy = NumberAttribute(default=0)
    free_gpus = ListAttribute(of=NumberAttribute, default=list)
    metrics = JSONAttribute(null=True)
    # The job environments (depu.jobs.spec.env_hash) this agent holds built, from its last heartbeat: the
    # matcher prefers such a warm agent for a job whose requirements match (its setup is then instant).
    env_hashes = ListAttribute(of=UnicodeAttribute, null=True)
    image_digests = ListAttribute(of=UnicodeAttribute, null=True)  # container images held (heartbeat)
    container_registries = ListAttribute(of=UnicodeAttribute, null=True)  # registries it runs images from
    jobs_done = NumberAttribute(default=0)
    # The provider's egress policy (its agent's allow_egress), from registration and each heartbeat: only an
    # agent that allows it is offered a job spec that asks for egress. None (an older agent): not allowed.
    egress_allowed = BooleanAttribute(null=True)
    # The provider's own host list (agent setting egress_hosts; clean_egress_hosts): its egress reaches only
    # these names. None: any public host. A list that breaks the rule withdraws egress altogether.
    egress_hosts = ListAttribute(of=UnicodeAttribute, null=True)
    # Why the agent says it cannot take work (its sandbox cannot run a script), from its last heartbeat.
    fault = UnicodeAttribute(null=True)
    # Fork hosting is an operator's decision, never the agent's (depu.forks.hosts): registration never writes
    # these; scripts/approve_fork_host.py does, and the API suspends a host it caught lying.
    fork_host_approved = BooleanAttribute(default=False)
    fork_host_approved_at = NumberAttribute(null=True)
    fork_host_suspended = UnicodeAttribute(null=True)
    fork_seen_at = NumberAttribute(null=True)  # last fork-task claim (depu.forks.hosts.seen)
    # Which agent tokens are live (depu.agents.tokens): the current one, and the one it renewed away from,
    # until previous_token_until. None on agents registered before tokens were renewable: any unexpired token
    # of theirs is live until their first renewal.
    token_hash = UnicodeAttribute(null=True)
    previous_token_hash = UnicodeAttribute(null=True)
    previous_token_until = NumberAttribute(null=True)
    # Revoked by its provider or an operator: every token of it answers 401 from then on, for good.
    revoked_at = NumberAttribute(null=True)
    revoked_by = UnicodeAttribute(null=True)
    # Hardware challenges (depu.agents.challenges): the pending one, when the next falls due, the outcomes
    challenge_id = UnicodeAttribute(null=True)
    challenge = JSONAttribute(null=True)
    challenge_due_at = NumberAttribute(null=True)
    challenges_passed = NumberAttribute(default=0)
    challenges_failed = NumberAttribute(default=0)
    leases_lost = NumberAttribute(default=0)
    # Setup failures pinned on this agent (depu.agents.setup_failures): counted only when the same job then
    # succeeded elsewhere. A count that decays from setup_failed_at, and image setup failures in a row.
    setup_failures = NumberAttribute(null=True)
    setup_failed_at = NumberAttribute(null=True)
    image_setup_streak = NumberAttribute(null=True)
    verified_at = NumberAttribute(null=True)
    measured_tflops = NumberAttribute(null=True)

    by_provider = AgentsByProvider()
    by_gpu_class = AgentsByGpuClass()

    @property
    def reliability(self) -> float:
        """Share of good outcomes (challenges passed, leases completed) among all, with one of each assumed so
        a new agent starts at 0.5, not at 0 or 1. Only what the cloud observed counts; nothing the agent
        reports."""
        good = int(self.challenges_passed or 0) + int(self.jobs_done or 0)
        bad = int(self.challenges_failed or 0) + int(self.leases_lost or 0)
        return round((good + 1) / (good + bad + 2), 3)

    @property
    def load(self) -> float:
        """Share of this agent's GPUs that are assigned or running a job."""
        return float(self.busy or 0) / max(int(self.gpu_count or 1), 1)


@dataclass(frozen=True)
class Registration:
    agent_id: str
    agent_token: str
    gpu_class: str
    verified: bool
    verdict: str
    challenge_due: bool = False


class RegistrationError(ValueError):
    """The registration request is malformed (a clear 400, not a 500)."""


@dataclass(frozen=True)
class Renewal:
    agent_token: str
    expires_at: int


def _validate_gpus(gpus: Any) -> list[dict[str, Any]]:
    if not isinstance(gpus, list) or len(gpus) > MAX_GPUS_PER_AGENT:
        raise RegistrationError(f"gpus must be a list of at most {MAX_GPUS_PER_AGENT} GPUs")
    clean = []
    for gpu in gpus:
        if not isinstance(gpu, dict) or not isinstance(gpu.get("name"), str):
            raise RegistrationError("each gpu needs at least a name and memory_mb")
        try:
            memory_mb = float(gpu.get("memory_mb"))
            index = int(gpu.get("index", len(clean)))
        except (TypeError, ValueError, OverflowError) as error:
            raise RegistrationError("gpu index and memory_mb must be numbers") from error
        if not (0 < memory_mb < 10_000_000) or not 0 <= index < 64:
            raise RegistrationError("gpu memory_mb must be a positive size in MiB and index 0..63")
        clean.append(
            {
                "index": index,
                "uuid": str(gpu.get("uuid", ""))[:64],
                "name": gpu["name"][:80],
                "memory_mb": memory_mb,
                "driver": str(gpu.get("driver", ""))[:32],
                "cuda_capability": str(gpu.get("cuda_capability", ""))[:16],
            }
        )
    return clean


def _clean_benchmark(benchmark: dict[str, Any]) -> dict[str, Any]:
    """The benchmark fields we use, nothing else an agent may have sent."""
    clean: dict[str, Any] = {"device": str(benchmark.get("device", ""))[:40], "verified": benchmark.get("verified") is True}
    for name in ("fp32_tflops", "bf16_tflops", "mem_bandwidth_gbs"):
        value = benchmark.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            clean[name] = float(value)
    return clean


def register(
    provider_token: str | None,
    *,
    name: str,
    gpus: Any,
    capabilities: list[str] | None,
    benchmark: dict[str, Any] | None,
    version: str | None,
    fork_rpc_base_url: str | None = None,
    fork_tls_sha256: Any = None,
    fault: Any = None,
    cpu_slots: Any = None,
    egress: str | None = None,
    egress_hosts: Any = None,
) -> Registration | None:
    """Register a machine for the provider that owns ``provider_token``; None if the token is not valid (or
    was used already: an enrolment token enrols one machine). The request is checked before the token is
    consumed, so a malformed one costs the provider nothing."""
    if tokens.provider_for_enrolment(provider_token) is None:
        return None  # a cheap read first: a wrong token consumes nothing and writes nothing
    if not isinstance(name, str) or not name.strip():
        raise RegistrationError("name is required")
    clean_gpus = _validate_gpus(gpus)
    if fork_rpc_base_url:
        from depu.forks import hosturl

        try:  # https and public addresses only, judged after DNS resolution (docs/security.md)
            hosturl.check_url(fork_rpc_base_url)
        except hosturl.HostUrlRefused as refused:
            raise RegistrationError(f"fork_rpc_base_url refused: {refused}") from None
    pin = clean_tls_pin(fork_tls_sha256, fork_rpc_base_url)
    gpu_class = gpu_class_of(clean_gpus[0]["name"], clean_gpus[0]["memory_mb"]) if clean_gpus else CPU_CLASS
    # The agent's own benchmark can only rule it out; it is verified by passing a hardware challenge
    precheck: BenchmarkVerdict = judge_benchmark(clean_gpus[0]["name"] if clean_gpus else None, benchmark or {})
    verdict = (BenchmarkVerdict(False, 0.0, AWAITING_CHALLENGE) if precheck.verified
               else BenchmarkVerdict(False, 0.0, precheck.reason))
    agent_id = "ag_" + uuid.uuid4().hex[:20]
    provider_id = tokens.consume_enrolment(provider_token, agent_id)
    if provider_id is None:
        return None  # another registration used it first
    now = int(time.time())
    agent_token, token_hash = tokens.new_agent_token()
    try:
        Agent(
            agent_id,
            provider_id=provider_id,
            gpu_class=gpu_class,
            last_seen_at=now,
            registered_at=now,
            name=name.strip()[:64],
            gpus=clean_gpus,
            gpu_count=len(clean_gpus) or clean_cpu_slots(cpu_slots),
            capabilities=[str(c)[:32] for c in (capabilities or [])][:8],
            benchmark=_clean_benchmark(benchmark or {}),
            benchmark_score=verdict.score,
            verified=verdict.verified,
            verdict=verdict.reason,
            version=str(version or "")[:32] or None,
            fork_rpc_base_url=(fork_rpc_base_url or '')[:300] or None,
            fork_tls_sha256=pin,
            busy=0,
            free_gpus=[gpu["index"] for gpu in clean_gpus] or list(range(clean_cpu_slots(cpu_slots))),
            fault=clean_fault(fault),
            egress_allowed=egress == EGRESS_ALLOWED and clean_egress_hosts(egress_hosts) is not BAD_HOST_LIST,
            egress_hosts=_stored_hosts(clean_egress_hosts(egress_hosts)),
            token_hash=token_hash,
            challenge_due_at=now if precheck.verified else None,
        ).save(condition=Agent.agent_id.does_not_exist())
    except Exception:
        tokens.give_back_enrolment(provider_token, agent_id)  # type: ignore[arg-type]
        raise
    tokens.save_agent_token(token_hash, agent_id, provider_id, now)
    return Registration(agent_id, agent_token, gpu_class, verdict.verified, verdict.reason, precheck.verified)


def clean_cpu_slots(value: Any) -> int:
    """How many jobs a CPU-only machine runs at once (its slots stand for GPUs): 1 unless it says 2..8."""
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_CPU_SLOTS:
        return value
    return 1


MAX_ENV_HASHES = 64
_ENV_HASH = re.compile(r"^[0-9a-f]{24}$")


def clean_env_hashes(values: Any) -> list[str] | None:
    """The environment names an agent reports ready (24 hex digits each, at most MAX_ENV_HASHES); None when
    it reported none (an older agent)."""
    if not isinstance(values, list):
        return None
    return sorted({value for value in values[:MAX_ENV_HASHES] if isinstance(value, str) and _ENV_HASH.match(value)})


MAX_IMAGE_DIGESTS = 64
MAX_CONTAINER_REGISTRIES = 16
_IMAGE_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_REGISTRY = re.compile(r"^[a-z0-9][a-z0-9.-]{0,252}(:[0-9]{1,5})?$")


def clean_image_digests(values: Any) -> list[str] | None:
    """The container image digests an agent reports holding (sha256:<64 hex>); None when it reported none."""
    if not isinstance(values, list):
        return None
    return sorted({value for value in values[:MAX_IMAGE_DIGESTS] if isinstance(value, str) and _IMAGE_DIGEST.match(value)})


BAD_HOST_LIST: Any = object()  # an egress_hosts report that breaks the rule


def clean_egress_hosts(value: Any) -> tuple[str, ...] | None:
    """A provider's host list as its agent reported it, judged as hostile input: None when it sent none
    (leave the stored one), ``()`` for an empty list (any public host), the list as stored when it keeps the
    job spec's rule (depu.jobs.hostlist: at most 32 names, each checked, the length before any entry), else
    ``BAD_HOST_LIST``: the agent keeps its heartbeat but is offered no egress job until it sends a good one
    (a list the cloud cannot read must never widen into "any public host")."""
    if value is None:
        return None
    if isinstance(value, list) and not value:
        return ()
    try:
        return hostlist.clean_list(value)
    except hostlist.HostListError:
        return BAD_HOST_LIST


def _stored_hosts(hosts: Any) -> list[str] | None:
    return list(hosts) if hosts and hosts is not BAD_HOST_LIST else None


def clean_container_registries(values: Any) -> list[str] | None:
    """The registries an agent runs images from (host[:port]); None when it reported none."""
    if not isinstance(values, list):
        return None
    return sorted({value for value in values[:MAX_CONTAINER_REGISTRIES] if isinstance(value, str) and _REGISTRY.match(value)})


def clean_tls_pin(pin: Any, base_url: str | None) -> str | None:
    """The fork front's certificate fingerprint as the proxy compares it (64 lowercase hex digits), required
    with an https ``fork_rpc_base_url``: the proxy talks to an https host only if it knows which certificate
    to expect (docs/security.md, "The proxy-to-host link")."""
    if pin is None or pin == "":
        if base_url and base_url.lower().startswith("https:"):
            raise RegistrationError("fork_tls_sha256 is required with an https fork_rpc_base_url: the SHA-256 of "
                                    "the certificate the host's fork fronts serve")
        return None
    if not base_url:
        raise RegistrationError("fork_tls_sha256 belongs with a fork_rpc_base_url")
    text = pin.replace(":", "").lower() if isinstance(pin, str) else ""
    if not _SHA256_HEX.fullmatch(text):
        raise RegistrationError("fork_tls_sha256 must be a SHA-256 fingerprint: 64 hex digits (colons allowed)")
    return text


def authenticate(token: str | None, now: float | None = None) -> Agent | None:
    """The agent a bearer token authenticates, or None: the token must be unexpired, the agent not revoked,
    and the token its current one (or the one it renewed away from, within the overlap). Read consistently,
    so a revocation or renewal counts from the very next request."""
    record = tokens.agent_token_record(token)
    if record is None or not record.agent_id:
        return None
    try:
        agent = Agent.get(record.agent_id, consistent_read=True)
    except DoesNotExist:
        return None
    if agent.revoked_at is not None:
        return None
    if agent.token_hash is None:
        return agent  # registered before renewable tokens: live until its first renewal
    now = time.time() if now is None else now
    if record.token_hash == agent.token_hash:
        return agent
    if record.token_hash == agent.previous_token_hash and now < float(agent.previous_token_until or 0):
        return agent
    return None


def token_expires_at(token: str | None) -> float | None:
    """When this (valid) agent token expires, for the heartbeat's "renew now" hint."""
    record = tokens.agent_token_record(token)
    return tokens.expiry_of(record) if record else None


def renew_token(agent: Agent, presented: str) -> Renewal:
    """A fresh token for ``agent``, which authenticated with ``presented``. The fresh one becomes current;
    the presented one keeps working for AGENT_TOKEN_OVERLAP_SECONDS (if it was current) and no token but
    these two is live. A retry with the old token during the overlap (the agent lost our answer) replaces
    the fresh token it never got. The switch is one conditional write on the agent's item."""
    now = int(time.time())
    presented_hash = tokens.hash_token(presented)
    current_hash = agent.token_hash  # read before the update below refreshes ``agent``
    fresh, fresh_hash = tokens.new_agent_token()
    expires_at = tokens.save_agent_token(fresh_hash, agent.agent_id, int(agent.provider_id), now)
    overlap_until = now + tokens.AGENT_TOKEN_OVERLAP_SECONDS
    not_revoked = Agent.revoked_at.does_not_exist()
    if current_hash is None or presented_hash == current_hash:
        condition = not_revoked & (
            Agent.token_hash.does_not_exist() if current_hash is None else Agent.token_hash == presented_hash
        )
        actions = [Agent.token_hash.set(fresh_hash), Agent.previous_token_hash.set(presented_hash),
                   Agent.previous_token_until.set(overlap_until)]
    else:  # the previous token, within its overlap: keep its deadline, drop the fresh token it replaced
        condition = not_revoked & (Agent.previous_token_hash == presented_hash) & (Agent.previous_token_until > now)
        actions = [Agent.token_hash.set(fresh_hash)]
        overlap_until = int(agent.previous_token_until or now)
    try:
        agent.update(actions=actions, condition=condition)
    except UpdateError as error:
        tokens.shorten_agent_token(fresh_hash, now)
        if getattr(error, "cause_response_code", None) == "ConditionalCheckFailedException":
            raise TokenSuperseded(agent.agent_id) from error
        raise
    tokens.shorten_agent_token(presented_hash, overlap_until)
    if current_hash and current_hash != presented_hash:
        tokens.shorten_agent_token(current_hash, now)  # the fresh token of the lost answer: dead now
    return Renewal(fresh, expires_at)


class TokenSuperseded(Exception):
    """The token was renewed away or revoked between authenticating and renewing (answers 401)."""


def get_agent(agent_id: str) -> Agent | None:
    try:
        return Agent.get(agent_id)
    except DoesNotExist:
        return None


def clean_fault(fault: Any) -> str | None:
    """An agent's own account of why it cannot work: one line of plain text, or None. Shown to its provider
    only (HTML-escaped there), so a length and control-character limit is all it needs."""
    if not isinstance(fault, str):
        return None
    text = _CONTROL_CHARACTERS.sub(" ", fault).strip()[:MAX_FAULT_CHARS]
    return text or None


def record_heartbeat(agent_id: str, metrics: Any, free_gpus: list[int], fault: str | None = _UNCHANGED,
                     env_hashes: list[str] | None = None, egress: str | None = None,
                     image_digests: list[str] | None = None,
                     container_registries: list[str] | None = None, egress_hosts: Any = None) -> None:
    """Mark the agent alive and keep its latest metrics and fault (one UpdateItem); a claim, which carries no
    fault, leaves the last one as it is. ``egress_hosts`` is the agent's raw report (clean_egress_hosts):
    None leaves the stored list, a malformed one withdraws egress until a good one comes."""
    agent = Agent(agent_id)
    actions = [
        Agent.last_seen_at.set(int(time.time())),
        Agent.metrics.set(metrics if isinstance(metrics, list) else []),
        Agent.free_gpus.set([int(index) for index in free_gpus][:MAX_GPUS_PER_AGENT]),
    ]
    if fault is not _UNCHANGED:
        actions.append(Agent.fault.set(fault) if fault else Agent.fault.remove())
    if env_hashes is not None:
        actions.append(Agent.env_hashes.set(env_hashes) if env_hashes else Agent.env_hashes.remove())
    hosts = clean_egress_hosts(egress_hosts)
    if hosts is BAD_HOST_LIST:
        actions += [Agent.egress_allowed.set(False), Agent.egress_hosts.remove()]
    else:
        if egress is not None:
            actions.append(Agent.egress_allowed.set(egress == EGRESS_ALLOWED))
        if hosts is not None:
            actions.append(Agent.egress_hosts.set(list(hosts)) if hosts else Agent.egress_hosts.remove())
    if image_digests is not None:
        actions.append(Agent.image_digests.set(image_digests) if image_digests else Agent.image_digests.remove())
    if container_registries is not None:
        actions.append(Agent.container_registries.set(container_registries) if container_registries
                       else Agent.container_registries.remove())
    agent.update(actions=actions, condition=Agent.agent_id.exists())


def mark_draining(agent_id: str) -> None:
    """The agent is handing its jobs back (graceful shutdown): move last_seen_at just out of the online window,
    so the matcher (and the catalogue) stop counting it at once instead of offering the requeued jobs straight
    back to it for an offer timeout. Its next heartbeat or claim, i.e. a fresh start, makes it online again.
    An older last_seen_at is left as it is (the agent already counts as offline)."""
    from depu.jobs.leases import ONLINE_SECONDS

    offline = int(time.time()) - ONLINE_SECONDS - 1
    try:
        Agent(agent_id).update(actions=[Agent.last_seen_at.set(offline)], condition=Agent.last_seen_at > offline)
    except UpdateError as error:
        if getattr(error, "cause_response_code", None) != "ConditionalCheckFailedException":
            raise


def agents_of_provider(provider_id: int) -> list[Agent]:
    return list(Agent.by_provider.query(provider_id))


def is_online(agent: Agent, now: float | None = None) -> bool:
    from depu.jobs.leases import ONLINE_SECONDS

    return (now or time.time()) - float(agent.last_seen_at) <= ONLINE_SECONDS
