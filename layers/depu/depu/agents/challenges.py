"""Hardware challenges: how the cloud finds out what an agent's devices really are, without trusting it.

An agent's benchmark is its own word, so it never verifies or ranks anything (docs/scheduling.md,
"Verification"). Instead the server issues a challenge: a fresh random seed and sizes it chooses from the
agent's claimed class (depu.agents.proofwork says what is computed). The agent

1. asks for a challenge (``issue``), computes the chain of k products on every claimed device, fills its
   claimed VRAM from the seed, and sends one Merkle root per device (``commit``). The commit must arrive within
   the class's deadline, counted from the moment the server issued the seed;
2. is then told which rows and columns the server checks, and which memory positions (``checks``), and sends
   those rows with their Merkle proofs and the memory values (``reveal``). The server recomputes each checked
   entry with one dot product and each memory value with one.

A challenge is stored on the agent's own item, so it is bound to that agent; its id is single-use (every move
is a conditional write on it, and it is removed when the challenge ends), so a replayed answer finds nothing.
Passing makes the agent verified until its next challenge, which falls due at a random time; failing makes it
unverified at once, and it gets no jobs. Both count in its reliability score.
"""
from __future__ import annotations

import base64
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import UpdateError

from depu.agents import proofwork
from depu.agents.registry import CPU_CLASS, Agent
from depu.agents.verification import expected_tflops, published_specs

# Sizes and deadlines (the thresholds docs/scheduling.md states)
GPU_N = 8192
CPU_N = 512
MIN_STEPS, MAX_STEPS = 2, 64
TARGET_COMPUTE_SECONDS = {"gpu": 2.0, "cpu": 1.0}  # what the chain should take at the class's expected speed
# Times the expected compute time. The CPU class is the floor (no cheaper class to pass for), so its margin
# also covers a host busy with other work; a GPU's stays tight, since that is what tells classes apart.
DEADLINE_MARGIN = {"gpu": 3.0, "cpu": 6.0}
HASH_BYTES_PER_SECOND = 250e6  # the agent's host hashes every committed row; no faster on a GPU host
MEMORY_SHARE = 0.25  # filling the claimed VRAM: a quarter of the model's published bandwidth (unknown: 100 GB/s)
UNKNOWN_MEMORY_BYTES_PER_SECOND = 100e9
FIXED_ALLOWANCE_SECONDS = 1.5  # network round trips and scheduling
VRAM_SHARE = 0.9
CHAIN_HEADROOM_MB = 3072  # left free beside the fill: the CUDA context and the chain's n×n matrices (~2 GB)
MEMORY_CHUNK_MB = 256
# Checks per challenge
ROW_CHECKS = 16  # spread over the devices, at least MIN_ROW_CHECKS_PER_DEVICE each
MIN_ROW_CHECKS_PER_DEVICE = 2
COLUMNS_PER_ROW = 4
MEMORY_SAMPLES_PER_DEVICE = 8
REVEAL_SECONDS = 30
# Re-challenges: due at a random time in this window after a pass; ignored for this long, the agent is unverified
RECHECK_MIN_SECONDS, RECHECK_MAX_SECONDS = 30 * 60, 6 * 3600
IGNORE_GRACE_SECONDS = 2 * 3600
RETRY_AFTER_FAILURE_SECONDS = 300
MAX_ROOT_HEX = 64


class NoChallenge(Exception):
    """The challenge id is not this agent's current one (unknown, answered already, or another agent's)."""


class ChallengeRefused(Exception):
    """The agent may not take a challenge (its own report already ruled it out)."""


@dataclass(frozen=True)
class Sizes:
    n: int
    steps: int
    devices: int
    memory_mb: int
    deadline_seconds: float
    expected_compute_seconds: float


def _pow2_floor(value: float) -> int:
    return 1 << max(0, int(math.floor(math.log2(max(value, 1.0)))))


