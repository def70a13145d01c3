"""Chain alert latency on the local chain: inclusion → alert delivered at the Telegram stand-in, and the
confirmation edit, for DePU's two-phase alerts beside the confirmed-only alerting DePU had before (the
reference in the same run; whale-alert style bots publish "within seconds").

The chain is anvil mining a block every ``--block-time`` seconds (2 s by default). A watched address receives
ETH at random moments; a block watcher polls the node every 20 ms and takes the moment a block is first
visible as its inclusion time. Everything else is DePU's real code path: the indexer Lambda handler invoked
by the local invoker the way the schedule does (a new invocation every ``--rate`` seconds, each up to the
template's timeout, overlapping and handing the follower lease over), ChainTable and the notify queue in
moto, the notifier Lambda handler fed by an SQS poller, and the stand-in recording each message and edit.

Goals (issue 18): unconfirmed alert p50 ≤ 3 s, p95 ≤ 6 s after inclusion; confirmation edit within
N blocks + 3 s (N = ``CHAIN_CONFIRMATIONS``). The edit's time is also broken down (``STAGES``): until block
inclusion+N is visible, until the follower queues the edit, until the notifier takes it off the queue, and
until the stand-in records it.

``python bench/alerts.py [--samples N] [--confirmations N] [--block-time S]``
"""
from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _headline import headline  # noqa: E402

import argparse
import dataclasses
import logging
import os
import random
import re
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "layers" / "depu")]

BOT_TOKEN = "4242:bench-alerts"
CHAT = 777
TX = re.compile(r"0x[0-9a-f]{64}")
STAGES = {  # the confirmation edit's path, one stage after the other
    "deep": "inclusion → block inclusion+N visible on the node",
    "queued": "block inclusion+N visible → edit queued by the follower",
    "received": "queued → taken off the notify queue by the notifier",
    "delivered": "taken off the queue → edit recorded at the stand-in",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class BlockWatcher(threading.Thread):
    """The moment each transaction's block is first visible on the node (polled every 20 ms)."""

    def __init__(self, chain):
        super().__init__(daemon=True, name="bench-blocks")
        self.chain, self.stop, self.included = chain, threading.Event(), {}
        self.block_seen: dict[int, float] = {}

    def run(self) -> None:
        last = self.chain.block_number()
        while not self.stop.is_set():
            head = self.chain.block_number()
            now = time.time()
            for number in range(last + 1, head + 1):
                self.block_seen[number] = now
                for tx in self.chain.rpc("eth_getBlockByNumber", hex(number), False)["transactions"]:
                    self.included[tx] = (number, now)
            last = head
            time.sleep(0.02)


class Stages:
    """Where a confirmation edit's time goes: when its notice was queued and when the notifier took it off the
    queue, by transaction hash (the handlers run on threads of this process, so the bench can watch the calls)."""

    def __init__(self):
        self.queued: dict[str, float] = {}
        self.received: dict[str, float] = {}
        self._lock = threading.Lock()

    def _mark(self, marks: dict[str, float], text: str) -> None:
        if "confirmed</b>" not in text or "unconfirmed" in text:
            return
        now = time.time()
        with self._lock:
            for tx in TX.findall(text):
                marks.setdefault(tx, now)

    def watch_queue(self) -> None:
        import depu.notify as notify

        enqueue = notify.enqueue

        def traced(notice):
            enqueue(notice)
            self._mark(self.queued, notice.text)

        notify.enqueue = traced

    def received_batch(self, messages: list[dict]) -> None:
        import json

        for message in messages:
            self._mark(self.received, json.loads(message["Body"]).get("text", ""))


class Deliveries(threading.Thread):
    """Every message and edit the stand-in records, timestamped as it happens, by transaction hash."""

    def __init__(self, standin):
        super().__init__(daemon=True, name="bench-deliveries")
        self.standin, self.stop = standin, threading.Event()
        self.sent: dict[str, float] = {}
        self.edited: dict[str, list[tuple[float, str]]] = {}
        self.messages: dict[str, set[int]] = {}

    def run(self) -> None:
        seen = 0
        while not self.stop.is_set():
            events = self.standin.events(CHAT, after=seen, wait=0.5)
            now = time.time()
            for event in events:
                seen = max(seen, event["seq"])
                text = event["message"]["text"]
                for tx in TX.findall(text):
                    self.messages.setdefault(tx, set()).add(event["message"]["message_id"])
                    if event["kind"] == "message":
                        self.sent.setdefault(tx, now)
                    else:
                        self.edited.setdefault(tx, []).append((now, text))


def notifier_poller(function, queue_url: str, queue_arn: str, stop: threading.Event, stages: Stages) -> None:
    """What Lambda's SQS event source mapping does: long-poll, invoke with the batch, delete what succeeded."""
    import boto3

    from local.runtime import sqs_event

    sqs = boto3.client("sqs")
    while not stop.is_set():
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       AttributeNames=["All"]).get("Messages", [])
        if not messages:
            continue
        stages.received_batch(messages)
        result = function.invoke(sqs_event(messages, queue_arn)) or {}
        failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
        done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
                if m["MessageId"] not in failed]
        if done:
            sqs.delete_message_batch(QueueUrl=queue_url, Entries=done)


