"""Abuse: a provider's agent trying to make DePU store more than its job's budgets, or to change a finished
job's files (docs/security.md, "Provider budgets").

Each test performs the attack through the real agent API handler against moto and shows that it fails;
uploads are real HTTP PUTs to moto's S3 through the presigned URLs the API hands out.

What moto does not check, and how the tests prove the point anyway: moto verifies neither presigned
signatures nor their expiry. It does honour ``If-None-Match: *``, so a PUT that sends the signed headers is
refused with 412 as S3 would refuse it. A PUT that leaves the header out would fail S3's signature check
(the URL's X-Amz-SignedHeaders lists if-none-match, which the tests assert); moto lets it through, and the
tests then show that the changed file is never offered to the user (its ETag no longer matches the one
recorded at completion).
"""
from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests

from depu.config import get_settings
from rental_helpers import USER_ID, AgentApi, enrol_provider, ensure_user, register_agent, run_matcher, submit_job


def job_keys(job_id: str) -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=get_settings().artifacts_bucket, Prefix=f"jobs/{job_id}/")
    return sorted(item["Key"] for item in listed.get("Contents", []))


def s3_body(key: str) -> bytes:
    return boto3.client("s3").get_object(Bucket=get_settings().artifacts_bucket, Key=key)["Body"].read()


@pytest.fixture
def running(aws):
    """An agent running one user's job (time limit 300 s)."""
    api = AgentApi()
    ensure_user(USER_ID, credits=5000)
    rig = register_agent(api, enrol_provider(), name="rig")
    job = submit_job(time_limit_s=300)
    run_matcher()
    assert api.call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, rig["agent_token"])[0] == 200
    token = rig["agent_token"]

    def call(route: str, body: dict) -> tuple[int, object]:
        return api.call(f"/agent/jobs/{job.job_id}/{route}", body, token)

    call.client = InProcessClient(api, token)  # type: ignore[attr-defined]
    return call, job


class InProcessClient:
    """depu_agent.api.ApiClient's post() over the real handler, counting the calls."""

    def __init__(self, api: AgentApi, token: str) -> None:
        self.api, self.token, self.calls = api, token, []

    def post(self, path, json=None, timeout=None, attempts=None):
        self.calls.append(path)
        return self.api.call(path, json or {}, self.token)


def put(upload: dict, data: bytes, *, with_headers: bool = True) -> int:
    headers = upload["upload_headers"] if with_headers else {}
    return requests.put(upload["upload_url"], data=data, headers=headers, timeout=10).status_code


# ---------------------------------------------------------------- logs
def test_a_log_seq_far_beyond_the_budget_is_refused_and_stores_nothing(running):
    from depu.jobs import work
    from depu.jobs.models import Job

    call, job = running
    budget = work.log_chunk_budget(Job.get(job.job_id))
    assert budget == 300 + work.TIME_LIMIT_GRACE_SECONDS + work.LOG_CHUNK_SLACK
    for seq in (9_999_999, 1_000_000, budget):
        status, answer = call("logs", {"seq": seq, "lines": ["flood"]})
        assert status == 413 and f"{budget} chunks" in answer["error"], (seq, answer)
    assert job_keys(job.job_id) == []
    assert call("logs", {"seq": budget - 1, "lines": ["last"]}) == (200, {"accepted": True})  # the edge is in
    assert job_keys(job.job_id) == [f"jobs/{job.job_id}/logs/{budget - 1:08d}.log"]


def test_logs_for_an_ended_job_are_refused(running):
    call, job = running
    assert call("logs", {"seq": 0, "lines": ["during"]}) == (200, {"accepted": True})
    assert call("complete", {"result": {"ok": True}})[0] == 200
    before = job_keys(job.job_id)
    for seq in (1, 2, 500):
        status, answer = call("logs", {"seq": seq, "lines": ["after the end"]})
        assert (status, answer) == (409, {"error": "conflict", "state": "succeeded"})
    assert job_keys(job.job_id) == before


def test_logs_for_a_cancelled_job_are_refused(running):
    from depu.jobs import service

    call, job = running
    service.cancel(USER_ID, job.job_id)
    assert call("logs", {"seq": 0, "lines": ["still going"]}) == (409, {"error": "conflict", "state": "cancelled"})
    assert job_keys(job.job_id) == []


def test_a_repeated_chunk_is_not_written_again(running):
    """In a versioned bucket every overwrite keeps a version: a repeat must write nothing at all."""
    call, job = running
    assert call("logs", {"seq": 0, "lines": ["original"]}) == (200, {"accepted": True})
    assert call("logs", {"seq": 0, "lines": ["x" * 2000] * 100}) == (200, {"accepted": False})
    assert s3_body(f"jobs/{job.job_id}/logs/00000000.log") == b"original"