def sizes_for(agent: Agent) -> Sizes:
    """The challenge the agent's claimed class must meet: sizes and the deadline from its expected speed."""
    gpus = agent.gpus or []
    is_cpu = agent.gpu_class == CPU_CLASS or not gpus
    n = CPU_N if is_cpu else GPU_N
    tflops = expected_tflops(None if is_cpu else gpus[0]["name"])
    per_product = 2.0 * n**3 / (tflops * 1e12)
    target = TARGET_COMPUTE_SECONDS["cpu" if is_cpu else "gpu"]
    steps = min(MAX_STEPS, max(MIN_STEPS, _pow2_floor(target / per_product)))
    devices = 1 if is_cpu else len(gpus)
    # CPU: no VRAM to prove; its RAM is the host's, shared with the OS and the renter (docs/scheduling.md)
    claimed = 0.0 if is_cpu else min(float(gpu["memory_mb"]) for gpu in gpus)
    memory_mb = 0 if is_cpu else max(0, int(min(claimed * VRAM_SHARE, claimed - CHAIN_HEADROOM_MB)))
    compute = steps * per_product
    hashing = steps * n * n / 4 / HASH_BYTES_PER_SECOND
    specs = None if is_cpu else published_specs(gpus[0]["name"])
    bandwidth = specs[1] * 1e9 * MEMORY_SHARE if specs else UNKNOWN_MEMORY_BYTES_PER_SECOND
    filling = memory_mb * 2**20 * 2 / bandwidth  # written, then read back
    deadline = (compute + filling) * DEADLINE_MARGIN["cpu" if is_cpu else "gpu"] + hashing + FIXED_ALLOWANCE_SECONDS
    return Sizes(n, steps, devices, memory_mb, round(deadline, 3), compute)


def is_due(agent: Agent, now: float | None = None) -> bool:
    due = agent.challenge_due_at
    return due is not None and (now or time.time()) >= float(due)


def reliability(agent: Agent) -> float:
    """The agent's reliability (``Agent.reliability``: challenges passed and leases completed among all)."""
    return agent.reliability


def _swap(agent_id: str, expected_id: str | None, actions: list, must_be_pending: bool = True) -> None:
    condition = Agent.agent_id.exists()
    if must_be_pending:
        condition &= Agent.challenge_id.does_not_exist() if expected_id is None else Agent.challenge_id == expected_id
    try:
        Agent(agent_id).update(actions=actions, condition=condition)
    except UpdateError as error:
        if getattr(error, "cause_response_code", None) == "ConditionalCheckFailedException":
            raise NoChallenge() from error
        raise


def issue(agent: Agent, now: float | None = None) -> dict[str, Any]:
    """A fresh challenge for ``agent``. One left unanswered is replaced, and counts as failed: asking again
    and again until a lucky moment must not help."""
    if agent.challenge_due_at is None and not agent.verified:
        raise ChallengeRefused(agent.verdict or "this agent cannot be verified")
    now = now or time.time()
    sizes = sizes_for(agent)
    challenge_id = "ch_" + secrets.token_hex(12)
    seed = secrets.token_hex(32)
    stored = {"seed": seed, "n": sizes.n, "steps": sizes.steps, "devices": sizes.devices,
              "memory_mb": sizes.memory_mb, "deadline_seconds": sizes.deadline_seconds,
              "expected_compute_seconds": sizes.expected_compute_seconds, "issued_at": now, "phase": "computing"}
    actions = [Agent.challenge_id.set(challenge_id), Agent.challenge.set(stored)]
    if agent.challenge_id:
        actions.append(Agent.challenges_failed.add(1))
    _swap(agent.agent_id, agent.challenge_id, actions, must_be_pending=True)
    return {"challenge_id": challenge_id, "seed": seed, "n": sizes.n, "steps": sizes.steps,
            "devices": sizes.devices, "memory_mb": sizes.memory_mb, "memory_chunk_mb": MEMORY_CHUNK_MB,
            "deadline_seconds": sizes.deadline_seconds}


def _current(agent: Agent, challenge_id: Any) -> dict[str, Any]:
    if not isinstance(challenge_id, str) or not agent.challenge_id or challenge_id != agent.challenge_id:
        raise NoChallenge()
    return dict(agent.challenge or {})