def schedule(function, every: float, stop: threading.Event, runs: list[threading.Thread]) -> None:
    """EventBridge: an asynchronous invocation every ``every`` seconds (they overlap when runs are longer)."""
    while not stop.is_set():
        run = threading.Thread(target=function.invoke, args=({"source": "aws.events", "detail-type": "Scheduled Event"},),
                               daemon=True)
        run.start()
        runs.append(run)
        stop.wait(every)


def measure(chain, standin, functions, queue, *, samples: int, confirmations: int, tip: bool, rate: float,
            block_time: float) -> dict:
    """One configuration from a clean ChainTable: returns the latencies (seconds) per transfer."""
    from depu.analytics import watches
    from depu.chain import store

    for item in list(store.table().scan()["Items"]):
        if item["pk"].startswith(("CHAIN", "ALERT", "BLK#", "TOK#", "ADR#")):
            store.table().delete_item(Key={"pk": item["pk"], "sk": item["sk"]})
    from depu.config import get_settings

    os.environ.update(CHAIN_RPC_URL=chain.rpc_url, CHAIN_CONFIRMATIONS=str(confirmations), CHAIN_START_BLOCK=str(chain.block_number()),
                      CHAIN_POLL_SECONDS="0.5" if tip else "2.0", CHAIN_ALERT_AT_TIP="1" if tip else "0")
    get_settings.cache_clear()
    watched = chain.accounts[3]
    watches.add(CHAT, CHAT, watched.lower(), 0)
    blocks, deliveries, stages = BlockWatcher(chain), Deliveries(standin), Stages()
    stages.watch_queue()
    stop = threading.Event()
    runs: list[threading.Thread] = []
    threads = [blocks, deliveries,
               threading.Thread(target=notifier_poller, args=(functions["NotifierFunction"], *queue, stop, stages),
                                daemon=True),
               threading.Thread(target=schedule, args=(functions["IndexerFunction"], rate, stop, runs), daemon=True)]
    for thread in threads:
        thread.start()
    time.sleep(3)  # the first invocation is following
    rng = random.Random(18)
    sent: list[str] = []
    for _ in range(samples):
        time.sleep(rng.uniform(0.6, 1.6) * block_time)
        sent.append(chain.rpc("eth_sendTransaction", {"from": chain.accounts[2], "to": watched, "value": hex(10**15),
                                                      "gas": hex(21000)}))
    settle_by = time.time() + (confirmations + 4) * block_time + 10
    while time.time() < settle_by and not all(len(deliveries.edited.get(tx, [])) >= (1 if tip else 0)
                                              and tx in deliveries.sent for tx in sent):
        time.sleep(0.5)
    stop.set()
    blocks.stop.set()
    deliveries.stop.set()
    alert, confirm, messages = [], [], []
    breakdown: dict[str, list[float]] = {"deep": [], "queued": [], "received": [], "delivered": []}
    for tx in sent:
        number, included = blocks.included.get(tx, (None, None))
        if included is None or tx not in deliveries.sent:
            continue
        alert.append(deliveries.sent[tx] - included)
        messages.append(len(deliveries.messages.get(tx, ())))
        confirmed_at = (deliveries.sent[tx] if not tip else
                        next((t for t, text in deliveries.edited.get(tx, []) if "confirmed" in text), None))
        if confirmed_at is not None:
            confirm.append(confirmed_at - included)
            deep = blocks.block_seen.get(number + confirmations)
            if tip and deep is not None and tx in stages.queued and tx in stages.received:
                breakdown["deep"].append(deep - included)
                breakdown["queued"].append(stages.queued[tx] - deep)
                breakdown["received"].append(stages.received[tx] - stages.queued[tx])
                breakdown["delivered"].append(confirmed_at - stages.received[tx])
    watches.remove(CHAT, watched.lower())
    for run in runs:  # the next configuration starts from a chain nobody follows
        run.join()
    return {"alert": alert, "confirm": confirm, "sent": len(sent), "messages": messages, "breakdown": breakdown}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    parser.add_argument("--reference-samples", type=int, default=10)
    parser.add_argument("--confirmations", type=int, default=6)
    parser.add_argument("--block-time", type=float, default=2.0)
    parser.add_argument("--rate", type=float, default=20.0,
                        help="seconds between scheduled indexer invocations (template: 60)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="each invocation's timeout (template: 90; the same 1.5x overlap, more handovers)")
    args = parser.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        os.environ.setdefault(name, value)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    from local.devchain import DevChain
    from local.moto_server import MotoServer
    from local.provision import provision
    from local.runtime import LocalFunction
    from local.telegram_standin import TelegramStandIn
    from local.template import LocalTemplate

    server = MotoServer().start()
    standin = TelegramStandIn(BOT_TOKEN, port=0).start()
    try:
        os.environ["AWS_ENDPOINT_URL"] = server.endpoint
        template = LocalTemplate()
        os.environ.update(template.environment(server.endpoint))
        os.environ["TELEGRAM_API_BASE"] = standin.api_base
        provision(template, server.endpoint, bot_token=BOT_TOKEN, webhook_secret="bench-secret")
        from depu.config import get_settings

        get_settings.cache_clear()
        specs = template.functions(server.endpoint)
        specs["IndexerFunction"] = dataclasses.replace(specs["IndexerFunction"], timeout=args.timeout)
        functions = {name: LocalFunction(specs[name], template.physical_name(name))
                     for name in ("NotifierFunction", "IndexerFunction")}
        queue_url = get_settings().notify_queue_url
        import boto3

        queue_arn = boto3.client("sqs").get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        with DevChain(accounts=5, block_time=args.block_time) as chain:
            ours = measure(chain, standin, functions, (queue_url, queue_arn), samples=args.samples,
                           confirmations=args.confirmations, tip=True, rate=args.rate, block_time=args.block_time)
            before = measure(chain, standin, functions, (queue_url, queue_arn), samples=args.reference_samples,
                             confirmations=args.confirmations, tip=False, rate=args.rate, block_time=args.block_time)
    finally:
        standin.stop()
        server.stop()

    n, bt = args.confirmations, args.block_time

    def figures(values: list[float]) -> str:
        if not values:
            return "no deliveries"
        return (f"p50 {percentile(values, 0.5):.2f} s, p95 {percentile(values, 0.95):.2f} s, "
                f"max {max(values):.2f} s (n={len(values)})")

    rows = [
        ("chain", f"anvil, a block every {bt:g} s; CHAIN_CONFIRMATIONS={n}; indexer invoked every {args.rate:g} s, "
                  f"timeout {args.timeout:g} s"),
        ("DePU two-phase: inclusion → unconfirmed alert delivered", figures(ours["alert"])),
        ("DePU two-phase: inclusion → confirmation edit delivered",
         figures(ours["confirm"]) + f"; goal {n} blocks + 3 s = {n * bt + 3:g} s"),
        *[(f"  confirmation edit, {what}", figures(ours["breakdown"][stage])) for stage, what in STAGES.items()],
        ("messages per transfer (two-phase)", f"{max(ours['messages'] or [0])} at most, over {ours['sent']} transfers"),
        ("DePU before (confirmed-only alerts, 2 s poll): inclusion → alert", figures(before["alert"])),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"| {'what'.ljust(width)} | figure |\n|{'-' * (width + 2)}|--------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")
    if ours["alert"] and before["alert"]:
        p50, ref = percentile(ours["alert"], 0.5), percentile(before["alert"], 0.5)
        headline("inclusion → chain alert delivered (p50, local chain, 2 s blocks)", f"{p50:.2f} s",
                 "DePU's confirmed-only alerts, same run", f"{ref:.2f} s", f"{ref / p50:.1f}x sooner")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
