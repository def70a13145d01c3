"""Attacks on group chats (issue 12, "private things stay in private chats"): each test performs one and
shows that it fails.

Anyone in a group reads what the bot posts there. A fork's RPC URL is the fork's bearer credential, a
/webapp link signs in as the user, /jobs <id> shows 24-hour artifact links and log lines, /provider shows an
install token. Asked for in a group, each goes to the asker's private chat and the group reads only "sent
to you privately"; a user who never opened a private chat gets a deep link (t.me/<bot>?start=...), which
/start answers in the private chat. The handlers run through the real dispatcher on moto; the last test
drives the real Bot API client against a Telegram double that answers 403 like Telegram does.
"""
from __future__ import annotations

import re
import time
import uuid

import boto3
import pytest

from depu.bot.dispatch import TelegramChat, dispatch
from depu.bot.private import PrivateChatClosed
from depu.bot.registry import Incoming
from depu.config import get_settings
from depu.forks import service as fork_service
from depu.jobs.models import Job
from forks_support import approved_host_item
from recording_chat import RecordingChat, to_plain

GROUP = -100777
USER = 7401
RPC_URL = re.compile(r"/rpc/dpf_")
SECRET_MARKERS = ("/rpc/dpf_", "code=", "X-Amz-", "DEPU_PROVIDER_TOKEN", "depp_", "secret log line")


def in_group(text: str = "", command: str | None = None, args: str = "", callback: str | None = None) -> Incoming:
    return Incoming(update_id=1, user_id=USER, chat_id=GROUP, chat_type="supergroup", text=text, command=command, args=args,
                    callback_id="cb" if callback else None, callback_data=callback, message_id=9, first_name="Eve")


def in_private(command: str, args: str = "") -> Incoming:
    return Incoming(update_id=2, user_id=USER, chat_id=USER, chat_type="private", text=f"/{command} {args}".strip(),
                    command=command, args=args, message_id=10, first_name="Eve")


def run(incoming: Incoming, private_open: bool = True) -> RecordingChat:
    chat = RecordingChat(private_open=private_open)
    assert dispatch(incoming, chat, correlation_id="test") not in ("failed", "user_error"), chat.timeline
    return chat


def group_text(chat: RecordingChat) -> str:
    return "\n".join(text + " " + " ".join(str(b) for row in buttons for b in row) for text, buttons in chat.timeline)


def private_text(chat: RecordingChat) -> str:
    return "\n".join(text + " " + " ".join(str(b) for row in buttons for b in row) for text, buttons in chat.private)


def assert_nothing_secret_in_the_group(chat: RecordingChat) -> None:
    posted = group_text(chat) + " ".join(text or "" for text, _ in chat.answers)
    for marker in SECRET_MARKERS:
        assert marker not in posted, (marker, posted)


@pytest.fixture
def forks(aws, monkeypatch):
    monkeypatch.setattr(fork_service, "mainnet_head", lambda: None)
    approved_host_item("ag_group_host")  # a fork needs an approved host to be assigned to (nothing claims here)
    return aws


def test_creating_a_shadow_fork_in_a_group_posts_no_rpc_url_there_and_sends_it_privately(forks):
    chat = run(in_group("/shadow_fork latest", command="shadow_fork", args="latest"))
    assert_nothing_secret_in_the_group(chat)
    assert chat.reply_texts == ["🔒 Sent to you privately (in our private chat): it is for your eyes only."]
    [(created, _buttons)] = chat.private
    assert RPC_URL.search(created) and "Creating shadow fork" in created
    fork_id = re.search(r"Creating shadow fork (f[0-9a-f]+) ", to_plain(created)).group(1)
    # its later notices (ready, synced, expiring) go to the private chat too, not to the group
    assert int(fork_service.owned(USER, fork_id).chat_id) == USER

    # the fork's info, and a new RPC URL, asked for from the group: private as well
    for action in (f"sf:1:i:{fork_id}", f"sf:1:url:{fork_id}"):
        pressed = run(in_group(callback=action))
        assert_nothing_secret_in_the_group(pressed)
        assert pressed.reply_texts == ["🔒 Sent to you privately (in our private chat): it is for your eyes only."]
        assert f"{fork_id}" in private_text(pressed)
    assert RPC_URL.search(private_text(pressed))  # the rotated URL reached the user, privately


