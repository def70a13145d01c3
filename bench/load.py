"""Load: many simulated Telegram users and provider agents against the local cloud on 127.0.0.1, for a bounded
time; then the invariants are checked on the stored state.

The cloud is what ``python -m local up`` runs, in this process: moto, the template's resources, the local
runtime (the webhook, the agent API and the matcher's SQS poller; each concurrent invocation gets its own
execution environment, as in Lambda) and the Telegram stand-in as the Bot API. Users are threads that type
commands into the stand-in, which POSTs each update to the webhook with the secret header exactly as Telegram
does; renters submit GPU jobs; agents are threads speaking the agent API over HTTP (heartbeat, claim, complete).

Reported per kind of request: count, errors (any status other than the expected ones, or no answer),
throughput, p50 and p99 latency. Invariants checked afterwards:
  - every update the webhook accepted was processed exactly once (one idempotency record each, completed, and
    exactly one bot reply per update in the stand-in);
  - no balance is negative, and no credits are left held for a job that has ended;
  - no job was claimed by two agents, and every finished job was settled once (one ledger settle entry).

Usage: ``python bench/load.py [--seconds 20] [--users 12] [--agents 4] [--renters 2]``.
Only 127.0.0.1 is ever contacted; every loop ends at the deadline.
"""
from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _headline import headline  # noqa: E402

import argparse
import collections
import os
import random
import secrets
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "layers" / "depu", ROOT / "agent"):
    sys.path.insert(0, str(extra))
for key, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "ERROR"}.items():
    os.environ.setdefault(key, value)

import logging  # noqa: E402

logging.disable(logging.WARNING)

import requests  # noqa: E402

FUNCTIONS = ("TelegramWebhookFunction", "AgentApiFunction", "MatcherFunction")
COMMANDS = ("/start", "/help", "/jobs", "/profile")
FIRST_USER = 300_001
FIRST_PROVIDER = 900_001
GPU = {"index": 0, "uuid": "GPU-load-0", "name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559, "driver": "550.54",
       "cuda_capability": "9.0"}
BENCHMARK = {"device": "cuda:0", "fp32_tflops": 48.0, "bf16_tflops": 600.0, "mem_bandwidth_gbs": 2900.0, "verified": True}


class Stats:
    """Latencies and outcomes per kind of request, shared by all threads."""

    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = collections.defaultdict(list)
        self.errors: collections.Counter[str] = collections.Counter()
        self.examples: dict[str, str] = {}
        self._lock = threading.Lock()

    def record(self, kind: str, seconds: float, ok: bool, detail: str = "") -> None:
        with self._lock:
            self.latencies[kind].append(seconds)
            if not ok:
                self.errors[kind] += 1
                self.examples.setdefault(kind, detail)


class Cloud:
    def __init__(self) -> None:
        from local.moto_server import MotoServer, free_port
        from local.provision import provision
        from local.runtime import LocalRuntime, RuntimeOptions
        from local.telegram_standin import TelegramStandIn
        from local.template import LocalTemplate

        self.bot_token = f"{random.randint(10**8, 10**9)}:{secrets.token_urlsafe(24)}"
        self.webhook_secret = secrets.token_urlsafe(32)
        self.moto = MotoServer(free_port()).start()
        os.environ["AWS_ENDPOINT_URL"] = self.moto.endpoint
        self.standin = TelegramStandIn(self.bot_token, port=free_port()).start()
        api_port = free_port()
        template = LocalTemplate(parameters={"TelegramApiBase": self.standin.api_base,
                                             "PublicApiUrl": f"http://127.0.0.1:{api_port}"})
        os.environ.update(template.environment(self.moto.endpoint))
        provision(template, self.moto.endpoint, bot_token=self.bot_token, webhook_secret=self.webhook_secret)
        self.runtime = LocalRuntime(template, self.moto.endpoint, RuntimeOptions(port=api_port, poll_wait_seconds=1))
        self.runtime.functions = {name: fn for name, fn in self.runtime.functions.items() if name in FUNCTIONS}
        self.runtime.start()
        assert self.runtime.url.startswith("http://127.0.0.1:")
        answer = requests.post(f"{self.standin.api_base}/bot{self.bot_token}/setWebhook", timeout=10, json={
            "url": f"{self.runtime.url}/telegram/webhook", "secret_token": self.webhook_secret})
        answer.raise_for_status()

    def stop(self) -> None:
        self.runtime.stop()
        self.standin.stop()
        self.moto.stop()


# ------------------------------------------------------------------------------------------ the actors
def user_loop(cloud: Cloud, user_id: int, deadline: float, stats: Stats, sent: dict[int, list[int]]) -> None:
    rng = random.Random(user_id)
    while time.monotonic() < deadline:
        text = rng.choice(COMMANDS)
        started = time.perf_counter()
        delivery = cloud.standin.send_user_message(user_id, text=text)
        elapsed = time.perf_counter() - started
        ok = delivery.status == 200
        stats.record("webhook update", elapsed, ok, f"{text}: {delivery.status} {delivery.error or ''}")
        if ok:
            sent[user_id].append(delivery.update_id)


