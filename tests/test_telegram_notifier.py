"""The rate limiter (directly, in fake time) and the notifier function with SQS events against moto and a
fake Bot API: partial batch failures, dedupe, per-chat and global rate limits, files from S3."""
from __future__ import annotations

import json

import boto3
import pytest

from depu.config import get_settings
from depu.notify import Notice, enqueue
from depu.telegram.client import bot_api
from depu.telegram.delivery import RateLimited, RateLimiter
from local.telegram_standin import TelegramStandIn
from telegram_harness import FakeLambdaContext, load_function
from telegram_harness import sqs_event as standard_sqs_event


def sqs_event(bodies: list[str]) -> dict:
    """The event Lambda builds from the FIFO NotifyQueue: each record carries its message group, the chat id
    as depu.notify sends it (a body without a readable chat id gets a group of its own)."""
    event = standard_sqs_event(bodies)
    for record in event["Records"]:
        try:
            group = str(json.loads(record["body"])["chat_id"])
        except (ValueError, KeyError, TypeError):
            group = record["messageId"]
        record["attributes"]["MessageGroupId"] = group
    return event


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


# ---------------------------------------------------------------- the limiter itself
def test_one_message_per_second_per_private_chat() -> None:
    time = FakeTime()
    limiter = RateLimiter(clock=time.clock, sleep=time.sleep)
    assert [round(limiter.reserve(7, max_wait=10), 6) for _ in range(3)] == [0, 1, 2]
    time.now += 10
    assert limiter.reserve(7, max_wait=0) == 0  # idle long enough: no wait


def test_groups_get_twenty_a_minute() -> None:
    time = FakeTime()
    limiter = RateLimiter(clock=time.clock, sleep=time.sleep)
    assert [round(limiter.reserve(-100, max_wait=10), 6) for _ in range(3)] == [0, 3, 6]


def test_thirty_a_second_overall() -> None:
    time = FakeTime()
    limiter = RateLimiter(clock=time.clock, sleep=time.sleep)
    waits = [limiter.reserve(chat, max_wait=10) for chat in range(1, 61)]
    assert waits[0] == 0
    assert waits[-1] == pytest.approx(59 / 30)
    assert all(later > earlier for earlier, later in zip(waits, waits[1:]))


def test_a_slot_too_far_away_is_refused_and_books_nothing() -> None:
    time = FakeTime()
    limiter = RateLimiter(clock=time.clock, sleep=time.sleep)
    limiter.reserve(7, max_wait=5)
    with pytest.raises(RateLimited) as refused:
        limiter.reserve(7, max_wait=0.5)
    assert refused.value.wait == pytest.approx(1)
    assert limiter.reserve(7, max_wait=5) == pytest.approx(1)  # the refusal did not push the slot further


def test_acquire_sleeps_and_penalize_blocks_a_chat() -> None:
    time = FakeTime()
    limiter = RateLimiter(clock=time.clock, sleep=time.sleep)
    limiter.acquire(7, max_wait=5)
    limiter.acquire(7, max_wait=5)
    assert time.sleeps == [1.0]
    limiter.penalize(8, retry_after=30)
    with pytest.raises(RateLimited):
        limiter.acquire(8, max_wait=5)
    assert limiter.acquire(9, max_wait=5) < 1  # other chats are not blocked
    limiter.penalize(None, retry_after=4)
    assert limiter.reserve(10, max_wait=5) == pytest.approx(4, abs=0.1)


def test_idle_chats_are_forgotten() -> None:
    time = FakeTime()
    limiter = RateLimiter(clock=time.clock, sleep=time.sleep, max_chats=10)
    for chat in range(50):
        limiter.reserve(chat, max_wait=100)
        time.now += 2
    assert limiter.tracked_chats <= 11


# ---------------------------------------------------------------- the notifier function
@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def notifier(aws, telegram, fake_time, monkeypatch):
    monkeypatch.setenv("TELEGRAM_API_BASE", telegram.base_url)
    get_settings.cache_clear()
    bot_api.cache_clear()
    module = load_function("notifier")
    module.limiter = RateLimiter(clock=fake_time.clock, sleep=fake_time.sleep)
    yield module
    bot_api.cache_clear()


