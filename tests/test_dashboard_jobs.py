"""The Mini App's jobs routes through the real dashboard Lambda against moto: a job run by the real agent API
(register, match, claim, log chunks, an artifact through its presigned PUT, complete), read back through
/dashboard/jobs, /dashboard/jobs/<id>/logs from a cursor and /dashboard/jobs/<id>/outputs.

Attacks performed here (docs/security.md, "Mini App jobs"): another user's job id for logs and outputs
(404, the same body as a job that does not exist), a forged session, forged and expired initData, and
garbage, huge and non-ASCII cursors, limits and job ids (a clear 400, nothing read)."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from depu.dashboard import initdata
from depu.dashboard import jobs as dashboard_jobs
from depu.jobs import logs, storage
from rental_helpers import USER_ID, AgentApi, enrol_provider, ensure_user, register_agent, run_matcher, submit_job
from tests.conftest import TEST_BOT_TOKEN
from tests.dashboard_support import invoke, seed_profile, telegram_user

OTHER_ID = 8002


def sign_in(user_id: int) -> str:
    seed_profile(user_id)
    answer = invoke("POST", "/dashboard/session",
                    json_body={"init_data": initdata.build(telegram_user(user_id), TEST_BOT_TOKEN)})
    assert answer["statusCode"] == 201, answer["body"]
    return answer["json"]["token"]


class RunningJob:
    """A job of USER_ID that a registered agent has claimed, driven through the real agent API."""

    def __init__(self) -> None:
        self.api = AgentApi()
        ensure_user(USER_ID, credits=5000)
        self.agent = register_agent(self.api, enrol_provider())
        self.job = submit_job()
        assert run_matcher()["batchItemFailures"] == []
        status, body = self.api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, self.token)
        assert status == 200 and body["job"]["job_id"] == self.job.job_id, body
        self.seq = 0

    @property
    def token(self) -> str:
        return self.agent["agent_token"]

    @property
    def job_id(self) -> str:
        return self.job.job_id

    def ship(self, *lines: str) -> None:
        status, body = self.api.call(f"/agent/jobs/{self.job_id}/logs", {"seq": self.seq, "lines": list(lines)}, self.token)
        assert (status, body) == (200, {"accepted": True})
        self.seq += 1

    def progress(self, fraction: float, message: str) -> None:
        assert self.api.call(f"/agent/jobs/{self.job_id}/progress", {"progress": fraction, "message": message},
                             self.token)[0] == 200

    def upload(self, name: str, data: bytes) -> str:
        status, link = self.api.call(f"/agent/jobs/{self.job_id}/artifacts", {"name": name, "size": len(data)}, self.token)
        assert status == 200, link
        put = requests.put(link["upload_url"], data=data, headers=storage.WRITE_ONCE_HEADERS, timeout=10)
        assert put.status_code == 200, put.text
        return link["key"]

    def complete(self, keys: list[str]) -> None:
        status, body = self.api.call(f"/agent/jobs/{self.job_id}/complete", {"result": {"ok": True}, "artifacts": keys},
                                     self.token)
        assert status == 200 and body["state"] == "succeeded", body


@pytest.fixture
def running(aws):
    return RunningJob()


def page(token: str, job_id: str, cursor: str | None = None) -> dict:
    path = f"/dashboard/jobs/{job_id}/logs" + (f"?cursor={cursor}" if cursor is not None else "")
    answer = invoke("GET", path, token=token)
    assert answer["statusCode"] == 200, answer["body"]
    assert answer["headers"]["Cache-Control"] == "no-store"
    return answer["json"]


def read_all(token: str, job_id: str, cursor: str = "0:0") -> tuple[list[str], dict]:
    """Every page until ``more`` is false (bounded), as the Mini App does after a poll answers more."""
    lines: list[str] = []
    for _ in range(100):
        answer = page(token, job_id, cursor)
        lines += answer["lines"]
        cursor = answer["cursor"]
        if not answer["more"]:
            return lines, answer
    raise AssertionError("the log never reached its end")


# ------------------------------------------------------------------------------------------- the list
def test_the_jobs_list_has_the_users_jobs_with_state_and_phase(running):
    alice = sign_in(USER_ID)
    running.progress(0.25, "epoch 1/4")
    ensure_user(OTHER_ID)
    submit_job(OTHER_ID)  # another user's job never shows in Alice's list

    listed = invoke("GET", "/dashboard/jobs", token=alice)
    assert listed["statusCode"] == 200 and listed["headers"]["Cache-Control"] == "no-store"
    (item,) = listed["json"]["jobs"]
    assert item["job_id"] == running.job_id and item["status"] == "running" and item["phase"] == "running"
    assert item["finished"] is False and item["progress"] == 0.25 and item["message"] == "epoch 1/4"
    assert item["gpu_class"] == "h100-80gb" and item["workload"] == "benchmark"

    bob = sign_in(OTHER_ID)
    (bobs,) = invoke("GET", "/dashboard/jobs", token=bob)["json"]["jobs"]
    assert bobs["status"] == "queued" and bobs["phase"] is None and running.job_id not in str(bobs)


def test_a_job_spec_in_setup_shows_the_setup_phase(aws):
    """A job spec (workload "job") runs setup (packages, inputs; not billed) before its code starts."""
    from depu.jobs.models import Job

    ensure_user(USER_ID)
    job = submit_job(workload="job", params={"command": "python -c 'print(1)'"})
    Job(job.job_id).update(actions=[Job.status.set("running"), Job.started_at.remove()])
    assert dashboard_jobs.phase(Job.get(job.job_id)) == "setup"
    Job(job.job_id).update(actions=[Job.started_at.set(1)])
    assert dashboard_jobs.phase(Job.get(job.job_id)) == "running"


# ------------------------------------------------------------------------------------------- live logs
def test_log_pages_follow_the_agents_chunks_from_a_cursor_and_finish_with_the_job(running):
    alice = sign_in(USER_ID)
    first = page(alice, running.job_id)  # nothing shipped yet
    assert first["lines"] == [] and first["cursor"] == "0:0" and first["more"] is False and first["finished"] is False
    assert first["job"]["status"] == "running"

    running.ship("step 1", "step 2")
    second = page(alice, running.job_id, first["cursor"])
    assert second["lines"] == ["step 1", "step 2"] and second["cursor"] == "1:0" and not second["finished"]

    again = page(alice, running.job_id, second["cursor"])  # a poll with nothing new: no lines, same cursor
    assert again["lines"] == [] and again["cursor"] == "1:0"

    running.ship("step 3")
    running.ship("step 4", "step 5")
    third = page(alice, running.job_id, second["cursor"])
    assert third["lines"] == ["step 3", "step 4", "step 5"] and third["cursor"] == "3:0"

    running.complete([])
    last = page(alice, running.job_id, third["cursor"])
    assert last["lines"] == [] and last["finished"] is True and last["job"]["status"] == "succeeded"
    assert last["job"]["finished"] is True and last["job"]["phase"] is None
    # from the start again, the whole log in order, and finished once it is all given
    everything, end = read_all(alice, running.job_id)
    assert everything == [f"step {n}" for n in range(1, 6)] and end["finished"] is True


def test_a_big_chunk_is_split_into_bounded_pages_that_reassemble_exactly(running):
    alice = sign_in(USER_ID)
    wide = [f"{n:04d} " + "x" * 1995 for n in range(120)]  # 240,000 characters: near the agent API's body limit
    running.ship(*wide)
    running.ship("after the big chunk")
    lines, cursor, pages = [], "0:0", []
    while True:
        answer = page(alice, running.job_id, cursor)
        assert len(answer["lines"]) <= logs.MAX_LINES_PER_PAGE
        assert sum(len(line) for line in answer["lines"]) <= logs.MAX_CHARS_PER_PAGE
        pages.append(answer["cursor"])
        lines += answer["lines"]
        cursor = answer["cursor"]
        if not answer["more"]:
            break
        assert len(pages) < 20
    assert lines == wide + ["after the big chunk"]
    assert pages == ["0:100", "2:0"]  # cut inside the chunk at 200,000 characters, then on past the next one


def test_a_poll_with_nothing_new_reads_no_log_objects(running):
    """Cheap polling: when the job has stored nothing past the cursor, the answer comes from the job item
    alone (no ListObjectsV2, no GetObject), which is what a Mini App polling every 2 s costs."""
    alice = sign_in(USER_ID)
    running.ship("only line")
    cursor = page(alice, running.job_id)["cursor"]
    calls: list[str] = []
    s3 = storage._s3()
    s3.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    try:
        for _ in range(3):
            assert page(alice, running.job_id, cursor)["lines"] == []
        assert calls == []
        running.ship("one more")
        assert page(alice, running.job_id, cursor)["lines"] == ["one more"]
        assert calls.count("ListObjectsV2") == 1 and calls.count("GetObject") == 1
    finally:
        s3.meta.events.unregister("before-call.s3")


def test_a_log_line_is_returned_as_text_not_markup(running):
    alice = sign_in(USER_ID)
    hostile = '<img src=x onerror="alert(document.cookie)"></pre><script>alert(1)</script>'
    running.ship(hostile)
    answer = invoke("GET", f"/dashboard/jobs/{running.job_id}/logs", token=alice)
    assert answer["json"]["lines"] == [hostile]  # exactly as shipped: the page must put it in as text
    assert answer["headers"]["Content-Type"].startswith("application/json")
    assert answer["headers"]["X-Content-Type-Options"] == "nosniff"


# ------------------------------------------------------------------------------------------- outputs
def test_outputs_are_listed_with_short_links_once_the_job_ends(running):
    alice = sign_in(USER_ID)
    before = invoke("GET", f"/dashboard/jobs/{running.job_id}/outputs", token=alice)
    assert before["statusCode"] == 200
    assert before["json"] == {"job_id": running.job_id, "finished": False, "outputs": [], "links_expire_at": None}

    weights = running.upload("weights.pt", b"W" * 1234)
    metrics = running.upload("metrics.json", b'{"loss": 0.1}')
    running.complete([weights, metrics])
    after = invoke("GET", f"/dashboard/jobs/{running.job_id}/outputs", token=alice)["json"]
    assert after["finished"] is True and after["links_expire_at"] is not None
    by_name = {item["name"]: item for item in after["outputs"]}
    assert set(by_name) == {"weights.pt", "metrics.json"}
    assert by_name["weights.pt"]["size"] == 1234 and by_name["weights.pt"]["state"] == "ok"
    for name, body in (("weights.pt", b"W" * 1234), ("metrics.json", b'{"loss": 0.1}')):
        url = by_name[name]["url"]
        assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == [str(dashboard_jobs.OUTPUT_LINK_SECONDS)]
        fetched = requests.get(url, timeout=10)
        assert fetched.status_code == 200 and fetched.content == body
        assert name in fetched.headers["Content-Disposition"]


def test_a_link_for_an_output_changed_after_the_job_ended_is_withheld(running):
    alice = sign_in(USER_ID)
    key = running.upload("model.bin", b"original")
    running.complete([key])
    storage.put(key, b"swapped by the provider afterwards")
    (item,) = invoke("GET", f"/dashboard/jobs/{running.job_id}/outputs", token=alice)["json"]["outputs"]
    assert item == {"name": "model.bin", "state": "withheld", "size": None, "url": None}


# ------------------------------------------------------------------------------------------- attacks
def test_another_users_job_answers_exactly_like_one_that_does_not_exist(running):
    running.ship("alice's secret line")
    key = running.upload("secret.bin", b"alice only")
    running.complete([key])
    bob = sign_in(OTHER_ID)
    for route in ("logs", "outputs", "logs?cursor=0:0"):
        theirs = invoke("GET", f"/dashboard/jobs/{running.job_id}/{route}", token=bob)
        missing = invoke("GET", f"/dashboard/jobs/jnotthere000/{route}", token=bob)
        assert theirs["statusCode"] == missing["statusCode"] == 404
        assert theirs["json"] == missing["json"] == {"error": "no such job of yours"}
        assert "secret" not in theirs["body"] and running.job_id not in theirs["body"]
    assert invoke("GET", "/dashboard/jobs", token=bob)["json"]["jobs"] == []
    # a user id in the query changes nothing: the session decides whose jobs these are
    assert invoke("GET", f"/dashboard/jobs?user_id={USER_ID}", token=bob)["json"]["jobs"] == []


@pytest.mark.parametrize("path", ["/dashboard/jobs", "/dashboard/jobs/j1/logs", "/dashboard/jobs/j1/outputs"])
@pytest.mark.parametrize("token", [None, "forged-session-token", "x" * 300])
def test_the_jobs_routes_need_a_live_session(aws, path, token):
    answer = invoke("GET", path, token=token)
    assert answer["statusCode"] == 401 and "jobs" not in answer["json"] and "lines" not in answer["json"]


def test_forged_and_expired_init_data_open_no_session_for_the_jobs(running):
    running.ship("private")
    tampered = initdata.build(telegram_user(OTHER_ID), TEST_BOT_TOKEN).replace(f"%22id%22%3A{OTHER_ID}", f"%22id%22%3A{USER_ID}")
    assert str(USER_ID) in tampered
    for init_data in (tampered, initdata.build(telegram_user(USER_ID), "42:another-bots-token"),
                      initdata.build(telegram_user(USER_ID), TEST_BOT_TOKEN, auth_date=1_000_000_000)):
        answer = invoke("POST", "/dashboard/session", json_body={"init_data": init_data})
        assert answer["statusCode"] == 401 and "token" not in answer["json"], answer["body"]


@pytest.mark.parametrize(("query", "says"), [
    ("cursor=abc", "cursor is '<chunk>:<line>'"),
    ("cursor=1:2:3", "cursor is '<chunk>:<line>'"),
    ("cursor=-1:0", "cursor is '<chunk>:<line>'"),
    ("cursor=%EF%BC%91:0", "cursor is '<chunk>:<line>'"),  # a full-width digit: isdigit() says yes, ASCII says no
    ("cursor=99999999:0", "cursor is past any log"),
    ("cursor=0:99999999", "cursor is past any log"),
    ("cursor=" + "9" * 5000, "cursor: String should have at most 24 characters"),
])
def test_a_garbage_or_huge_cursor_gets_a_clear_400(running, query, says):
    alice = sign_in(USER_ID)
    running.ship("kept")
    answer = invoke("GET", f"/dashboard/jobs/{running.job_id}/logs?{query}", token=alice)
    assert answer["statusCode"] == 400 and says in answer["json"]["error"], answer["body"]
    assert "init_data" not in answer["json"]["error"]  # the sign-in hint is for sign-in bodies only
    assert page(alice, running.job_id)["lines"] == ["kept"]  # nothing lost


@pytest.mark.parametrize("path", [
    "/dashboard/jobs?limit=0", "/dashboard/jobs?limit=51", "/dashboard/jobs?limit=ten", "/dashboard/jobs?limit=1e9",
    "/dashboard/jobs/" + "j" * 41 + "/logs", "/dashboard/jobs/j%20x/outputs", "/dashboard/jobs/%2E%2E/logs",
])
def test_garbage_limits_and_job_ids_get_a_clear_400(aws, path):
    alice = sign_in(USER_ID)
    answer = invoke("GET", path, token=alice)
    assert answer["statusCode"] == 400, answer["body"]
    assert answer["json"]["error"].split(":")[0] in ("query.limit", "path.job_id"), answer["json"]