def renter_loop(user_id: int, deadline: float, stats: Stats, submitted: list[str]) -> None:
    from depu import credits
    from depu.errors import UserError
    from depu.jobs import service
    from depu.profiles import ensure_profile

    ensure_profile(user_id, first_name=f"renter{user_id}")
    credits.grant(user_id, 50_000, f"load-topup-{user_id}", "load test top-up")
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            job = service.submit(user_id, user_id, gpu_class="h100-80gb", workload="benchmark", params={},
                                 time_limit_s=300, script=None)
        except UserError:  # e.g. credits exhausted: a clean refusal, not an error
            stats.record("job submit (in-process)", time.perf_counter() - started, True)
            time.sleep(0.5)
            continue
        stats.record("job submit (in-process)", time.perf_counter() - started, True)
        submitted.append(job.job_id)
        time.sleep(0.25)


def agent_loop(cloud: Cloud, index: int, deadline: float, stats: Stats, claims: dict[str, list[int]]) -> None:
    from depu.agents.tokens import issue_enrolment_token
    from depu.profiles import ensure_profile

    provider = FIRST_PROVIDER + index
    ensure_profile(provider, first_name=f"provider{index}")
    session = requests.Session()
    base = cloud.runtime.url

    def post(kind: str, path: str, body: dict, token: str | None, expected: tuple[int, ...]):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        started = time.perf_counter()
        try:
            response = session.post(f"{base}{path}", json=body, headers=headers, timeout=30)
        except requests.RequestException as error:
            stats.record(kind, time.perf_counter() - started, False, type(error).__name__)
            return None
        ok = response.status_code in expected
        stats.record(kind, time.perf_counter() - started, ok, f"{response.status_code} {response.text[:120]}")
        return response

    registered = post("agent register", "/agent/register", {
        "provider_token": issue_enrolment_token(provider), "name": f"load-{index}", "gpus": [GPU],
        "capabilities": ["gpu"], "benchmark": BENCHMARK, "version": "load"}, None, (201,))
    if registered is None or registered.status_code != 201:
        return
    token = registered.json()["agent_token"]
    _as_if_challenged(registered.json()["agent_id"])
    running: list[str] = []
    while time.monotonic() < deadline:
        post("agent heartbeat", "/agent/heartbeat", {"running_jobs": running, "free_gpus": [] if running else [0]},
             token, (200,))
        if running:
            job_id = running.pop()
            post("agent complete", f"/agent/jobs/{job_id}/complete", {"result": {"fp32_tflops": 48.0}}, token, (200,))
            continue
        answer = post("agent claim", "/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, token, (200, 204))
        if answer is not None and answer.status_code == 200:
            job_id = answer.json()["job"]["job_id"]
            claims[job_id].append(index)
            running.append(job_id)
        else:
            time.sleep(0.2)


def _as_if_challenged(agent_id: str) -> None:
    """No H100 here can pass an H100 hardware challenge: the simulated agents are stored as having passed one
    (this bench measures the API under load, not verification; tests/test_abuse_provider_verification.py does)."""
    from depu.agents.registry import Agent

    Agent(agent_id).update(actions=[Agent.verified.set(True), Agent.challenge_due_at.set(int(time.time()) + 6 * 3600)])


# ------------------------------------------------------------------------------------------ invariants
def check_invariants(cloud: Cloud, sent: dict[int, list[int]], claims: dict[str, list[int]],
                     renters: list[int]) -> list[tuple[str, bool, str]]:
    import boto3

    from depu import credits
    from depu.config import get_settings
    from depu.jobs.models import Job

    results = []
    accepted = [update_id for ids in sent.values() for update_id in ids]
    records = boto3.client("dynamodb").scan(TableName=get_settings().idempotency_table)["Items"]
    keys = collections.Counter(item["id"]["S"].rsplit("#", 1)[-1] for item in records)
    statuses = collections.Counter(item.get("status", {}).get("S") for item in records)
    replies_ok = all(len(cloud.standin.messages(user_id)) == len(ids) for user_id, ids in sent.items())
    detail = (f"{len(accepted)} accepted updates, {len(records)} idempotency records ({dict(statuses)}), "
              f"replies per user {'equal' if replies_ok else 'NOT equal'} to updates sent")
    results.append(("every accepted update processed exactly once",
                    len(records) == len(accepted) == len(set(accepted)) and set(statuses) <= {"COMPLETED"}
                    and max(keys.values(), default=1) == 1 and replies_ok, detail))

    jobs = list(Job.scan())
    users = set(renters) | set(sent)
    negative = [user_id for user_id in users if credits.balance(user_id).credits < 0 or credits.balance(user_id).held < 0]
    active_holds = collections.Counter()
    for job in jobs:
        if job.status in ("queued", "assigned", "running"):
            active_holds[int(job.user_id)] += int(job.max_cost)
    stray_holds = [user_id for user_id in renters if credits.balance(user_id).held != active_holds[user_id]]
    results.append(("no negative balance; held credits = holds of open jobs", not negative and not stray_holds,
                    f"{len(users)} accounts; negative: {negative or 'none'}; mismatched holds: {stray_holds or 'none'}"))

    doubly = {job_id: agents for job_id, agents in claims.items() if len(agents) > 1}
    settles = collections.Counter()
    for user_id in renters:
        for entry in credits.history(user_id, limit=10_000):
            if entry.kind in ("settle", "release"):  # a hold is closed by one or the other (nothing due)
                settles[entry.entry_id] += 1
    finished = [job for job in jobs if job.status == "succeeded"]
    unsettled = [job.job_id for job in finished if not job.settled]
    per_job = collections.Counter(job.hold_id for job in finished for entry_id in settles if job.hold_id in entry_id)
    twice = [hold for hold, count in per_job.items() if count != 1]
    results.append(("no job claimed by two agents; every finished job settled once",
                    not doubly and not unsettled and not twice,
                    f"{len(claims)} claims, {len(finished)} succeeded; claimed twice: {len(doubly)}; "
                    f"unsettled: {len(unsettled)}; settle count != 1: {len(twice)}"))
    return results


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--users", type=int, default=12)
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--renters", type=int, default=2)
    args = parser.parse_args()
    if not 1 <= args.seconds <= 600:
        parser.error("--seconds must be between 1 and 600")

    cloud = Cloud()
    stats = Stats()
    sent: dict[int, list[int]] = collections.defaultdict(list)
    claims: dict[str, list[int]] = collections.defaultdict(list)
    submitted: list[str] = []
    renters = [FIRST_USER + 50_000 + index for index in range(args.renters)]
    try:
        # warm up, untimed: one update per user at once, so the webhook's execution environments (cold imports
        # of every bot feature) exist before the clock starts; these updates count for the invariants
        def warm(user_id: int) -> None:
            delivery = cloud.standin.send_user_message(user_id, text="/help")
            if delivery.status == 200:
                sent[user_id].append(delivery.update_id)

        warmers = [threading.Thread(target=warm, args=(FIRST_USER + i,), daemon=True) for i in range(args.users)]
        for thread in warmers:
            thread.start()
        for thread in warmers:
            thread.join(120)
        started = time.monotonic()
        deadline = started + args.seconds
        threads = [threading.Thread(target=user_loop, args=(cloud, FIRST_USER + i, deadline, stats, sent), daemon=True)
                   for i in range(args.users)]
        threads += [threading.Thread(target=renter_loop, args=(user, deadline, stats, submitted), daemon=True)
                    for user in renters]
        threads += [threading.Thread(target=agent_loop, args=(cloud, i, deadline, stats, claims), daemon=True)
                    for i in range(args.agents)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(args.seconds + 60)
        elapsed = time.monotonic() - started
        stuck = sum(thread.is_alive() for thread in threads)
        time.sleep(2)  # let the last replies land
        invariants = check_invariants(cloud, sent, claims, renters)
        environments = {name: fn.environments for name, fn in cloud.runtime.functions.items()}
    finally:
        cloud.stop()

    print(f"load on 127.0.0.1 for {elapsed:.1f} s: {args.users} users, {args.renters} renters, {args.agents} agents "
          f"({os.cpu_count()} cores); execution environments used: {environments}\n")
    print("| request | count | errors | throughput (req/s) | p50 (ms) | p99 (ms) |")
    print("|---|---:|---:|---:|---:|---:|")
    total = 0
    for kind in sorted(stats.latencies):
        values = stats.latencies[kind]
        total += len(values)
        print(f"| {kind} | {len(values)} | {stats.errors[kind]} | {len(values) / elapsed:.1f} | "
              f"{percentile(values, 0.5) * 1000:.0f} | {percentile(values, 0.99) * 1000:.0f} |")
    print(f"| all | {total} | {sum(stats.errors.values())} | {total / elapsed:.1f} | | |")
    for kind, example in stats.examples.items():
        print(f"\nfirst error of {kind}: {example}")
    print("\n| invariant | holds | detail |\n|---|---|---|")
    for name, holds, detail in invariants:
        print(f"| {name} | {'yes' if holds else 'NO'} | {detail} |")
    if stuck:
        print(f"\n{stuck} threads did not finish")
    updates = stats.latencies.get("webhook update", [])
    if updates:
        headline(f"load: webhook updates, {args.users} users + {args.agents} agents for {elapsed:.0f} s (p50 / p99)",
                 f"{percentile(updates, 0.5) * 1000:.0f} / {percentile(updates, 0.99) * 1000:.0f} ms, "
                 f"{sum(stats.errors.values())} errors", "Telegram's per-bot limit (published)", "about 30 messages/s",
                 f"{total / elapsed:.1f} req/s overall; invariants "
                 f"{'all hold' if all(holds for _, holds, _ in invariants) else 'BROKEN'}")
    return 0 if all(holds for _, holds, _ in invariants) and not stuck and not stats.errors else 1


if __name__ == "__main__":
    sys.exit(main())
