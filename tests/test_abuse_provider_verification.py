"""Attacks on GPU verification (issue 11, item 3): a provider cannot fake its hardware any more.

Each attack runs against moto through the real agent API handler, with the real agent prover
(agent/depu_agent/challenge.py) computing on this machine's CPU with torch: a CPU pretending to be an H100,
garbage results (a wrong Merkle root, wrong entries under a right one), a replayed old answer, an agent ten
times too slow for its class, self-reported numbers meant to rank first, an ignored re-challenge. A real CPU
agent passes and is verified as CPU.
"""
from __future__ import annotations

import random
import secrets
import time

import pytest

from rental_helpers import (
    CPU_BENCHMARK,
    GPU_H100,
    H100_BENCHMARK,
    USER_ID,
    AgentApi,
    enrol_provider,
    ensure_user,
    register_agent,
    run_matcher,
    submit_job,
)


class AgentClient:
    """The agent's ApiClient.post, over the real handler (what depu_agent.challenge.answer talks to)."""

    def __init__(self, api: AgentApi, token: str):
        self.api, self.token = api, token
        self.sent: list[tuple[str, dict]] = []

    def post(self, path: str, json: dict | None = None, timeout: float | None = None, attempts: int | None = None):
        self.sent.append((path, json or {}))
        status, body = self.api.call(path, json or {}, self.token)
        return status, body if isinstance(body, dict) else {}


def _prover(cls=None):
    import torch

    from depu_agent import challenge

    return (cls or challenge.Prover)([torch.device("cpu")])


def _agent(agent_id: str):
    from depu.agents.registry import Agent

    return Agent.get(agent_id)


def _cpu_agent(api: AgentApi, provider_id: int = 7001, name: str = "cpu-box") -> tuple[dict, AgentClient]:
    body = register_agent(api, enrol_provider(provider_id), name=name, gpus=[], benchmark=CPU_BENCHMARK,
                          vouch=False)
    assert body["verified"] is False and body["challenge_due"] is True
    return body, AgentClient(api, body["agent_token"])


def _gets_no_jobs(api: AgentApi, agent: dict, gpu_class: str) -> None:
    submit_job(gpu_class=gpu_class)
    assert len(run_matcher()["batchItemFailures"]) == 1  # nobody fits: stays queued
    assert api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, agent["agent_token"])[0] == 204


def test_real_cpu_agent_is_verified_as_cpu_and_gets_jobs(aws):
    from depu.agents import matcher
    from depu.jobs.models import Job

    from depu_agent import challenge

    api = AgentApi()
    ensure_user(USER_ID, credits=5000)
    agent, client = _cpu_agent(api)
    prover = _prover()  # imports torch
    started = time.monotonic()
    outcome = challenge.answer(client, prover)
    took = time.monotonic() - started
    assert outcome["passed"] is True and outcome["verified"] is True, outcome
    assert "passed its cpu challenge" in outcome["verdict"]
    stored = _agent(agent["agent_id"])
    assert stored.verified and stored.gpu_class == "cpu" and stored.challenges_passed == 1
    assert stored.challenge_id is None and stored.challenge_due_at > time.time() + 25 * 60  # re-challenged later
    print(f"cpu challenge answered in {took:.2f} s")
    assert took < 10
    job = submit_job(gpu_class="cpu")
    assert matcher.match(Job.get(job.job_id)).agent_id == agent["agent_id"]


def test_cpu_pretending_to_be_an_h100_is_caught(aws):
    """A perfect self-report (H100 name, 80 GB, 48 TFLOP/s) on a CPU: the chain cannot meet the H100 deadline
    and the CPU cannot fill 72 GB of VRAM."""
    from depu_agent import challenge

    api = AgentApi()
    ensure_user(USER_ID)
    fake = register_agent(api, enrol_provider(), gpus=[GPU_H100], benchmark=H100_BENCHMARK, vouch=False)
    assert fake["verified"] is False and fake["challenge_due"] is True  # its word is not enough any more
    client = AgentClient(api, fake["agent_token"])
    outcome = challenge.answer(client, _prover())
    assert outcome["passed"] is False and outcome["verified"] is False, outcome
    # the real prover sees after one block of the first product that it cannot make the H100 deadline and says
    # so at once; had it carried on, the commit would have come after the deadline (test_..._too_slow_...)
    verdict = outcome["verdict"]
    assert "could not compute the h100-80gb chain" in verdict or "committed after" in verdict, verdict
    assert "h100-80gb" in verdict
    stored = _agent(fake["agent_id"])
    assert not stored.verified and stored.challenges_failed == 1 and "failed its hardware challenge" in stored.verdict
    _gets_no_jobs(api, fake, "h100-80gb")


