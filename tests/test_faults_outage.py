"""Faults: parts of the system unreachable for a while, on 127.0.0.1, bounded.

1. The agent API is down (the local runtime's HTTP server stopped: connection refused, not an error answer)
   while an agent finishes a job, and the agent restarts during the outage. The finished job's report waits
   on disk in the agent's outbox (``depu_agent.outbox.Outbox`` with the real ``ApiClient`` and its backoff),
   is delivered once the API is back on the same address, and the user is charged exactly once even when the
   report is sent again. (test_rental_e2e.py's outage test drives a whole agent process through an HTTP
   proxy that answers 502; this one covers refused connections and a restart in between.)
2. The AWS endpoint (moto) is unreachable for a while: a loopback TCP relay in front of moto is cut. The
   local runtime's SQS poller keeps running, retries, and delivers what was queued during the outage once
   the endpoint is back. Restarting moto itself would also lose moto's in-memory state, which a real AWS
   outage does not, so the endpoint outage is what is shown.
"""
from __future__ import annotations

import socket
import threading
import time

import boto3
import pytest

from conftest import TEST_BOT_TOKEN
from depu.notify import Notice
from depu.telegram.client import bot_api
from depu_agent.api import ApiClient, Backoff
from depu_agent.outbox import Outbox
from forks_support import wait_for
from local.moto_server import free_port
from rental_helpers import USER_ID, enrol_provider, ensure_user, run_matcher, submit_job
from rental_helpers import GPU_H100, H100_BENCHMARK, vouch_for

pytestmark = pytest.mark.e2e


def runtime_on(aws, port: int, functions: tuple[str, ...], endpoint: str | None = None, extra_env=None):
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.template import LocalTemplate

    runtime = LocalRuntime(LocalTemplate(), endpoint or aws.endpoint,
                           RuntimeOptions(port=port, poll_wait_seconds=1, extra_environment=extra_env or {}))
    runtime.functions = {name: fn for name, fn in runtime.functions.items() if name in functions}
    return runtime.start()


def settles(job) -> list:
    """The entries that closed the job's hold: exactly one (``settle``, or ``release`` when nothing is due)."""
    from depu import credits

    return [entry for entry in credits.history(USER_ID, limit=100)
            if entry.kind in ("settle", "release") and job.hold_id in entry.entry_id]


def test_a_report_finished_while_the_api_is_down_survives_an_agent_restart_and_counts_once(aws, tmp_path):
    from depu import credits
    from depu.jobs.models import Job

    port = free_port()
    runtime = runtime_on(aws, port, ("AgentApiFunction",))
    base = f"http://127.0.0.1:{port}"
    ensure_user(USER_ID, credits=5000)
    client = ApiClient(base, attempts=2, backoff=Backoff(initial=0.05, maximum=0.2), timeout=10)
    status, registration = client.post("/agent/register", {
        "provider_token": enrol_provider(), "name": "rig", "gpus": [GPU_H100], "capabilities": ["gpu"],
        "benchmark": H100_BENCHMARK, "version": "test"})
    assert status == 201
    vouch_for(registration["agent_id"])  # as if it had passed its hardware challenge (no H100 here)
    client.set_token(registration["agent_token"])
    job = submit_job()
    run_matcher()
    status, offer = client.post("/agent/claim", {"free_gpus": [0], "wait_seconds": 0})
    assert status == 200 and offer["job"]["job_id"] == job.job_id
    before = credits.balance(USER_ID)

    runtime.stop()  # the API goes away: new connections are refused
    outbox_dir = tmp_path / "outbox"
    # a fresh client: the stopped runtime's handler threads still serve connections kept alive from before
    first = Outbox(outbox_dir, ApiClient(base, registration["agent_token"], attempts=2,
                                         backoff=Backoff(initial=0.05, maximum=0.2), timeout=10))
    first.put(job.job_id, "complete", {"result": {"fp32_tflops": 47.0}})
    started = time.monotonic()
    assert first.flush() is False  # kept for later, after the client's retries with backoff
    assert time.monotonic() - started < 5
    assert [path.name for path in outbox_dir.glob("*.json")] == [f"{job.job_id}.json"]
    assert Job.get(job.job_id, consistent_read=True).status == "running"

    # the agent restarts while the API is still down: a new process finds the report on disk
    restarted = Outbox(outbox_dir, ApiClient(base, registration["agent_token"], attempts=2,
                                             backoff=Backoff(initial=0.05, maximum=0.2), timeout=10))
    assert restarted.pending_job_ids() == [job.job_id]
    assert restarted.flush() is False

    runtime = runtime_on(aws, port, ("AgentApiFunction",))  # the API is back on the same address
    try:
        assert restarted.flush() is True
        assert list(outbox_dir.glob("*.json")) == []
        done = Job.get(job.job_id, consistent_read=True)
        assert done.status == "succeeded" and done.settled and done.result == {"fp32_tflops": 47.0}
        charged = int(done.charged)
        # the same report again (an agent that never saw the answer): same outcome, no second charge
        restarted.put(job.job_id, "complete", {"result": {"fp32_tflops": 47.0}})
        assert restarted.flush() is True
    finally:
        runtime.stop()
    assert [entry["outcome"] for entry in restarted.delivered] == ["HTTP 200", "HTTP 200"]
    assert len(settles(done)) == 1
    after = credits.balance(USER_ID)
    assert after.held == before.held - int(done.max_cost)  # the hold is released...
    assert after.credits + after.held == before.credits + before.held - charged  # ...and the time used charged once


