"""/rent_gpu, /jobs, /cancel and /provider driven with Incoming and a recording Chat against moto."""
from __future__ import annotations

import html
import os
import re

import pytest

from conftest import TEST_BOT_TOKEN
from depu.bot.registry import Document, Incoming
from depu.errors import UserError
from recording_chat import RecordingChat
from rental_helpers import CPU_BENCHMARK, USER_ID, AgentApi, ensure_user, register_agent
from telegram_harness import bot_api_double


def new_chat() -> RecordingChat:
    """Rental replies are never blank and get message ids from 500; photos and documents fail the test."""
    return RecordingChat(require_text=True, allow_photos=False, allow_documents=False, first_message_id=500)


def command(name: str, args: str = "", user_id: int = USER_ID, chat_type: str = "private") -> Incoming:
    return Incoming(update_id=1, user_id=user_id, chat_id=user_id, chat_type=chat_type, text=f"/{name} {args}".strip(),
                    command=name, args=args, message_id=5, first_name="Ada")


def press(data: str, user_id: int = USER_ID) -> Incoming:
    return Incoming(update_id=2, user_id=user_id, chat_id=user_id, chat_type="private", callback_id="cb",
                    callback_data=data, message_id=9, first_name="Ada")


def typed(text: str, user_id: int = USER_ID) -> Incoming:
    return Incoming(update_id=3, user_id=user_id, chat_id=user_id, chat_type="private", text=text, message_id=6)


def sent_document(name: str, size: int, file_id: str = "file-1", user_id: int = USER_ID) -> Incoming:
    return Incoming(update_id=4, user_id=user_id, chat_id=user_id, chat_type="private", message_id=7,
                    document=Document(file_id=file_id, file_name=name, mime_type="text/x-python", file_size=size))


def run(incoming: Incoming, chat: RecordingChat) -> str:
    """Through the dispatcher, as the webhook runs it: it decodes the button, reads the conversation and runs
    the rent flow's table entry for that step."""
    from depu.bot.dispatch import dispatch

    return dispatch(incoming, chat, correlation_id="test")


@pytest.fixture
def bot(aws):
    from depu.bot import rental

    return rental


@pytest.fixture
def cpu_agent(aws):
    from depu.agents.tokens import issue_enrolment_token

    ensure_user(7001)
    return register_agent(AgentApi(), issue_enrolment_token(7001), name="laptop", gpus=[], benchmark=CPU_BENCHMARK)


def test_rent_gpu_with_nobody_online_says_so(bot):
    chat = new_chat()
    bot.rent_gpu(command("rent_gpu"), chat)
    assert "No provider is online" in chat.text


def test_train_flow_holds_the_maximum_and_sends_one_progress_message(bot, cpu_agent):
    from depu import credits
    from depu.jobs.models import Job

    chat = new_chat()
    bot.rent_gpu(command("rent_gpu"), chat)
    assert "CPU (no GPU) · 1 online · 30 cr/h · 67% reliable" in chat.timeline[-1][1][0][0].text  # 1 pass (fixture)
    run(press(chat.button("CPU")), chat)
    run(press(chat.button("Train")), chat)
    run(press(chat.button("3 epochs")), chat)
    assert "dataset" in chat.text
    assert run(typed("ftp://example.com/data.csv"), chat) == "user_error"  # clear error, flow kept
    assert "https://" in chat.text
    assert run(typed("https://example.com/data.csv"), chat) == "text"
    run(press(chat.button("1 h")), chat)
    assert "at most 30 credits" in chat.plain and "1000 credits available" in chat.plain
    ok = chat.button("Submit")
    run(press(ok), chat)
    run(press(ok), chat)  # double tap: still one job

    jobs = list(Job.by_user.query(USER_ID))
    assert len(jobs) == 1
    job = jobs[0]
    assert (job.gpu_class, job.workload, job.time_limit_s) == ("cpu", "train", 3600)
    assert job.params == {"epochs": 3, "dataset": "https://example.com/data.csv"}
    assert credits.balance(USER_ID) == credits.Balance(970, 30, 0)
    progress = [item for item in chat.sent if job.job_id in item[1]]
    assert len(progress) == 1 and job.progress_message_id == progress[0][0]
    assert progress[0][2][0][0].data.startswith("rj:1:c:")