def test_the_log_byte_budget_stops_a_job_that_sends_huge_chunks(running, monkeypatch):
    from depu.jobs import work
    from depu.jobs.models import Job

    monkeypatch.setattr(work, "MAX_LOG_BYTES_PER_JOB", 50_000)
    call, job = running
    big = ["y" * 2000] * 10  # 20 kB a chunk
    assert [call("logs", {"seq": seq, "lines": big})[0] for seq in range(2)] == [200, 200]
    status, answer = call("logs", {"seq": 2, "lines": big + big})
    assert status == 413 and "used up" in answer["error"]
    assert len(job_keys(job.job_id)) == 2
    assert int(Job.get(job.job_id).log_bytes) == 2 * len("\n".join(big))


# ---------------------------------------------------------------- artifacts
def test_an_artifact_link_requested_after_completion_is_refused(running):
    call, job = running
    assert call("complete", {"result": {}})[0] == 200
    assert call("artifacts", {"name": "late.bin", "size": 10}) == (409, {"error": "conflict", "state": "succeeded"})
    assert job_keys(job.job_id) == []


def test_a_link_obtained_before_completion_cannot_overwrite_the_completed_artifact(running):
    from depu.bot import job_text as messages
    from depu.jobs.models import Job

    call, job = running
    status, upload = call("artifacts", {"name": "weights.pt", "size": 8})
    assert status == 200 and upload["upload_headers"] == {"If-None-Match": "*"} and upload["expires_in"] == 900
    signed = parse_qs(urlsplit(upload["upload_url"]).query)
    assert signed["X-Amz-Expires"] == ["900"]
    assert "if-none-match" in signed["X-Amz-SignedHeaders"][0].split(";")  # S3 refuses a PUT without it
    spare = call("artifacts", {"name": "weights.pt", "size": 8})[1]  # a second link for the same file
    unused = call("artifacts", {"name": "never-listed.bin", "size": 4})[1]
    assert put(upload, b"GOODDATA") == 200
    assert call("complete", {"result": {}, "artifacts": [upload["key"]]})[0] == 200
    done = Job.get(upload["key"].split("/")[1])
    assert done.artifacts == [upload["key"]] and len(done.artifact_etags) == 1

    # the attack: the links kept from before completion, sent as the API says to send them
    assert put(upload, b"EVILDATA") == 412
    assert put(spare, b"EVILDATA") == 412
    assert s3_body(upload["key"]) == b"GOODDATA"
    summary = messages.summary_text(done)
    assert "weights.pt</a>" in summary and "withheld" not in summary

    # without the signed header real S3 fails the signature; moto does not check it, so the write lands here,
    # and the user is still never handed the changed file
    assert put(upload, b"EVILDATA", with_headers=False) == 200
    assert s3_body(upload["key"]) == b"EVILDATA"
    summary = messages.summary_text(Job.get(done.job_id))
    assert "weights.pt (withheld: it changed after the job ended)" in summary and "weights.pt</a>" not in summary

    # a link for a file the job did not complete with writes an orphan that is never offered (and expires)
    assert put(unused, b"JUNK") == 200
    assert "never-listed" not in messages.summary_text(Job.get(done.job_id))


def test_complete_keeps_only_artifacts_that_were_uploaded(running):
    from depu.jobs.models import Job

    call, job = running
    uploaded = call("artifacts", {"name": "a.txt", "size": 3})[1]
    missing = call("artifacts", {"name": "b.txt", "size": 3})[1]
    assert put(uploaded, b"abc") == 200
    assert call("complete", {"result": {}, "artifacts": [uploaded["key"], missing["key"], uploaded["key"]]})[0] == 200
    assert Job.get(job.job_id).artifacts == [uploaded["key"]]


def test_too_many_artifacts_are_refused(running):
    from depu.jobs import work

    call, job = running
    for index in range(work.MAX_ARTIFACTS_PER_JOB):
        assert call("artifacts", {"name": f"f{index}.bin", "size": 1})[0] == 200
    assert call("artifacts", {"name": "f0.bin", "size": 1})[0] == 200  # a retry of a known name is not a new file
    status, answer = call("artifacts", {"name": "one-too-many.bin", "size": 1})
    assert status == 413 and f"at most {work.MAX_ARTIFACTS_PER_JOB} files" in answer["error"]


def test_too_large_artifacts_are_refused(running):
    from depu.contracts.agent_api import MAX_ARTIFACT_BYTES
    from depu.jobs import work
    from depu.jobs.models import Job

    call, job = running
    status, answer = call("artifacts", {"name": "huge.bin", "size": MAX_ARTIFACT_BYTES + 1})
    assert status == 400 and answer["error"].startswith("size:") and str(MAX_ARTIFACT_BYTES) in answer["error"]
    per_file = MAX_ARTIFACT_BYTES
    fits = work.MAX_ARTIFACT_BYTES_PER_JOB // per_file
    for index in range(fits):
        assert call("artifacts", {"name": f"big{index}.bin", "size": per_file})[0] == 200
    status, answer = call("artifacts", {"name": "one-byte-more.bin", "size": 1})
    assert status == 413 and "GiB" in answer["error"]
    assert int(Job.get(job.job_id).artifact_bytes) == fits * per_file
    assert job_keys(job.job_id) == []  # links only: nothing was stored by asking


