"""The fork host: runs DePU shadow forks as anvil processes on this machine.

The agent starts ``ForkHost(api, config).run(stop_event)`` in a thread when "fork_host" is among its
capabilities. The loop long-polls ``POST /agent/forks/claim`` (telling the API which forks it runs, and
stopping those the API says are no longer its own), and does one task at a time:

- provision: start anvil forked from the upstream chain at the task's block, replay the fork's journal in
  order, report each entry's outcome, the snapshot ids anvil gave, and the RPC URL;
- rebase: the same at the upstream's current head, on a fresh anvil; once the API accepts the report the new
  anvil replaces the old one, which is stopped after a short grace period so in-flight reads finish;
- stop: stop the fork's anvil.

Forks whose task says ``follow`` (the default for new forks) then follow mainnet block by block, moved by
this host itself (forkfollow.py); every anvil here reads mainnet through the host's RPC cache (forkcache.py).

The host keeps no state a restart needs: a fork is its base plus its journal, which the API holds.

Every fork runs with its own chain id (``--chain-id``, from the task: DePU assigns it, docs/security.md), so what
a user signs on it is not valid on mainnet. The upstream URL, which usually carries the provider's API key,
never appears on anvil's command line (any local user can read /proc/<pid>/cmdline): anvil starts as a plain
chain and is turned into a fork of the upstream by an ``anvil_reset`` call over its loopback port.

anvil listens on 127.0.0.1 only, on a private port. The RPC URL reported is a ``ForkFront`` (forkfront.py) on
the address of ``fork_rpc_base_url``, which forwards only requests carrying the fork's host secret: the API
sends a fresh one in every provision and rebase task, the host keeps it in memory only, and the DePU proxy
presents it on every forward. So nobody who merely reaches the port can bypass the proxy.

When ``fork_rpc_base_url`` is https (always, outside the local stack) every front serves TLS with this machine's
fork certificate (forktls.py: made once in ``work_dir``, its fingerprint pinned by the API at registration), so
the proxy knows it talks to this machine and nobody on the way reads the traffic or the host secret.

Settings come from the agent config when it has them, else from the environment:
``fork_upstream_url`` / DEPU_FORK_UPSTREAM_URL (the mainnet JSON-RPC anvil forks from; the host's own, never
sent by the API), ``fork_rpc_base_url`` (how the DePU proxy reaches this machine, default http://127.0.0.1),
``fork_anvil_path`` / DEPU_FORK_ANVIL (the anvil binary), ``fork_max_forks`` (default 8).
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import ssl

import requests

from depu_agent import forktls
from depu_agent.forkcache import UpstreamCache
from depu_agent.forkfollow import Follower
from depu_agent.forkfront import ForkFront, outcome_of
from depu_agent.lifetime import die_with_parent

log = logging.getLogger(__name__)
RECEIPT_POLL_S = 0.003  # a replayed transaction's block is sealed within milliseconds

CLAIM_WAIT_SECONDS = 10.0  # the API caps a claim's long poll at 10 s
START_TIMEOUT_SECONDS = 30.0
SWAP_GRACE_SECONDS = 5.0
ERROR_BACKOFF_SECONDS = 2.0
TX_METHODS = frozenset({"eth_sendRawTransaction", "eth_sendTransaction"})
ANVIL_HOST = "127.0.0.1"  # anvil itself is never reachable from outside the machine; its ForkFront is
_REPO_ANVIL = Path(__file__).resolve().parents[2] / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"


class Api(Protocol):
    def post(self, path: str, json: dict | None = None, timeout: float | None = None) -> tuple[int, dict]: ...


def _setting(config: Any, name: str, env: str, default: str = "") -> str:
    return str(getattr(config, name, "") or os.environ.get(env, "") or default)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class AnvilProcess:
    """One anvil process on 127.0.0.1 (a private port), forked from ``upstream`` at ``block`` by ``reset``."""

    def __init__(self, binary: str, chain_id: int):
        if not isinstance(chain_id, int) or isinstance(chain_id, bool) or chain_id <= 0:
            raise ValueError("no chain id for this fork: refusing to start it with the upstream's")
        self.chain_id = chain_id
        self.block: int | None = None
        self.anvil_port = _free_port(ANVIL_HOST)
        self.local_url = f"http://{ANVIL_HOST}:{self.anvil_port}"
        self._session = requests.Session()
        # no --fork-url: the upstream URL (with its API key) is handed over by anvil_reset in reset
        self.process = subprocess.Popen(
            [binary, "--chain-id", str(chain_id), "--host", ANVIL_HOST, "--port", str(self.anvil_port), "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent(),  # a killed agent leaves no anvil behind
        )

    def wait_started(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"anvil exited with status {self.process.returncode}")
            try:
                self.call("eth_chainId", [])
                return
            except (requests.RequestException, RuntimeError, ValueError):
                time.sleep(0.05)
        raise TimeoutError("anvil did not answer in time")

    def reset(self, upstream: str, block: int) -> None:
        """Fork ``upstream`` at ``block`` (anvil_reset: the fork's state starts over there)."""
        self.value("anvil_reset", [{"forking": {"jsonRpcUrl": upstream, "blockNumber": block}}])
        if int(self.value("eth_chainId", []), 16) != self.chain_id:
            raise RuntimeError("anvil did not keep the fork's chain id")
        self.block = block

    def call(self, method: str, params: list[Any]) -> dict[str, Any]:
        """The raw JSON-RPC answer (``result`` or ``error``)."""
        answer = self._session.post(self.local_url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}, timeout=60)
        return answer.json()

    def value(self, method: str, params: list[Any]) -> Any:
        answer = self.call(method, params)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error'].get('message')}")
        return answer["result"]

    def receipt(self, tx_hash: str, timeout: float = 5.0) -> dict[str, Any] | None:
        """anvil answers a transaction's hash before its automine block is sealed: wait for the receipt."""
        deadline = time.monotonic() + timeout
        while True:
            receipt = self.value("eth_getTransactionReceipt", [tx_hash])
            if receipt or time.monotonic() > deadline:
                return receipt
            time.sleep(RECEIPT_POLL_S)

    def replay(self, journal: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Apply the journal in order; returns each entry's raw outcome and the snapshot ids anvil gave."""
        reports, snapshots = [], {}
        for entry in journal:
            method, params, seq = entry["method"], entry.get("params") or [], int(entry["seq"])
            answer = self.call(method, params)
            if "error" in answer:
                reports.append({"seq": seq, "error": answer["error"]})
                continue
            if method in TX_METHODS:
                receipt = self.receipt(answer["result"])
                reports.append({"seq": seq, "receipt": receipt})
                continue
            if method == "evm_snapshot":
                snapshots[str(seq)] = answer["result"]
            reports.append({"seq": seq, "result": answer.get("result")})
        return reports, snapshots

    def stop(self) -> None:
        self._session.close()
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def outcomes_of(journal: list[dict[str, Any]], reports: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each replayed entry's outcome in the front's terms (forkfront.outcome_of), by seq."""
    methods = {int(entry["seq"]): entry["method"] for entry in journal}
    found = {}
    for report in reports:
        seq = int(report["seq"])
        answer = {"error": report["error"]} if "error" in report else {"result": report.get("result")}
        found[seq] = outcome_of(methods.get(seq, ""), answer, report.get("receipt"))
    return found


class AnvilFork:
    """One fork on this host: an anvil process forked from ``upstream`` at ``block``, on 127.0.0.1 only,
    behind a ForkFront on ``bind_host`` that admits only requests carrying ``secret``. A follow step
    (forkfollow.py) may replace the process behind the front (``process_`` and ``spare``)."""

    def __init__(self, binary: str, upstream: str, block: int, bind_host: str, public_base: str, secret: str,
                 chain_id: int, last_seq: int = -1, tls: ssl.SSLContext | None = None):
        if not secret:
            raise ValueError("no host secret for this fork: refusing to serve it unauthenticated")
        self.block = block
        self.binary = binary
        self._upstream = upstream
        self.anvil = AnvilProcess(binary, chain_id)
        self.chain_id = self.anvil.chain_id
        self.spare: AnvilProcess | None = None  # the previous process, kept for the next follow step
        try:
            self.front = ForkFront(bind_host, self.anvil.local_url, secret, last_seq=last_seq, tls=tls)
        except Exception:
            self.anvil.stop()
            raise
        self.port = self.front.port
        self.rpc_url = f"{public_base.rstrip('/')}:{self.port}"

    # the process serving now (tests and the host read these)
    @property
    def process(self) -> subprocess.Popen:
        return self.anvil.process

    @property
    def local_url(self) -> str:
        return self.anvil.local_url

    @property
    def anvil_port(self) -> int:
        return self.anvil.anvil_port

    def wait_ready(self, timeout: float = START_TIMEOUT_SECONDS) -> None:
        self.anvil.wait_started(timeout)
        self.anvil.reset(self._upstream, self.block)

    def call(self, method: str, params: list[Any]) -> dict[str, Any]:
        return self.anvil.call(method, params)

    def value(self, method: str, params: list[Any]) -> Any:
        return self.anvil.value(method, params)

    def receipt(self, tx_hash: str, timeout: float = 5.0) -> dict[str, Any] | None:
        return self.anvil.receipt(tx_hash, timeout)

    def replay(self, journal: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        reports, snapshots = self.anvil.replay(journal)
        outcomes = outcomes_of(journal, reports)
        self.front.adopt([{**entry, "seq": int(entry["seq"]), "params": entry.get("params") or [],
                           "outcome": outcomes.get(int(entry["seq"]))} for entry in journal], snapshots)
        return reports, snapshots

    def stop(self) -> None:
        self.front.stop()
        self.anvil.stop()
        if self.spare is not None:
            self.spare.stop()

    def _stop_anvil(self) -> None:
        self.anvil.stop()


class ForkHost:
    def __init__(self, api: Api, config: Any = None):
        self.api = api
        self.upstream = _setting(config, "fork_upstream_url", "DEPU_FORK_UPSTREAM_URL")
        public_base = _setting(config, "fork_rpc_base_url", "DEPU_FORK_RPC_BASE_URL", "http://127.0.0.1")
        self.public_base = public_base.rstrip("/")
        self.bind_host = urlsplit(self.public_base).hostname or "127.0.0.1"
        self.tls: ssl.SSLContext | None = None
        if urlsplit(self.public_base).scheme == "https":
            work_dir = _setting(config, "work_dir", "DEPU_WORK_DIR", str(Path.cwd() / "work"))
            self.tls = forktls.server_context(*forktls.ensure(work_dir, self.bind_host))
        self.binary = _setting(config, "fork_anvil_path", "DEPU_FORK_ANVIL") or shutil.which("anvil") or str(_REPO_ANVIL)
        self.max_forks = int(getattr(config, "fork_max_forks", 0) or 8)
        self.claim_wait = min(float(getattr(config, "claim_wait_seconds", CLAIM_WAIT_SECONDS) or CLAIM_WAIT_SECONDS), CLAIM_WAIT_SECONDS)
        self.forks: dict[str, AnvilFork] = {}
        self._lock = threading.Lock()
        self._retiring: list[tuple[threading.Timer, AnvilFork]] = []
        self.cache = UpstreamCache(self.upstream) if self.upstream else None
        self.follower = Follower(self._serving, self._upstream_head, self.cache.url if self.cache else "", self.cache)
        # the agent may exit without waiting for this thread (its threads are daemons): never leave anvils behind
        atexit.register(self.shutdown)

    # ------------------------------------------------------------------ loop
    def run(self, stop_event: threading.Event) -> None:
        if not self.upstream:
            log.error("fork host disabled: no fork_upstream_url / DEPU_FORK_UPSTREAM_URL configured")
            return
        following = threading.Thread(target=self.follower.run, args=(stop_event,), name="fork-follow", daemon=True)
        following.start()
        try:
            while not stop_event.is_set():
                try:
                    self.step()
                except Exception:  # noqa: BLE001 - the loop outlives one bad answer or a network blip
                    log.exception("fork host step failed")
                    stop_event.wait(ERROR_BACKOFF_SECONDS)
        finally:
            self.shutdown()

    def _serving(self) -> dict[str, AnvilFork]:
        with self._lock:
            return dict(self.forks)

    def step(self) -> bool:
        """One claim round; True if a task was done."""
        wait = self.claim_wait if len(self.forks) < self.max_forks else 0
        status, body = self.api.post("/agent/forks/claim", {"wait": wait, "running": sorted(self.forks)}, timeout=wait + 15)
        if status != 200:
            raise RuntimeError(f"claim answered {status}")
        for fork_id in body.get("stop") or []:
            self._drop(fork_id)
        task = body.get("task")
        if not task:
            return False
        self.handle(task)
        return True

    def handle(self, task: dict[str, Any]) -> None:
        kind, fork_id, task_id = task["kind"], task["fork_id"], task["task_id"]
        log.info("fork task %s for %s", kind, fork_id)
        if kind == "stop":
            stopped = self._drop(fork_id)
            self._report(task_id, {"ok": True, "stopped": stopped})
            return
        try:
            anvil, report = self._build(task)
        except Exception as error:  # noqa: BLE001 - reported to the state machine, which decides
            log.warning("fork %s: %s failed: %s", fork_id, kind, error)
            self._report(task_id, {"ok": False, "error": f"{kind} failed: {error}"[:300]})
            return
        status = self._report(task_id, report)
        if status != 200:
            anvil.stop()  # the state machine gave up waiting, or rejected the report
            return
        with self._lock:
            old = self.forks.get(fork_id)
            self.forks[fork_id] = anvil
        if old is not None:
            timer = threading.Timer(SWAP_GRACE_SECONDS, old.stop)
            timer.daemon = True
            timer.start()
            self._retiring.append((timer, old))

    def _build(self, task: dict[str, Any]) -> tuple[AnvilFork, dict[str, Any]]:
        block = task.get("block") or "latest"
        number = self._upstream_head() if block == "latest" else int(block)
        journal = task.get("journal") or []
        last_seq = max((int(entry["seq"]) for entry in journal), default=-1)
        upstream = self.cache.url if self.cache else self.upstream
        anvil = AnvilFork(self.binary, upstream, number, self.bind_host, self.public_base, str(task.get("host_secret") or ""),
                          chain_id=task.get("chain_id"), last_seq=last_seq, tls=self.tls)
        anvil.front.follow.update({"following": bool(task.get("follow")), "base_block": number, "steps": 0})
        try:
            anvil.wait_ready()
            entries, snapshots = anvil.replay(journal)
            chain_id = int(anvil.value("eth_chainId", []), 16)
        except Exception:
            anvil.stop()
            raise
        report = {"ok": True, "rpc_url": anvil.rpc_url, "base_block": number, "chain_id": chain_id,
                  "entries": entries, "snapshots": snapshots}
        return anvil, report

    def _upstream_head(self) -> int:
        answer = requests.post(self.upstream, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}, timeout=10)
        return int(answer.json()["result"], 16)

    def _report(self, task_id: str, report: dict[str, Any]) -> int:
        status, _body = self.api.post(f"/agent/forks/tasks/{task_id}/result", report, timeout=30)
        return status

    def _drop(self, fork_id: str) -> bool:
        with self._lock:
            anvil = self.forks.pop(fork_id, None)
        if anvil is None:
            return False
        anvil.stop()
        return True

    def shutdown(self) -> None:
        with self._lock:
            forks, self.forks = list(self.forks.values()), {}
        for timer, old in self._retiring:
            timer.cancel()
            forks.append(old)
        self._retiring.clear()
        for anvil in forks:
            anvil.stop()
        if self.cache is not None:
            self.cache.stop()
            self.cache = None