def test_a_fork_asked_for_by_a_user_without_a_private_chat_gets_a_deep_link_and_no_url(forks):
    chat = run(in_group("/shadow_fork latest", command="shadow_fork", args="latest"), private_open=False)
    assert_nothing_secret_in_the_group(chat)
    assert chat.private == []
    [link] = [button.url for button in chat.keyboard if button.url]
    assert link == f"https://t.me/{get_settings().bot_username}?start=fork"
    assert "New RPC URL" in chat.text  # how to get the URL there: the one made now reached no one
    # following the link runs /start fork in the private chat: the fork menu, with the new fork on it
    opened = run(in_private("start", "fork"))
    assert "Shadow forks" in opened.text and any(data.startswith("sf:1:i:") for data in opened.button_data)


def finished_job(user_id: int = USER) -> Job:
    """A finished job with log lines and an artifact, as the agent API leaves it."""
    job_id = "j" + uuid.uuid4().hex[:12]
    key = f"jobs/{job_id}/artifacts/model.pt"
    boto3.client("s3").put_object(Bucket=get_settings().artifacts_bucket, Key=key, Body=b"weights")
    job = Job(job_id, user_id=user_id, chat_id=user_id, created_at="2026-01-01T00:00:00Z", status="succeeded",
              lease_expires_at=0, gpu_class="cpu", workload="script", time_limit_s=300, price_per_hour=100, max_cost=9,
              hold_id="h", logs_tail=["epoch 1 loss 0.3", "secret log line: api key abc"], artifacts=[key],
              result={"loss": 0.3}, charged=3, finished_at=int(time.time()))
    job.save()
    return job


def test_jobs_with_an_id_in_a_group_posts_no_artifact_links_or_logs(aws):
    from depu.jobs import storage

    job = finished_job()
    assert storage.artifact_prefix(job.job_id) in job.artifacts[0]  # the summary would link it
    chat = run(in_group(f"/jobs {job.job_id}", command="jobs", args=job.job_id))
    assert_nothing_secret_in_the_group(chat)
    assert chat.reply_texts == ["🔒 Sent to you privately (in our private chat): it is for your eyes only."]
    private = private_text(chat)
    assert "secret log line" in private and "X-Amz-" in private and "model.pt" in private

    # without a private chat: a deep link that asks for this very job again, nothing else
    closed = run(in_group(f"/jobs {job.job_id}", command="jobs", args=job.job_id), private_open=False)
    assert_nothing_secret_in_the_group(closed)
    [link] = [button.url for button in closed.keyboard if button.url]
    assert link.endswith(f"?start=jobs_{job.job_id}")
    resumed = run(in_private("start", f"jobs_{job.job_id}"))
    assert "secret log line" in resumed.text and "model.pt" in resumed.text


def test_webapp_in_a_group_sends_the_login_link_privately_or_a_deep_link_and_no_live_code(aws):
    chat = run(in_group("/webapp", command="webapp"))
    assert_nothing_secret_in_the_group(chat)
    assert "code=" in private_text(chat)

    tokens = boto3.resource("dynamodb").Table(get_settings().tokens_table)
    before = len(tokens.scan()["Items"])
    closed = run(in_group("/webapp", command="webapp"), private_open=False)
    assert_nothing_secret_in_the_group(closed)
    assert [button.url for button in closed.keyboard] == [f"https://t.me/{get_settings().bot_username}?start=webapp"]
    assert len(tokens.scan()["Items"]) == before  # the code made for no one was revoked at once
    assert "code=" in " ".join(str(b) for b in run(in_private("start", "webapp")).keyboard)


def test_provider_in_a_group_sends_the_install_token_privately(aws):
    chat = run(in_group("/provider", command="provider"))
    assert_nothing_secret_in_the_group(chat)
    assert "DEPU_PROVIDER_TOKEN=" in private_text(chat)
    closed = run(in_group("/provider", command="provider"), private_open=False)
    assert_nothing_secret_in_the_group(closed)
    assert closed.keyboard[0].url.endswith("?start=provider")


def test_the_bot_api_403_for_a_user_who_never_started_the_bot_means_no_private_chat(aws):
    """The real client against a Telegram double: sendMessage to the user answers 403 like Telegram."""
    from depu.telegram.client import BotApi
    from telegram_harness import bot_api_double
    from tests.conftest import TEST_BOT_TOKEN

    fake = bot_api_double(TEST_BOT_TOKEN)
    try:
        api = BotApi(TEST_BOT_TOKEN, base_url=fake.base_url)
        chat = TelegramChat(api, in_group("/jobs", command="jobs"))
        fake.fail_next("sendMessage", 403, {"ok": False, "error_code": 403,
                                            "description": "Forbidden: bot can't initiate conversation with a user"})
        with pytest.raises(PrivateChatClosed):
            chat.reply_private("secret")
        assert chat.reply_private("secret") and fake.calls_of("sendMessage")[-1].params["chat_id"] == USER
    finally:
        fake.stop()