def test_cpu_claiming_vram_is_caught_by_the_memory_samples(aws, monkeypatch):
    """The VRAM half alone: the H100 claim's chain shrunk (server side) until a CPU answers it in time, the
    server still asks for the claimed memory, which a CPU device does not fill."""
    from depu.agents import challenges

    from depu_agent import challenge

    api = AgentApi()
    fake = register_agent(api, enrol_provider(), gpus=[GPU_H100], benchmark=H100_BENCHMARK, vouch=False)
    real = challenges.sizes_for(_agent(fake["agent_id"]))
    assert real.memory_mb == int(81559 * 0.9) and real.n == 8192 and real.steps >= 16  # what an H100 gets
    monkeypatch.setattr(challenges, "sizes_for", lambda agent: challenges.Sizes(64, 2, 1, 1024, 30.0, 0.1))
    outcome = challenge.answer(AgentClient(api, fake["agent_token"]), _prover())
    assert outcome["passed"] is False and "claimed memory was not filled" in outcome["verdict"], outcome
    assert not _agent(fake["agent_id"]).verified


def test_wrong_merkle_root_is_caught(aws):
    from depu_agent import challenge

    class WrongRoot(challenge.Prover):
        def compute(self, challenge_body, started):
            works = super().compute(challenge_body, started)
            works[0].tree.levels[-1] = [secrets.token_bytes(32)]  # commits a root it did not compute
            return works

    api = AgentApi()
    ensure_user(USER_ID)
    agent, client = _cpu_agent(api)
    outcome = challenge.answer(client, _prover(WrongRoot))
    assert outcome["passed"] is False and "does not match the committed root" in outcome["verdict"], outcome
    assert not _agent(agent["agent_id"]).verified
    _gets_no_jobs(api, agent, "cpu")


def test_garbage_products_under_a_consistent_root_are_caught(aws):
    """The cheap fake: skip the products (garbage of the right shape), commit honestly to the garbage."""
    from depu_agent import challenge

    class Garbage(challenge.Prover):
        def product(self, g, b, deadline):
            import torch

            return torch.randint(-5, 6, g.shape, dtype=torch.float32)

    api = AgentApi()
    agent, client = _cpu_agent(api)
    outcome = challenge.answer(client, _prover(Garbage))
    assert outcome["passed"] is False and "is wrong" in outcome["verdict"], outcome
    assert not _agent(agent["agent_id"]).verified