def test_too_expensive_choice_is_refused_and_nothing_is_held(bot, aws):
    from depu import credits
    from depu.agents.tokens import issue_enrolment_token
    from depu.jobs.models import Job

    ensure_user(7001)
    register_agent(AgentApi(), issue_enrolment_token(7001))  # an H100 at 2500 credits/h
    chat = new_chat()
    bot.rent_gpu(command("rent_gpu"), chat)
    run(press(chat.button("H100 80GB")), chat)
    run(press(chat.button("Benchmark")), chat)
    run(press(chat.button("1 h")), chat)
    run(press(chat.button("Submit")), chat)
    assert "can cost up to 2500" in chat.plain and "1000 available" in chat.plain
    assert list(Job.by_user.query(USER_ID)) == []
    assert credits.balance(USER_ID) == credits.Balance(1000, 0, 0)
    run(press(chat.button("5 min")), chat)  # a shorter limit fits
    run(press(chat.button("Submit")), chat)
    assert len(list(Job.by_user.query(USER_ID))) == 1


def test_script_flow_stores_the_file_and_the_agent_gets_a_presigned_url(bot, cpu_agent, monkeypatch):
    import requests

    from depu.config import get_settings
    from depu.telegram.client import bot_api
    from rental_helpers import run_matcher

    telegram = bot_api_double(TEST_BOT_TOKEN)
    try:
        monkeypatch.setenv("TELEGRAM_API_BASE", telegram.base_url)
        get_settings.cache_clear()
        bot_api.cache_clear()
        telegram.add_file("file-1", "documents/train.py", b"print('hello from the user')\n")
        chat = new_chat()
        bot.rent_gpu(command("rent_gpu"), chat)
        run(press(chat.button("CPU")), chat)
        run(press(chat.button("script")), chat)
        assert run(sent_document("notes.txt", 10), chat) == "user_error"
        assert run(sent_document("huge.py", 5 * 1024 * 1024), chat) == "user_error"
        assert run(sent_document("train.py", 29), chat) == "document"
        run(press(chat.button("5 min")), chat)
        run(press(chat.button("Submit")), chat)
    finally:
        telegram.stop()
        bot_api.cache_clear()
    run_matcher()
    api = AgentApi()
    status, body = api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, cpu_agent["agent_token"])
    assert status == 200 and body["job"]["workload"] == "script"
    assert requests.get(body["job"]["script_url"], timeout=10).content == b"print('hello from the user')\n"


def test_documents_outside_the_script_step_are_not_taken(bot, cpu_agent):
    ensure_user(USER_ID)
    assert run(sent_document("train.py", 10), new_chat()) == "unexpected_document"
    assert run(typed("https://example.com"), new_chat()) == "unhandled_text"


def test_jobs_lists_only_mine_and_cancel_works_only_on_mine(bot, cpu_agent):
    from rental_helpers import submit_job

    ensure_user(USER_ID)
    ensure_user(USER_ID + 1)
    mine = submit_job(USER_ID, gpu_class="cpu")
    theirs = submit_job(USER_ID + 1, gpu_class="cpu")
    chat = new_chat()
    bot.list_jobs(command("jobs"), chat)
    assert mine.job_id in chat.text and theirs.job_id not in chat.text
    with pytest.raises(UserError):
        bot.cancel_job(command("cancel", theirs.job_id), chat)
    run(press(chat.button(f"Cancel {mine.job_id}")), chat)
    assert "cancelled" in chat.text
    from depu.jobs.models import Job

    assert Job.get(mine.job_id).status == "cancelled" and Job.get(theirs.job_id).status == "queued"
    with pytest.raises(UserError, match="already cancelled"):
        bot.cancel_job(command("cancel", mine.job_id), chat)