def test_the_budget_is_taken_only_while_the_job_runs(running, monkeypatch):
    """A link request racing the job's end: the budget write is conditioned on the job still running, so a
    job that ended between the read and the write gets 409, not a link."""
    from depu.agents.registry import get_agent
    from depu.jobs import lifecycle, work
    from depu.jobs.models import Job

    call, job = running
    stale = Job.get(job.job_id, consistent_read=True)
    assert call("complete", {"result": {}})[0] == 200
    monkeypatch.setattr(work, "_running", lambda agent_id, job_id, wanted: stale)  # read before the end
    with pytest.raises(lifecycle.Conflict):
        work.artifact_upload(get_agent(stale.agent_id), job.job_id, "late.bin", 10)
    assert job_keys(job.job_id) == []


# ---------------------------------------------------------------- the agent's side
def test_the_agent_uploads_write_once_and_takes_412_as_its_earlier_upload(running, tmp_path):
    """The real outbox: its PUT carries the signed If-None-Match (else moto would overwrite the first upload),
    and a 412 (its earlier attempt landed, the answer was lost) counts as uploaded, so the job completes."""
    from depu.jobs.models import Job
    from depu_agent.outbox import Outbox

    call, job = running
    earlier = call("artifacts", {"name": "w.bin", "size": 5})[1]
    assert put(earlier, b"FIRST") == 200
    produced = tmp_path / "w.bin"
    produced.write_bytes(b"AGAIN")
    outbox = Outbox(tmp_path / "outbox", call.client)
    outbox.put(job.job_id, "complete", {"result": {"ok": True}}, [{"name": "w.bin", "path": str(produced)}])
    assert outbox.flush()
    done = Job.get(job.job_id)
    assert done.status == "succeeded" and done.artifacts == [earlier["key"]]
    assert s3_body(earlier["key"]) == b"FIRST"


def test_the_agent_stops_shipping_logs_once_the_budget_answers_413(running, monkeypatch):
    from depu.jobs import work
    from depu_agent.logship import JobChannel

    monkeypatch.setattr(work, "log_chunk_budget", lambda job: 2)
    call, job = running
    channel = JobChannel(call.client, job.job_id, interval_s=0.02, batch_attempts=1, on_gone=lambda: None).start()
    for line in range(5):
        channel.add_line(f"line {line}")
        deadline = time.monotonic() + 5
        while channel.seq <= min(line, 2) and time.monotonic() < deadline:
            time.sleep(0.02)
    channel.close()
    sent = [path for path in call.client.calls if path.endswith("/logs")]
    assert len(sent) == 3 and channel.over_budget  # seq 0 and 1 stored, seq 2 answered 413, then silence
    assert len(job_keys(job.job_id)) == 2 and channel.dropped_lines == 2


def test_the_agent_takes_a_refused_log_chunk_of_a_cancelled_job_as_the_cancel(running):
    """Refusing logs for ended jobs means a cancel can reach the agent through its log channel before the
    next heartbeat: it stops the job as cancelled (not as lost)."""
    import threading

    from depu.jobs import service
    from depu_agent.logship import JobChannel

    call, job = running
    service.cancel(USER_ID, job.job_id)
    cancelled, lost = threading.Event(), threading.Event()
    channel = JobChannel(call.client, job.job_id, interval_s=0.02, batch_attempts=1, on_gone=lost.set,
                         on_cancelled=cancelled.set).start()
    channel.add_line("still running here")
    assert cancelled.wait(5) and not lost.is_set()
    channel.close()
    assert job_keys(job.job_id) == []


# ---------------------------------------------------------------- lifecycle rules
def test_the_bucket_expires_job_files(aws):
    """template.yaml's rule, as the local stack applies it to moto (which accepts it, as does cfn-lint)."""
    from depu.jobs import storage

    rules = boto3.client("s3").get_bucket_lifecycle_configuration(Bucket=get_settings().artifacts_bucket)["Rules"]
    jobs = next(rule for rule in rules if rule["ID"] == "expire-job-files")
    assert jobs["Status"] == "Enabled" and jobs["Filter"] == {"Prefix": "jobs/"}
    assert jobs["Expiration"] == {"Days": storage.JOB_FILES_DAYS}
    assert jobs["NoncurrentVersionExpiration"]["NoncurrentDays"] == 1
    assert jobs["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert any(rule["Filter"] == {"Prefix": "exports/"} for rule in rules)