def test_half_computed_chain_is_caught(aws):
    """Computing only half the rows (the rest garbage) saves half the work; the row checks find it."""
    from depu_agent import challenge

    class Half(challenge.Prover):
        def product(self, g, b, deadline):
            import torch

            out = g @ b
            out[g.shape[0] // 2:] = torch.randint(-5, 6, (g.shape[0] - g.shape[0] // 2, g.shape[1])).float()
            return out

    api = AgentApi()
    failures = 0
    for attempt in range(3):  # each pass has probability about 2**-16 (16 independent row checks)
        agent, client = _cpu_agent(api, 7101 + attempt, f"half-{attempt}")
        failures += challenge.answer(client, _prover(Half))["passed"] is False
    assert failures == 3


def test_replayed_old_answer_is_refused(aws):
    from depu_agent import challenge

    api = AgentApi()
    agent, client = _cpu_agent(api)
    assert challenge.answer(client, _prover())["passed"] is True
    (_, old_commit), (_, old_reveal) = [item for item in client.sent if item[0] != "/agent/challenge"]
    # the same answer again: the challenge id is single-use
    assert api.call("/agent/challenge/commit", old_commit, agent["agent_token"])[0] == 409
    assert api.call("/agent/challenge/reveal", old_reveal, agent["agent_token"])[0] == 409
    # replayed into a new challenge (new seed): the old rows do not check out against it
    status, fresh = api.call("/agent/challenge", {}, agent["agent_token"])
    assert status == 200 and fresh["challenge_id"] != old_commit["challenge_id"] and fresh["seed"]
    status, checks = api.call("/agent/challenge/commit", {**old_commit, "challenge_id": fresh["challenge_id"]},
                              agent["agent_token"])
    assert status == 200 and "checks" in checks
    status, verdict = api.call("/agent/challenge/reveal", {**old_reveal, "challenge_id": fresh["challenge_id"]},
                               agent["agent_token"])
    assert status == 200 and verdict["passed"] is False, verdict
    assert not _agent(agent["agent_id"]).verified
    # bound to the agent: another agent cannot answer this one's challenge
    other, other_client = _cpu_agent(api, 7002, "other")
    status, pending = api.call("/agent/challenge", {}, agent["agent_token"])
    assert api.call("/agent/challenge/commit", {"challenge_id": pending["challenge_id"], "roots": ["0" * 64]},
                    other["agent_token"])[0] == 409
    # and asking again instead of answering counts as a failure
    before = _agent(agent["agent_id"]).challenges_failed
    api.call("/agent/challenge", {}, agent["agent_token"])
    assert _agent(agent["agent_id"]).challenges_failed == before + 1


def test_agent_ten_times_too_slow_is_caught(aws):
    """A device at a tenth of the CPU class's expected speed: every product takes ten times what the class's
    throughput table allows for it."""
    from depu.agents.verification import expected_tflops

    from depu_agent import challenge

    class TenTimesSlower(challenge.Prover):
        def product(self, g, b, deadline):
            started = time.monotonic()
            out = super().product(g, b, deadline + 3600)  # never gives up: it wants to finish
            allowed = 2.0 * g.shape[0] ** 3 / (expected_tflops(None) * 1e12)
            time.sleep(max(0.0, 10 * allowed - (time.monotonic() - started)))
            return out

    api = AgentApi()
    agent, client = _cpu_agent(api)
    outcome = challenge.answer(client, _prover(TenTimesSlower))
    assert outcome["passed"] is False and "committed after" in outcome["verdict"], outcome
    assert not _agent(agent["agent_id"]).verified


def test_self_reported_numbers_never_verify_or_rank(aws):
    """The review's attack: one POST claiming a 16×H100 at 4999 TFLOP/s. It is not verified, and between two
    verified agents the matcher prefers the one the cloud has seen do well, not the one that claims most."""
    from depu.agents import matcher
    from depu.agents.registry import Agent
    from depu.jobs.models import Job

    api = AgentApi()
    ensure_user(USER_ID, credits=5000)
    gpus = [{**GPU_H100, "index": index, "uuid": f"GPU-{index}"} for index in range(16)]
    boast = {**H100_BENCHMARK, "fp32_tflops": 4999.0, "bf16_tflops": 4999.0}
    liar = register_agent(api, enrol_provider(), name="liar", gpus=gpus, benchmark=boast, vouch=False)
    assert liar["verified"] is False
    _gets_no_jobs(api, liar, "h100-80gb")
    # both verified (fixture), the boaster claims 4999 TFLOP/s, the other has completed leases
    boaster = register_agent(api, enrol_provider(7002), name="boaster", benchmark=boast)
    steady = register_agent(api, enrol_provider(7003), name="steady")
    Agent(steady["agent_id"]).update(actions=[Agent.jobs_done.set(5)])
    job = Job.get(submit_job().job_id)
    ranked = [agent.agent_id for agent in matcher.candidates(job)]
    assert ranked[0] == steady["agent_id"] and boaster["agent_id"] in ranked
    assert _agent(boaster["agent_id"]).benchmark_score == 0  # stored for display only


def test_rechallenge_due_stops_new_jobs_and_an_ignored_one_unverifies(aws):
    from depu.agents import challenges
    from depu.agents.registry import Agent

    from depu_agent import challenge

    api = AgentApi()
    ensure_user(USER_ID, credits=5000)
    agent, client = _cpu_agent(api)
    assert challenge.answer(client, _prover())["passed"] is True
    status, beat = api.call("/agent/heartbeat", {"running_jobs": []}, agent["agent_token"])
    assert status == 200 and beat["challenge_due"] is False and beat["verified"] is True
    Agent(agent["agent_id"]).update(actions=[Agent.challenge_due_at.set(int(time.time()) - 5)])
    status, beat = api.call("/agent/heartbeat", {"running_jobs": []}, agent["agent_token"])
    assert beat["challenge_due"] is True
    _gets_no_jobs(api, agent, "cpu")  # answered on an idle GPU first
    assert challenge.answer(client, _prover())["passed"] is True  # answered: work again
    assert _agent(agent["agent_id"]).challenges_passed == 2
    late = int(time.time()) - challenges.IGNORE_GRACE_SECONDS - 10
    Agent(agent["agent_id"]).update(actions=[Agent.challenge_due_at.set(late)])
    api.call("/agent/heartbeat", {"running_jobs": []}, agent["agent_token"])
    stored = _agent(agent["agent_id"])
    assert not stored.verified and stored.verdict == "did not answer its re-challenge"


def test_reliability_is_shown_on_offers_and_to_the_provider(aws):
    from depu.agents import catalogue
    from depu.agents.registry import Agent

    api = AgentApi()
    agent = register_agent(api, enrol_provider(), gpus=[], benchmark=CPU_BENCHMARK)  # passed (fixture): 2/3
    Agent(agent["agent_id"]).update(actions=[Agent.jobs_done.set(2), Agent.leases_lost.set(1)])
    (offer,) = [item for item in catalogue.offers() if item.gpu_class == "cpu"]
    assert offer.reliability == pytest.approx((1 + 2 + 1) / (1 + 2 + 1 + 2), abs=1e-3)
    from depu.bot import rental
    from depu.chat import Incoming
    from recording_chat import RecordingChat
    from rental_helpers import PROVIDER_ID

    chat = RecordingChat()
    rental.provider(Incoming(update_id=1, user_id=PROVIDER_ID, chat_id=PROVIDER_ID, chat_type="private",
                             text="/provider", command="provider", first_name="Ada"), chat)
    assert "reliability 67%" in chat.plain and "challenges 1 passed, 0 failed" in chat.plain  # what /provider shows
    assert "1 leases lost" in chat.plain


def test_torch_prover_and_server_arithmetic_agree():
    """The spec (server, pure Python) and the agent's torch code compute the same matrices, rows and tree."""
    import torch

    from depu.agents import proofwork

    from depu_agent import challenge

    seed = secrets.token_hex(32)
    n, steps = 64, 4
    work = challenge.Prover([torch.device("cpu")]).compute(
        {"seed": seed, "n": n, "steps": steps, "devices": 1, "memory_mb": 0, "deadline_seconds": 60}, time.time())[0]
    k_a = proofwork.key(seed, proofwork.a_label(0))
    a = challenge.matrix(k_a, n, torch.device("cpu"), None)
    assert [int(v) for v in a[7]] == proofwork.a_row(seed, 0, 7, n)
    r = proofwork.value_range(n)
    b = challenge.matrix(proofwork.key(seed, proofwork.b_label(0, 2)), n, torch.device("cpu"), r)
    assert int(b[3, 5]) == proofwork.b_entry(proofwork.key(seed, proofwork.b_label(0, 2)), 3, 5, r)
    for step in range(1, steps + 1):
        row = random.randrange(n)
        packed = work.rows[step - 1][row].tobytes()
        values = proofwork.unpack_row(packed, n)
        previous = (proofwork.a_row(seed, 0, row, n) if step == 1
                    else proofwork.unpack_row(work.rows[step - 2][row].tobytes(), n))
        assert all(proofwork.chain_entry(seed, 0, step, previous, column, n) == values[column] for column in range(n))
        proof = [bytes.fromhex(item) for item in work.tree.proof((step - 1) * n + row)]
        assert proofwork.verify_proof(work.tree.root, proofwork.leaf_index(step, row, n),
                                      proofwork.leaf(0, step, row, packed), proof, steps * n)
        assert not proofwork.verify_proof(work.tree.root, proofwork.leaf_index(step, row, n),
                                          proofwork.leaf(0, step, row, bytes(len(packed))), proof, steps * n)


def test_the_agent_daemon_answers_a_due_challenge_between_jobs(aws, tmp_path):
    """The real daemon: a heartbeat answer says a challenge is due; with every GPU idle it answers it."""
    from depu.agents.registry import Agent

    from depu_agent import daemon
    from depu_agent.config import load_config

    api = AgentApi()
    agent, client = _cpu_agent(api)
    config = load_config(tmp_path / "agent.json", environ={})
    running = daemon.Agent(config, api=client, fault=None)
    running.heartbeat()
    assert running.challenge_due.is_set()
    running.answer_challenge()
    stored = _agent(agent["agent_id"])
    assert stored.verified and stored.challenges_passed == 1 and not running.challenge_due.is_set()
    Agent(agent["agent_id"]).update(actions=[Agent.challenge_due_at.set(int(time.time()) - 1)])
    running.heartbeat()
    assert running.challenge_due.is_set()  # a re-challenge, told by the heartbeat


def test_the_vram_fill_matches_what_the_server_recomputes(monkeypatch):
    """The CUDA fill, run on the CPU (the device check is lifted for this test only): the values the agent
    would read back are the server's."""
    import torch

    from depu.agents import proofwork

    from depu_agent import challenge

    class AnyDevice:
        type = "cuda"

    prover = challenge.Prover([torch.device("cpu")])
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    work = challenge.DeviceWork(0)
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, device=None, **k: real_empty(*a, **k))
    monkeypatch.setattr(torch, "arange", (lambda arange: lambda *a, device=None, **k: arange(*a, **k))(torch.arange))
    seed = secrets.token_hex(32)
    prover.fill_memory(work, AnyDevice(), seed, 2, 1)  # two chunks of 1 MB
    assert len(work.memory) == 2
    k = proofwork.key(seed, proofwork.memory_label(0))
    for chunk, offset in [(0, 0), (0, 12345), (1, 262143), (1, 7)]:
        assert int(work.memory[chunk][offset]) == proofwork.memory_value(k, chunk, offset)