def test_provider_gives_a_working_install_token_and_lists_machines(bot):
    chat = new_chat()
    bot.provider(command("provider", user_id=7001), chat)
    token = re.search(r"DEPU_PROVIDER_TOKEN=(\S+);", chat.text).group(1)
    shown = html.unescape(re.search(r"<pre>(.*?)</pre>", chat.text, re.S).group(1))
    verify, run = shown.index("openssl pkeyutl -verify"), shown.index("sudo --preserve-env=DEPU_PROVIDER_TOKEN bash")
    assert shown.index("/agent/install.sh ") < verify < run  # install.sh runs as root only once verified
    assert shown.count(os.environ["AGENT_SIGNING_PUBLIC_KEY"]) == 2  # pinned: for install.sh and the package
    assert "--token" not in chat.text  # never an argument visible in ps on the provider's machine
    registered = register_agent(AgentApi(), token, name="basement-rig")
    chat = new_chat()
    bot.provider(command("provider", user_id=7001), chat)
    assert "basement-rig" in chat.text and "H100" in chat.text and "verified" in chat.text and "online" in chat.text
    assert registered["agent_token"] not in chat.text
    group = new_chat()
    bot.provider(command("provider", user_id=7001, chat_type="group"), group)
    assert "private chat" in group.text and "--token" not in group.text


def test_provider_shows_each_machines_finished_jobs_and_earnings(bot, cpu_agent):
    from depu import credits
    from rental_helpers import run_matcher, submit_job

    ensure_user(USER_ID)
    job = submit_job(USER_ID, gpu_class="cpu")
    run_matcher()
    api = AgentApi()
    status, body = api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, cpu_agent["agent_token"])
    assert status == 200 and body["job"]["job_id"] == job.job_id
    assert api.call(f"/agent/jobs/{job.job_id}/complete", {"result": {"ok": 1}, "artifacts": []},
                    cpu_agent["agent_token"])[0] == 200
    earned = credits.balance(7001).earned
    chat = new_chat()
    bot.provider(command("provider", user_id=7001), chat)
    (line,) = [line for line in chat.text.splitlines() if "jobs ·" in line]
    assert re.search(r"\b1 jobs · (\d+) credits earned", line).group(1) == str(earned)  # the one machine's numbers


def test_profile_section(bot, cpu_agent):
    from depu.bot.sections import render_sections
    from rental_helpers import submit_job

    ensure_user(USER_ID)
    submit_job(USER_ID, gpu_class="cpu")
    sections = dict(render_sections(USER_ID, bot.FEATURE.sections))
    assert "1 recent jobs, 1 active" in sections["GPU rentals"]
    assert "1 machines (1 online)" in dict(render_sections(7001, bot.FEATURE.sections))["GPU rentals"]


def test_through_the_dispatcher_bad_input_is_answered_and_the_flow_survives(bot, cpu_agent, monkeypatch):
    from depu.bot import dispatch

    chat = new_chat()
    assert dispatch.dispatch(command("rent_gpu"), chat, correlation_id="t1") == "command:rent_gpu"
    dispatch.dispatch(press(chat.button("CPU")), chat, correlation_id="t2")
    dispatch.dispatch(press(chat.button("Train")), chat, correlation_id="t3")
    dispatch.dispatch(press(chat.button("1 epoch")), chat, correlation_id="t4")
    assert dispatch.dispatch(typed("http://insecure.example/data.csv"), chat, correlation_id="t5") == "user_error"
    assert "https://" in chat.text
    assert dispatch.dispatch(typed("https://example.com/d.csv"), chat, correlation_id="t6") == "text"
    assert "Time limit?" in chat.text
    # a document while no script is expected is not ours: the dispatcher answers it
    assert dispatch.dispatch(sent_document("x.py", 10), chat, correlation_id="t7") == "unexpected_document"
    assert dispatch.dispatch(press("rg:0:c:cpu"), chat, correlation_id="t8") == "callback:rg"  # stale version
    assert "expired" in (chat.answers[-1][0] or "")


def test_one_jobs_details_are_shown_only_to_its_owner(bot, cpu_agent):
    from rental_helpers import submit_job

    ensure_user(USER_ID)
    ensure_user(USER_ID + 1)
    job = submit_job(USER_ID, gpu_class="cpu")
    chat = new_chat()
    bot.list_jobs(command("jobs", job.job_id), chat)
    assert job.job_id in chat.text and "queued" in chat.text and chat.button("Cancel job")
    with pytest.raises(UserError):
        bot.list_jobs(command("jobs", job.job_id, user_id=USER_ID + 1), new_chat())
    from depu.jobs import service

    service.cancel(USER_ID, job.job_id)
    bot.list_jobs(command("jobs", job.job_id), chat)
    assert "cancelled" in chat.plain and "Charged: 0 credits" in chat.plain
