"""Faults: a Lambda raising in the middle of an SQS batch. The local runtime's real SQS pollers (the same
receive / invoke / delete-only-successes loop as Lambda's event source mapping) run the real notifier and
matcher against moto's queues with their template redrive policies; moto moves a message to the dead-letter
queue once its receive count passes maxReceiveCount.

Only two queue attributes are shortened for speed, in moto, for these tests: the visibility timeout (1 s, so
a failed message comes back at once) and, on JobQueue, maxReceiveCount (3 instead of 50: routine no-agent-yet
retries are what the 50 is for). Everything else is the template's.
"""
from __future__ import annotations

import json
import time

import boto3
import pytest

from depu.config import get_settings
from depu.notify import Notice
from depu.telegram.client import bot_api
from forks_support import wait_for
from local.moto_server import free_port
from rental_helpers import USER_ID, AgentApi, enrol_provider, ensure_user, notices, register_agent, run_reaper, submit_job

pytestmark = pytest.mark.e2e


def queue_url(logical_id: str) -> str:
    from local.template import LocalTemplate

    return LocalTemplate().queue_url(logical_id, boto3.client("sqs").meta.endpoint_url)


def messages_in(url: str) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


def drain(url: str) -> list[str]:
    sqs = boto3.client("sqs")
    bodies = []
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30).get("Messages", [])
        if not batch:
            return bodies
        bodies += [message["Body"] for message in batch]


def shorten(logical_id: str, max_receive_count: int | None = None) -> None:
    sqs = boto3.client("sqs")
    url = queue_url(logical_id)
    attributes = {"VisibilityTimeout": "1"}
    if max_receive_count is not None:
        policy = json.loads(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"])
        policy["maxReceiveCount"] = max_receive_count
        attributes["RedrivePolicy"] = json.dumps(policy)
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)


def start_runtime(aws, functions: tuple[str, ...], extra_env: dict[str, str] | None = None):
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.template import LocalTemplate

    runtime = LocalRuntime(LocalTemplate(), aws.endpoint,
                           RuntimeOptions(port=free_port(), poll_wait_seconds=1, extra_environment=extra_env or {}))
    runtime.functions = {name: fn for name, fn in runtime.functions.items() if name in functions}
    return runtime.start()


def test_a_chats_notices_reach_telegram_in_order_across_batches_when_one_fails(aws, telegram):
    """The notify queue is FIFO, grouped by chat: a notice queued while the chat's earlier one is back in the
    queue after a failure waits for it, instead of overtaking it in a later batch (a standard queue would
    hand it out at once). Another chat is not held up."""
    from depu.notify import enqueue

    sqs = boto3.client("sqs")
    sqs.set_queue_attributes(QueueUrl=get_settings().notify_queue_url, Attributes={"VisibilityTimeout": "3"})
    telegram.fail_next("sendMessage", 500, {"ok": False, "error_code": 500, "description": "Internal"}, times=2)
    enqueue(Notice(USER_ID, "job running"))
    bot_api.cache_clear()
    runtime = start_runtime(aws, ("NotifierFunction",), {"TELEGRAM_API_BASE": telegram.base_url})
    try:
        wait_for(lambda: len(telegram.calls_of("sendMessage")) >= 2, 30, "the first notice to fail (two tries)")
        enqueue(Notice(USER_ID, "job finished"))  # while "job running" waits out its visibility timeout
        enqueue(Notice(USER_ID + 1, "other chat"))
        texts = lambda chat: [c.params["text"] for c in telegram.calls_of("sendMessage") if c.params["chat_id"] == chat]  # noqa: E731
        wait_for(lambda: "job finished" in texts(USER_ID) and texts(USER_ID + 1), 60, "both chats' notices")
        wait_for(lambda: messages_in(get_settings().notify_queue_url) == 0, 30, "the notify queue to empty")
    finally:
        runtime.stop()
        bot_api.cache_clear()
    mine = texts(USER_ID)
    assert mine == ["job running"] * 3 + ["job finished"]  # two failed tries, the retry, then the later notice
    assert texts(USER_ID + 1) == ["other chat"]