def run(notifier, bodies: list[str], event: dict | None = None) -> list[str]:
    """Invoke with an SQS event; returns the ids of the records reported as failed."""
    event = event or sqs_event(bodies)
    response = notifier.lambda_handler(event, FakeLambdaContext())
    return [failure["itemIdentifier"] for failure in response["batchItemFailures"]]


def notice(chat_id: int, text: str, **extra) -> str:
    return Notice(chat_id=chat_id, text=text, **extra).to_json()


def sent(telegram: TelegramStandIn) -> list[tuple[int, str]]:
    return [(call.params["chat_id"], call.params["text"]) for call in telegram.calls_of("sendMessage")]


def test_notices_are_delivered_with_their_buttons(notifier, telegram) -> None:
    failures = run(notifier, [notice(1, "job <b>done</b>", buttons=[[{"text": "Logs", "data": "job:logs:1"}]]),
                              notice(2, "fork ready")])
    assert failures == []
    assert sent(telegram) == [(1, "job <b>done</b>"), (2, "fork ready")]
    assert telegram.calls[0].params["reply_markup"] == {"inline_keyboard": [[{"text": "Logs", "callback_data": "job:logs:1"}]]}


def test_enqueued_notice_round_trips_through_sqs(notifier, telegram) -> None:
    enqueue(Notice(chat_id=5, text="from the queue", dedupe_key="job-1-done"))
    received = boto3.client("sqs").receive_message(QueueUrl=get_settings().notify_queue_url, MaxNumberOfMessages=10)
    bodies = [message["Body"] for message in received["Messages"]]
    assert run(notifier, bodies) == []
    assert sent(telegram) == [(5, "from the queue")]


def test_bad_records_fail_alone(notifier, telegram) -> None:
    bodies = ["not json", json.dumps({"chat_id": "7", "text": "x"}), json.dumps({"text": "no chat"}),
              json.dumps({"chat_id": 7, "text": "ok", "surprise": 1}), notice(8, "fine")]
    event = sqs_event(bodies)
    failures = run(notifier, bodies, event)
    ids = [record["messageId"] for record in event["Records"]]
    assert failures == ids[:4]
    assert sent(telegram) == [(8, "fine")]


def test_telegram_failure_is_a_batch_item_failure_and_the_retry_delivers(notifier, telegram) -> None:
    telegram.fail_next("sendMessage", 500, {"ok": False, "error_code": 500, "description": "Internal"}, times=2)
    event = sqs_event([notice(1, "first"), notice(2, "second")])
    assert run(notifier, [], event) == [event["Records"][0]["messageId"]]
    assert sent(telegram)[-1] == (2, "second")
    retry = {"Records": [event["Records"][0]]}  # SQS redelivers the failed message
    assert run(notifier, [], retry) == []
    assert sent(telegram)[-1] == (1, "first")
    assert [text for _, text in sent(telegram)].count("first") == 3  # two failed attempts, one success


def test_a_failed_notice_holds_back_the_rest_of_its_chat_in_order(notifier, telegram) -> None:
    telegram.fail_next("sendMessage", 500, {"ok": False, "error_code": 500, "description": "Internal"}, times=2)
    event = sqs_event([notice(1, "job running"), notice(2, "other chat"), notice(1, "job finished")])
    ids = [record["messageId"] for record in event["Records"]]
    assert run(notifier, [], event) == [ids[0], ids[2]]  # "finished" must not overtake "running"
    assert sent(telegram)[-1] == (2, "other chat")
    assert run(notifier, [], {"Records": [event["Records"][0], event["Records"][2]]}) == []
    assert sent(telegram)[-2:] == [(1, "job running"), (1, "job finished")]


def test_repeats_are_dropped_by_dedupe_key(notifier, telegram) -> None:
    bodies = [notice(1, "job 9 finished", dedupe_key="job-9-finished")] * 2
    assert run(notifier, bodies) == []
    assert run(notifier, [notice(1, "job 9 finished again", dedupe_key="job-9-finished")]) == []
    assert sent(telegram) == [(1, "job 9 finished")]