class Relay:
    """A loopback TCP relay to moto that can be cut (new connections refused, open ones closed) and restored
    on the same port."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener:
            listener.close()
        with self._lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                connection.close()
            self._connections.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.close()
                except OSError:
                    pass


def fifo_fields(chat_id: int) -> dict[str, str]:
    """What the FIFO notify queue needs with each message, as depu.notify.enqueue sends it."""
    import uuid

    return {"MessageGroupId": str(chat_id), "MessageDeduplicationId": uuid.uuid4().hex}


def test_the_sqs_poller_survives_an_aws_endpoint_outage_and_delivers_afterwards(aws, telegram):
    from depu.config import get_settings

    relay = Relay(int(aws.endpoint.rsplit(":", 1)[1]))
    direct_sqs = boto3.client("sqs", endpoint_url=aws.endpoint)
    queue = get_settings().notify_queue_url
    # A receive in flight when the relay is cut can take a message whose answer never arrives: SQS then offers
    # it again after the visibility timeout (60 s in the template), which is the at-least-once promise this
    # shows. Shortened to 2 s here so the test takes seconds.
    direct_sqs.set_queue_attributes(QueueUrl=queue, Attributes={"VisibilityTimeout": "2"})
    bot_api.cache_clear()
    runtime = runtime_on(aws, free_port(), ("NotifierFunction",), endpoint=relay.url,
                         extra_env={"TELEGRAM_API_BASE": telegram.base_url})
    try:
        direct_sqs.send_message(QueueUrl=queue, MessageBody=Notice(USER_ID, "before the outage").to_json(),
                                **fifo_fields(USER_ID))
        wait_for(lambda: len(telegram.calls_of("sendMessage")) == 1, 30, "the first notice")
        relay.down()
        direct_sqs.send_message(QueueUrl=queue, MessageBody=Notice(USER_ID, "during the outage").to_json(),
                                **fifo_fields(USER_ID))
        time.sleep(3)  # several poll attempts fail meanwhile
        assert len(telegram.calls_of("sendMessage")) == 1
        poller = [thread for thread in threading.enumerate() if thread.name == "depu-local-sqs-NotifierFunction"]
        assert poller and poller[0].is_alive()
        relay.up()
        wait_for(lambda: len(telegram.calls_of("sendMessage")) == 2, 60, "the notice queued during the outage")
        wait_for(lambda: not direct_sqs.receive_message(QueueUrl=queue, VisibilityTimeout=0).get("Messages"), 30,
                 "the queue to be empty")
    finally:
        runtime.stop()
        relay.down()
        bot_api.cache_clear()
    assert [call.params["text"] for call in telegram.calls_of("sendMessage")] == ["before the outage", "during the outage"]


def test_a_stopped_runtime_answers_nobody(aws):
    import requests

    port = free_port()
    runtime = runtime_on(aws, port, ("AgentApiFunction",))
    session = requests.Session()
    assert session.post(f"http://127.0.0.1:{port}/agent/heartbeat", json={}, timeout=10).status_code == 401
    runtime.stop()
    with pytest.raises(requests.ConnectionError):
        session.post(f"http://127.0.0.1:{port}/agent/heartbeat", json={}, timeout=10)


def test_a_stopped_telegram_standin_answers_nobody():
    """The Bot API stand-in shares the server: a keep-alive client from before stop() is cut off too."""
    import requests

    from local.telegram_standin import TelegramStandIn

    standin = TelegramStandIn(TEST_BOT_TOKEN, port=free_port()).start()
    session = requests.Session()
    try:
        assert session.post(f"{standin.url}/bot{TEST_BOT_TOKEN}/getMe", json={}, timeout=10).json()["ok"] is True
    finally:
        standin.stop()
    with pytest.raises(requests.ConnectionError):
        session.post(f"{standin.url}/bot{TEST_BOT_TOKEN}/getMe", json={}, timeout=10)