def test_a_poison_notice_fails_alone_and_ends_in_the_dead_letter_queue(aws, telegram):
    from depu.notify import enqueue

    shorten("NotifyQueue")
    enqueue(Notice(USER_ID, "first"))
    boto3.client("sqs").send_message(QueueUrl=get_settings().notify_queue_url, MessageBody='{"chat_id": "not json',
                                     MessageGroupId="poison", MessageDeduplicationId="poison-1")  # a group of its own
    enqueue(Notice(USER_ID + 1, "third"))
    bot_api.cache_clear()
    runtime = start_runtime(aws, ("NotifierFunction",), {"TELEGRAM_API_BASE": telegram.base_url})
    try:
        wait_for(lambda: len(telegram.calls_of("sendMessage")) == 2, 30, "the two good notices")
        dead_letters = queue_url("NotifyDeadLetterQueue")
        wait_for(lambda: messages_in(dead_letters) == 1, 60, "the poison notice in the DLQ")
        wait_for(lambda: messages_in(get_settings().notify_queue_url) == 0, 30, "the notify queue to empty")
    finally:
        runtime.stop()
        bot_api.cache_clear()
    assert sorted(call.params["text"] for call in telegram.calls_of("sendMessage")) == ["first", "third"]
    assert drain(dead_letters) == ['{"chat_id": "not json']


def test_a_matcher_crash_on_one_job_spares_the_batch_and_the_user_is_told_when_it_dead_letters(aws, monkeypatch):
    from depu import credits
    from depu.agents import matcher
    from depu.jobs.leases import MAX_QUEUE_SECONDS
    from depu.jobs.models import Job

    shorten("JobQueue", max_receive_count=3)
    api = AgentApi()
    ensure_user(USER_ID, credits=5000)
    register_agent(api, enrol_provider())
    poison = submit_job()
    healthy = submit_job()
    real_match = matcher.match

    def flaky_match(job):
        if job.job_id == poison.job_id:
            raise RuntimeError("simulated bug while matching this job")
        return real_match(job)

    monkeypatch.setattr(matcher, "match", flaky_match)
    runtime = start_runtime(aws, ("MatcherFunction",))
    try:
        wait_for(lambda: Job.get(healthy.job_id, consistent_read=True).status == "assigned", 30, "the healthy job")
        dead_letters = queue_url("JobDeadLetterQueue")
        wait_for(lambda: messages_in(dead_letters) == 1, 60, "the poison job's message in the DLQ")
    finally:
        runtime.stop()
    assert [json.loads(body)["job_id"] for body in drain(dead_letters)] == [poison.job_id]
    stuck = Job.get(poison.job_id, consistent_read=True)
    assert stuck.status == "queued"  # nothing was done twice or half: it simply was never matched
    held_before = credits.balance(USER_ID).held
    assert held_before == int(poison.max_cost) + int(healthy.max_cost)
    notices()  # drop progress notices sent so far

    swept = run_reaper(int(time.time()) + MAX_QUEUE_SECONDS + 1)
    assert poison.job_id in swept["expired"]
    expired = Job.get(poison.job_id, consistent_read=True)
    assert expired.status == "expired" and expired.settled and int(expired.charged) == 0
    # the poison job's hold came back; (half an hour later the healthy job's unclaimed offer has lapsed too)
    still_active = [job for job in Job.scan() if job.status in ("queued", "assigned", "running")]
    assert credits.balance(USER_ID).held == sum(int(job.max_cost) for job in still_active)
    balance = credits.balance(USER_ID)
    assert balance.credits + balance.held == 6000  # nothing charged for jobs that never ran
    told = [notice for notice in notices() if notice["chat_id"] == USER_ID and poison.job_id in notice["text"]]
    assert told, "the user is told the job expired"
