"""/rent_gpu's own-job path (a job spec) through the dispatcher: a typed command, a requirements.txt sent as a
document (downloaded from the Telegram stand-in), a GPU count; bad input is answered and the step survives."""
from __future__ import annotations

from conftest import TEST_BOT_TOKEN
from rental_helpers import USER_ID, run_matcher
from telegram_harness import bot_api_double
from test_rental_bot import command, new_chat, press, run, sent_document, typed
import test_rental_bot

bot, cpu_agent = test_rental_bot.bot, test_rental_bot.cpu_agent  # that module's fixtures


def test_own_job_flow_submits_a_spec_with_command_packages_and_gpus(bot, cpu_agent, monkeypatch):
    from depu.config import get_settings
    from depu.jobs import service
    from depu.telegram.client import bot_api

    telegram = bot_api_double(TEST_BOT_TOKEN)
    try:
        monkeypatch.setenv("TELEGRAM_API_BASE", telegram.base_url)
        get_settings.cache_clear()
        bot_api.cache_clear()
        telegram.add_file("req-bad", "documents/requirements.txt", b"numpy\nx @ https://example.org/x.whl\n")
        telegram.add_file("req-ok", "documents/requirements-2.txt", b"NumPy>=1.2  # maths\ntorch\n")
        chat = new_chat()
        bot.rent_gpu(command("rent_gpu"), chat)
        run(press(chat.button("CPU")), chat)
        run(press(chat.button("My own job")), chat)
        assert run(typed("   "), chat) == "user_error"
        run(typed("python -c 'print(1)'"), chat)
        assert run(sent_document("requirements.txt", 40, file_id="req-bad"), chat) == "user_error"
        assert "line 2" in chat.text
        assert run(sent_document("requirements.txt", 30, file_id="req-ok"), chat) == "document", chat.text
        assert "2 package(s)" in chat.text
        telegram.add_file("data-1", "documents/data.csv", b"a,b\n1,2\n")
        # over 20 MB it comes by upload link (tests/test_rental_uploads.py); over the 2 GiB cap not at all
        assert run(sent_document("data.csv", 3 * 1024 ** 3, file_id="data-1"), chat) == "user_error"
        assert "at most 2 GiB" in chat.text
        assert run(sent_document("data.csv", 8, file_id="data-1"), chat) == "document"
        assert "1 so far" in chat.text
        run(press(chat.button("Done")), chat)
        run(press(chat.button("2")), chat)
        run(press(chat.button("5 min")), chat)
        assert "2 GPU(s)" in chat.text
        run(press(chat.button("Submit")), chat)
    finally:
        telegram.stop()
        bot_api.cache_clear()
    [job] = service.user_jobs(USER_ID)
    assert job.workload == "job" and job.gpu_count == 2
    assert job.params["command"] == "python -c 'print(1)'" and job.params["requirements"] == ["numpy>=1.2", "torch"]
    from depu.jobs import storage

    [key] = job.input_keys
    assert key.endswith("/inputs/data.csv") and storage.get(key) == b"a,b\n1,2\n"
    run_matcher()  # the only agent has one slot: a 2-GPU job is not placed on it
    job.refresh()
    assert job.status == "queued" and job.agent_id is None