def _fail(agent: Agent, challenge_id: str, verdict: str) -> dict[str, Any]:
    _swap(agent.agent_id, challenge_id, [
        Agent.challenge_id.remove(), Agent.challenge.remove(), Agent.verified.set(False),
        Agent.verdict.set(f"failed its hardware challenge: {verdict}"[:300]), Agent.challenges_failed.add(1),
        # it may try again after a pause (each failure counts against its reliability)
        Agent.challenge_due_at.set(int(time.time()) + RETRY_AFTER_FAILURE_SECONDS),
    ])
    return {"passed": False, "verified": False, "verdict": verdict}


def commit(agent: Agent, challenge_id: Any, roots: Any, now: float | None = None) -> dict[str, Any]:
    """The agent's Merkle roots, one per device. Too late: failed. In time: the checks it must answer."""
    now = now or time.time()
    challenge = _current(agent, challenge_id)
    if challenge.get("phase") != "computing":
        raise NoChallenge()
    elapsed = now - float(challenge["issued_at"])
    if elapsed > float(challenge["deadline_seconds"]):
        return _fail(agent, challenge_id, f"committed after {elapsed:.1f} s; a {agent.gpu_class} answers "
                                          f"within {float(challenge['deadline_seconds']):.1f} s")
    devices, n, steps = int(challenge["devices"]), int(challenge["n"]), int(challenge["steps"])
    if roots == []:
        return _fail(agent, challenge_id, f"its devices could not compute the {agent.gpu_class} chain "
                                          f"within {float(challenge['deadline_seconds']):.1f} s")
    if (not isinstance(roots, list) or len(roots) != devices
            or not all(isinstance(root, str) and len(root) == MAX_ROOT_HEX for root in roots)):
        return _fail(agent, challenge_id, f"expected {devices} Merkle roots of 64 hex digits")
    try:
        [bytes.fromhex(root) for root in roots]
    except ValueError:
        return _fail(agent, challenge_id, "a Merkle root is not hex")
    rng = secrets.SystemRandom()
    per_device = max(MIN_ROW_CHECKS_PER_DEVICE, -(-ROW_CHECKS // devices))
    chunks = max(1, int(challenge["memory_mb"]) // MEMORY_CHUNK_MB)
    chunk_elements = MEMORY_CHUNK_MB * 2**20 // 4
    checks = []
    for device in range(devices):
        rows = [{"step": rng.randint(1, steps), "row": rng.randrange(n),
                 "columns": sorted(rng.sample(range(n), COLUMNS_PER_ROW))} for _ in range(per_device)]
        memory = ([[rng.randrange(chunks), rng.randrange(chunk_elements)] for _ in range(MEMORY_SAMPLES_PER_DEVICE)]
                  if int(challenge["memory_mb"]) else [])
        checks.append({"rows": rows, "memory": memory})
    challenge.update({"phase": "revealing", "roots": roots, "checks": checks, "committed_at": now})
    _swap(agent.agent_id, challenge_id, [Agent.challenge.set(challenge)])
    return {"challenge_id": challenge_id, "checks": checks, "reveal_seconds": REVEAL_SECONDS}


def _bytes(value: Any, limit: int) -> bytes | None:
    if not isinstance(value, str) or len(value) > limit:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return None


def _proven_row(answer: Any, device: int, step: int, row: int, challenge: dict, root: bytes) -> list[int] | None:
    """The revealed row of G_step, if its packing and Merkle proof are right; else None."""
    n, steps = int(challenge["n"]), int(challenge["steps"])
    if not isinstance(answer, dict):
        return None
    packed = _bytes(answer.get("row"), 4 * n)
    proof_hex = answer.get("proof")
    if packed is None or not isinstance(proof_hex, list) or len(proof_hex) > 40:
        return None
    try:
        proof = [bytes.fromhex(item) for item in proof_hex if isinstance(item, str) and len(item) == 64]
    except ValueError:
        return None
    if len(proof) != len(proof_hex):
        return None
    values = proofwork.unpack_row(packed, n)
    leaf = proofwork.leaf(device, step, row, packed)
    if values is None or not proofwork.verify_proof(root, proofwork.leaf_index(step, row, n), leaf, proof, steps * n):
        return None
    return values


def _check_device(device: int, checks: dict, answer: Any, challenge: dict) -> str | None:
    """Why this device's reveal is wrong, or None."""
    seed, n = challenge["seed"], int(challenge["n"])
    root = bytes.fromhex(challenge["roots"][device])
    if not isinstance(answer, dict) or not isinstance(answer.get("rows"), list):
        return f"device {device}: no rows revealed"
    if len(answer["rows"]) != len(checks["rows"]):
        return f"device {device}: expected {len(checks['rows'])} revealed rows"
    for check, revealed in zip(checks["rows"], answer["rows"]):
        step, row = int(check["step"]), int(check["row"])
        values = _proven_row(revealed, device, step, row, challenge, root)
        if values is None:
            return f"device {device}: row {row} of step {step} does not match the committed root"
        if step == 1:
            previous = proofwork.a_row(seed, device, row, n)
        else:
            previous = _proven_row(revealed.get("previous"), device, step - 1, row, challenge, root)
            if previous is None:
                return f"device {device}: row {row} of step {step - 1} does not match the committed root"
        for column in check["columns"]:
            if proofwork.chain_entry(seed, device, step, previous, int(column), n) != values[int(column)]:
                return f"device {device}: entry ({row}, {column}) of step {step} is wrong"
    samples = checks.get("memory") or []
    values = answer.get("memory")
    if samples:
        if not isinstance(values, list) or len(values) != len(samples):
            return f"device {device}: its claimed memory was not filled"
        k = proofwork.key(seed, proofwork.memory_label(device))
        for (chunk, offset), value in zip(samples, values):
            if value != proofwork.memory_value(k, int(chunk), int(offset)):
                return f"device {device}: memory chunk {chunk} holds the wrong data"
    return None


def reveal(agent: Agent, challenge_id: Any, devices: Any, now: float | None = None) -> dict[str, Any]:
    """Check the revealed rows and memory values; pass or fail the challenge (either ends it)."""
    now = now or time.time()
    challenge = _current(agent, challenge_id)
    if challenge.get("phase") != "revealing":
        raise NoChallenge()
    if now - float(challenge["committed_at"]) > REVEAL_SECONDS:
        return _fail(agent, challenge_id, f"revealed more than {REVEAL_SECONDS} s after committing")
    if not isinstance(devices, list) or len(devices) != int(challenge["devices"]):
        return _fail(agent, challenge_id, f"expected answers for {challenge['devices']} devices")
    for device, (checks, answer) in enumerate(zip(challenge["checks"], devices)):
        problem = _check_device(device, checks, answer, challenge)
        if problem:
            return _fail(agent, challenge_id, problem)
    elapsed = float(challenge["committed_at"]) - float(challenge["issued_at"])
    measured = (2.0 * int(challenge["n"]) ** 3 * int(challenge["steps"]) / max(elapsed, 1e-3) / 1e12)
    verdict = (f"passed its {agent.gpu_class} challenge in {elapsed:.1f} s "
               f"(deadline {float(challenge['deadline_seconds']):.1f} s)")
    next_due = int(now + secrets.SystemRandom().uniform(RECHECK_MIN_SECONDS, RECHECK_MAX_SECONDS))
    _swap(agent.agent_id, challenge_id, [
        Agent.challenge_id.remove(), Agent.challenge.remove(), Agent.verified.set(True),
        Agent.verdict.set(verdict), Agent.challenges_passed.add(1), Agent.verified_at.set(int(now)),
        Agent.challenge_due_at.set(next_due), Agent.measured_tflops.set(round(measured, 4)),
    ])
    return {"passed": True, "verified": True, "verdict": verdict}


def lapse_if_ignored(agent: Agent, now: float | None = None) -> None:
    """An online agent that leaves a due challenge unanswered for IGNORE_GRACE_SECONDS is unverified."""
    now = now or time.time()
    if agent.verified and is_due(agent, now) and now - float(agent.challenge_due_at) > IGNORE_GRACE_SECONDS:
        try:
            Agent(agent.agent_id).update(
                actions=[Agent.verified.set(False), Agent.verdict.set("did not answer its re-challenge"),
                         Agent.challenges_failed.add(1)],
                condition=Agent.challenge_due_at == agent.challenge_due_at)
        except UpdateError as error:
            if getattr(error, "cause_response_code", None) != "ConditionalCheckFailedException":
                raise