def test_sqs_redelivery_without_dedupe_key_is_sent_once(notifier, telegram) -> None:
    event = sqs_event([notice(1, "hello")])
    assert run(notifier, [], event) == []
    assert run(notifier, [], event) == []  # same messageId again
    assert sent(telegram) == [(1, "hello")]


def test_per_chat_rate_limit_spaces_sends_and_hands_back_the_rest(notifier, telegram, fake_time) -> None:
    bodies = [notice(1, f"update {index}") for index in range(10)] + [notice(2, "other chat")]
    event = sqs_event(bodies)
    failures = run(notifier, bodies, event)
    ids = [record["messageId"] for record in event["Records"]]
    # one a second in chat 1 until the batch's 8 s waiting allowance is spent; the rest go back to the queue
    assert failures == ids[9:10]
    assert sent(telegram) == [(1, f"update {index}") for index in range(9)] + [(2, "other chat")]
    assert fake_time.sleeps[:8] == [1.0] * 8
    assert sum(fake_time.sleeps[8:]) < 0.1  # chat 2 only waited for the global 1/30 s spacing


def test_a_slot_further_away_than_allowed_goes_back_to_the_queue(notifier, telegram, fake_time) -> None:
    notifier.limiter.penalize(1, retry_after=60)  # Telegram told us to hold chat 1 for a minute
    event = sqs_event([notice(1, "later"), notice(2, "now")])
    assert run(notifier, [], event) == [event["Records"][0]["messageId"]]
    assert sent(telegram) == [(2, "now")] and fake_time.sleeps == []


def test_429_penalizes_the_chat(notifier, telegram, fake_time) -> None:
    telegram.fail_next("sendMessage", 429, {"ok": False, "error_code": 429, "description": "Too Many Requests",
                                            "parameters": {"retry_after": 40}})
    event = sqs_event([notice(1, "a"), notice(3, "c")])
    assert run(notifier, [], event) == [event["Records"][0]["messageId"]]
    assert [text for _, text in sent(telegram)] == ["a", "c"]
    # the next invocation respects Telegram's 40 s for chat 1 without asking Telegram again
    later = sqs_event([notice(1, "b")])
    assert run(notifier, [], later) == [later["Records"][0]["messageId"]]
    assert [text for _, text in sent(telegram)] == ["a", "c"]
    assert notifier.limiter.reserve(1, max_wait=100) == pytest.approx(40, abs=0.5)


def test_edits_and_vanished_edit_targets(notifier, telegram) -> None:
    message_id = notifier._api().send_message(1, "progress 10%")
    assert run(notifier, [notice(1, "progress 60%", edit_message_id=message_id),
                          notice(1, "progress 100%", edit_message_id=999_999)]) == []
    assert telegram.texts[(1, message_id)] == "progress 60%"
    assert sent(telegram)[-1] == (1, "progress 100%")  # the vanished message was replaced by a new one


def test_photo_and_document_come_from_the_artifacts_bucket(notifier, telegram) -> None:
    s3 = boto3.client("s3")
    bucket = get_settings().artifacts_bucket
    s3.put_object(Bucket=bucket, Key="charts/u1/gas.png", Body=b"\x89PNG fake chart")
    s3.put_object(Bucket=bucket, Key="exports/u1/x.csv", Body=b"block,value\n1,2\n")
    assert run(notifier, [notice(1, "gas chart", photo_key="charts/u1/gas.png"),
                          notice(1, "your export", document_key="exports/u1/x.csv", filename="transfers.csv"),
                          notice(1, "missing", document_key="exports/u1/nope.csv")]) != []
    photo, document = telegram.calls_of("sendPhoto"), telegram.calls_of("sendDocument")
    assert photo[0].files == {"photo": ("gas.png", b"\x89PNG fake chart")} and photo[0].params["caption"] == "gas chart"
    assert document[0].files == {"document": ("transfers.csv", b"block,value\n1,2\n")}
    assert len(document) == 1  # the missing object failed before any upload


def test_blocked_user_is_dropped_not_retried(notifier, telegram) -> None:
    telegram.fail_next("sendMessage", 403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"})
    assert run(notifier, [notice(1, "you will not see this")]) == []
    assert len(telegram.calls_of("sendMessage")) == 1
