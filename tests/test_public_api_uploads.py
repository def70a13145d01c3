"""Input files for public-API jobs (docs/public-api.md, "Input files"; docs/security.md, "Upload links"):
``POST /v1/uploads`` against the real handler and moto, every upload a real multipart POST to moto's S3 with
the local stack's check of the signed policy (local/s3_post_policy.py), and the `depu` command end to end
with a real agent running a job on a 21 MiB input it fingerprints."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re

import boto3
import pytest
import requests

from depu import credits
from depu.apikeys import keys
from depu.jobs.models import Job
from tests.public_api_support import call, user_with_key

ALICE, BOB = 5301, 5402
MIB = 1024 * 1024
SCRIPT_B64 = base64.b64encode(b"print(open('inputs/data.bin','rb').read()[:4])\n").decode()


def job_spec(*upload_ids: str, **extra) -> dict:
    return {"gpu_class": "cpu", "workload": "job", "time_limit_s": 300, "script_b64": SCRIPT_B64,
            "file_name": "read.py", "inputs": list(upload_ids), **extra}


def assert_error(response: dict, status: int, code: str, words: str = "") -> str:
    assert response["statusCode"] == status, response["body"]
    error = response["json"]["error"]
    assert error["code"] == code and words in error["message"], error
    return error["message"]


def new_upload(key: str, name: str = "data.bin", size: int = 8192) -> dict:
    made = call("POST", "/v1/uploads", key=key, json_body={"file_name": name, "size": size})
    assert made["statusCode"] == 201, made["body"]
    return made["json"]


def post(link: dict, body: bytes, name: str = "data.bin") -> requests.Response:
    """The form as a browser or curl posts it: its fields, then the file last."""
    return requests.post(link["url"], data=link["fields"], files={"file": (name, body)}, timeout=60)


def policy_of(link: dict) -> dict:
    return json.loads(base64.b64decode(link["fields"]["policy"]))


def stored(key: str) -> bytes | None:
    from depu.config import get_settings

    try:
        return boto3.client("s3").get_object(Bucket=get_settings().artifacts_bucket, Key=key)["Body"].read()
    except boto3.client("s3").exceptions.NoSuchKey:
        return None


def nothing_held_or_queued(user_id: int) -> None:
    from depu.config import get_settings

    assert list(Job.by_user.query(user_id)) == []
    assert credits.balance(user_id).held == 0
    attributes = boto3.client("sqs").get_queue_attributes(QueueUrl=get_settings().job_queue_url,
                                                          AttributeNames=["ApproximateNumberOfMessages"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"


# ------------------------------------------------------------------------------------------------ the link
def test_the_link_is_a_fixed_key_under_the_users_prefix_with_the_cap_and_a_short_expiry(aws):
    from depu.config import get_settings

    key = user_with_key(ALICE)
    link = new_upload(key, "My Data.bin", 30 * MIB)
    assert re.fullmatch(r"u[0-9a-f]{16}", link["upload_id"]) and link["name"] == "My_Data.bin"
    object_key = f"uploads/{ALICE}/{link['upload_id']}/My_Data.bin"
    assert link["fields"]["key"] == object_key
    policy = policy_of(link)
    assert {"key": object_key} in policy["conditions"]
    assert {"bucket": get_settings().artifacts_bucket} in policy["conditions"]
    assert ["content-length-range", 1, 30 * MIB] in policy["conditions"]  # the declared size, under the cap
    assert link["max_bytes"] == 30 * MIB and link["expires_in"] == 900
    body = os.urandom(4096)
    assert post(link, body).status_code == 204
    assert stored(object_key) == body
    for name in ("../../etc/passwd", "a\\b.bin", ""):  # a name is a name, never a path
        refused = call("POST", "/v1/uploads", key=key, json_body={"file_name": name, "size": 1})
        assert_error(refused, 422, "validation_failed")


def test_an_upload_over_the_cap_is_refused_by_the_policy_and_a_declared_one_at_once(aws, monkeypatch):
    from depu.config import get_settings

    monkeypatch.setenv("UPLOAD_MAX_BYTES", str(MIB))
    get_settings.cache_clear()
    key = user_with_key(ALICE)
    declared = call("POST", "/v1/uploads", key=key, json_body={"file_name": "big.bin", "size": MIB + 1})
    assert_error(declared, 400, "invalid_request", "at most 1 MiB")
    link = new_upload(key, "big.bin", 100)  # a client that declares a small size and sends more
    for more in (MIB + 1, 101):  # over the cap, and just over the declared size (what the link reserved)
        refused = post(link, b"x" * more)
        assert refused.status_code == 400 and "<Code>EntityTooLarge</Code>" in refused.text
        assert stored(link["fields"]["key"]) is None
    assert post(link, b"x" * 100).status_code == 204  # control: the declared size is taken
    at_cap = new_upload(key, "cap.bin", MIB)
    assert post(at_cap, b"x" * MIB).status_code == 204  # control: at the cap it is taken


def test_the_form_cannot_write_another_users_upload(aws):
    alice, bob = user_with_key(ALICE), user_with_key(BOB)
    victim = new_upload(alice)
    attacker = new_upload(bob)
    refused = post({**attacker, "fields": {**attacker["fields"], "key": victim["fields"]["key"]}}, b"attack")
    assert refused.status_code == 403 and "Policy Condition failed" in refused.text
    assert stored(victim["fields"]["key"]) is None


def test_a_replayed_request_is_the_same_upload_with_a_fresh_form_and_no_form_is_stored(aws):
    from depu.config import get_settings

    key = user_with_key(ALICE)
    headers = {"Idempotency-Key": "upload-1"}
    first = call("POST", "/v1/uploads", key=key, json_body={"file_name": "a.bin", "size": 10}, headers=headers)
    again = call("POST", "/v1/uploads", key=key, json_body={"file_name": "a.bin", "size": 10}, headers=headers)
    assert first["statusCode"] == again["statusCode"] == 201, again["body"]
    assert again["json"]["upload_id"] == first["json"]["upload_id"]
    assert again["json"]["fields"]["key"] == first["json"]["fields"]["key"]
    assert post(again["json"], b"replayed").status_code == 204
    idempotency = str(boto3.resource("dynamodb").Table(get_settings().idempotency_table).scan()["Items"])
    assert first["json"]["fields"]["x-amz-signature"] not in idempotency
    assert first["json"]["fields"]["policy"] not in idempotency


# ------------------------------------------------------------------------------------------------ who may
def test_a_read_only_key_or_one_without_the_jobs_scope_gets_no_link(aws):
    read_only = user_with_key(ALICE, scopes=["jobs", "read-only"])
    forks_only = user_with_key(BOB, scopes=["forks"])
    for key in (read_only, forks_only):
        assert_error(call("POST", "/v1/uploads", key=key, json_body={"file_name": "a.bin", "size": 1}),
                     403, "forbidden", "jobs")


def test_a_revoked_key_gets_no_link_and_submits_nothing(aws):
    key = user_with_key(ALICE, credits=5000)
    link = new_upload(key)
    assert post(link, b"d" * 100).status_code == 204
    keys.revoke(ALICE, keys.list_keys(ALICE)[0].key_id)
    assert_error(call("POST", "/v1/uploads", key=key, json_body={"file_name": "a.bin", "size": 1}), 401, "unauthorized")
    assert_error(call("POST", "/v1/jobs", key=key, json_body=job_spec(link["upload_id"])), 401, "unauthorized")
    nothing_held_or_queued(ALICE)


def test_another_users_upload_id_is_refused_and_nothing_is_held(aws):
    alice, bob = user_with_key(ALICE, credits=5000), user_with_key(BOB, credits=5000)
    link = new_upload(alice)
    assert post(link, b"alice's data").status_code == 204
    refused = call("POST", "/v1/jobs", key=bob, json_body=job_spec(link["upload_id"]))
    assert_error(refused, 400, "invalid_request", f"No upload {link['upload_id']} of yours")
    nothing_held_or_queued(BOB)


def test_another_keys_upload_of_the_same_user_is_refused(aws):
    laptop = user_with_key(ALICE, credits=5000)
    ci, _ = keys.create(ALICE, "ci", ["jobs"], 30)
    link = new_upload(laptop)
    assert post(link, b"data").status_code == 204
    refused = call("POST", "/v1/jobs", key=ci, json_body=job_spec(link["upload_id"]))
    assert_error(refused, 400, "invalid_request", "another of your API keys")
    nothing_held_or_queued(ALICE)


# ------------------------------------------------------------------------------------------------ at submit
def test_a_missing_upload_at_submit_is_a_400_and_nothing_is_held_or_queued(aws):
    key = user_with_key(ALICE, credits=5000)
    posted, missing = new_upload(key, "posted.bin"), new_upload(key, "missing.bin")
    assert post(posted, b"here").status_code == 204
    refused = call("POST", "/v1/jobs", key=key, json_body=job_spec(posted["upload_id"], missing["upload_id"]))
    assert_error(refused, 400, "invalid_request", "missing.bin has not been uploaded yet")
    nothing_held_or_queued(ALICE)
    unknown = call("POST", "/v1/jobs", key=key, json_body=job_spec("u" + "0" * 16))
    assert_error(unknown, 400, "invalid_request", "No upload")
    nothing_held_or_queued(ALICE)


def test_an_upload_over_a_lowered_cap_is_refused_at_submit(aws, monkeypatch):
    from depu.config import get_settings

    key = user_with_key(ALICE, credits=5000)
    link = new_upload(key)
    assert post(link, b"d" * 4096).status_code == 204
    monkeypatch.setenv("UPLOAD_MAX_BYTES", "1024")  # the HEAD is the second line, after the policy
    get_settings.cache_clear()
    assert_error(call("POST", "/v1/jobs", key=key, json_body=job_spec(link["upload_id"])), 400, "invalid_request",
                 "over the 1024 bytes cap")
    nothing_held_or_queued(ALICE)


def test_a_submit_pins_each_inputs_size_and_etag(aws):
    key = user_with_key(ALICE, credits=5000)
    first, second = new_upload(key, "a.bin"), new_upload(key, "b.bin")
    assert post(first, b"a" * 3000).status_code == 204 and post(second, b"b" * 10).status_code == 204
    made = call("POST", "/v1/jobs", key=key, json_body=job_spec(first["upload_id"], second["upload_id"]))
    assert made["statusCode"] == 201, made["body"]
    assert made["json"]["inputs"] == ["a.bin", "b.bin"]
    job = Job.get(made["json"]["job_id"])
    assert job.input_keys == [first["fields"]["key"], second["fields"]["key"]] and job.input_sizes == [3000, 10]
    assert job.input_etags == [f'"{hashlib.md5(b"a" * 3000).hexdigest()}"', f'"{hashlib.md5(b"b" * 10).hexdigest()}"']


def test_inputs_are_bounded_distinct_well_formed_and_for_own_jobs_only(aws):
    from depu.jobs.spec import MAX_INPUT_FILES
    from depu.publicapi import models

    assert models.MAX_INPUTS == MAX_INPUT_FILES
    key = user_with_key(ALICE, credits=5000)
    link = new_upload(key)
    assert post(link, b"data").status_code == 204
    same_name = new_upload(key)  # another upload, the same file name
    assert post(same_name, b"other").status_code == 204
    assert_error(call("POST", "/v1/jobs", key=key, json_body=job_spec(link["upload_id"], same_name["upload_id"])),
                 400, "invalid_request", "both named data.bin")
    assert_error(call("POST", "/v1/jobs", key=key, json_body=job_spec(link["upload_id"], link["upload_id"])),
                 400, "invalid_request", "both named")
    too_many = job_spec(*[f"u{index:016x}" for index in range(MAX_INPUT_FILES + 1)])
    assert_error(call("POST", "/v1/jobs", key=key, json_body=too_many), 422, "validation_failed")
    for forged in ("../../5402/u0123456789abcdef", "d0123456789abcdef", "U0123456789ABCDEF"):
        assert_error(call("POST", "/v1/jobs", key=key, json_body=job_spec(forged)), 422, "validation_failed")
    benchmark = {"gpu_class": "cpu", "workload": "benchmark", "inputs": [link["upload_id"]]}
    assert_error(call("POST", "/v1/jobs", key=key, json_body=benchmark), 400, "unsupported", "input files")
    nothing_held_or_queued(ALICE)


# ------------------------------------------------------------------------------------------------ the bound
def upload_state(user_id: int) -> tuple:
    """What a refused link request must leave as it was: the user's ledger item, their upload records and the
    bucket's uploads/ of the user."""
    from depu.config import get_settings

    table = boto3.resource("dynamodb").Table(get_settings().tokens_table)
    items = sorted((item for item in table.scan(ConsistentRead=True)["Items"]
                    if item.get("user_id") == user_id and item["token_hash"].startswith(("upload-room#", "api-upload#"))),
                   key=lambda item: item["token_hash"])
    listed = boto3.client("s3").list_objects_v2(Bucket=get_settings().artifacts_bucket, Prefix=f"uploads/{user_id}/")
    return json.dumps(items, default=str, sort_keys=True), sorted(item["Key"] for item in listed.get("Contents", []))


def fill(key: str, count: int, size: int = 10) -> list[dict]:
    return [new_upload(key, f"f{index}.bin", size) for index in range(count)]


def test_a_user_holds_at_most_n_unused_uploads_and_the_next_link_is_refused_with_nothing_written(aws):
    from depu.config import get_settings

    most = get_settings().upload_max_outstanding
    alice, bob = user_with_key(ALICE), user_with_key(BOB)
    fill(alice, most)
    before = upload_state(ALICE)
    refused = call("POST", "/v1/uploads", key=alice, json_body={"file_name": "one-more.bin", "size": 1})
    message = assert_error(refused, 429, "quota_exceeded", f"they may hold at most {most} files at a time")
    assert "Submit a job that uses them, or wait" in message and int(refused["headers"]["Retry-After"]) > 0
    assert upload_state(ALICE) == before  # no record, no reservation, nothing in the bucket
    second_key, _ = keys.create(ALICE, "ci", ["jobs"], 30)  # the bound is the user's, not one key's
    assert_error(call("POST", "/v1/uploads", key=second_key, json_body={"file_name": "x.bin", "size": 1}),
                 429, "quota_exceeded")
    assert new_upload(bob)["upload_id"]  # another user's room is their own


def test_the_declared_bytes_are_bounded_and_the_policy_holds_a_link_to_its_declared_size(aws):
    from depu.config import get_settings

    settings = get_settings()
    key = user_with_key(ALICE)
    count = settings.upload_max_outstanding_bytes // settings.upload_max_bytes
    assert count < settings.upload_max_outstanding  # the bytes bound, not the count, is what refuses here
    links = fill(key, count, settings.upload_max_bytes)
    before = upload_state(ALICE)
    refused = call("POST", "/v1/uploads", key=key, json_body={"file_name": "one-more.bin", "size": 1})
    assert_error(refused, 429, "quota_exceeded", "at most 20 GiB declared at a time")
    assert upload_state(ALICE) == before
    small = call("POST", "/v1/uploads", key=user_with_key(BOB), json_body={"file_name": "s.bin", "size": 5})
    refused = post(small["json"], b"x" * 6)  # a client that declares little cannot store more with the link
    assert refused.status_code == 400 and "<Code>EntityTooLarge</Code>" in refused.text
    assert all(["content-length-range", 1, settings.upload_max_bytes] in policy_of(link)["conditions"] for link in links)


def test_a_job_that_uses_an_upload_frees_its_room(aws):
    from depu.config import get_settings

    most = get_settings().upload_max_outstanding
    key = user_with_key(ALICE, credits=5000)
    links = fill(key, most)
    assert_error(call("POST", "/v1/uploads", key=key, json_body={"file_name": "x.bin", "size": 1}), 429, "quota_exceeded")
    assert post(links[0], b"d" * 10, "f0.bin").status_code == 204
    made = call("POST", "/v1/jobs", key=key, json_body=job_spec(links[0]["upload_id"]))
    assert made["statusCode"] == 201, made["body"]
    assert new_upload(key, "next.bin")  # the job's file no longer counts
    assert_error(call("POST", "/v1/uploads", key=key, json_body={"file_name": "y.bin", "size": 1}), 429,
                 "quota_exceeded")  # exactly one slot was freed


def test_expiry_frees_the_room_an_unposted_link_after_its_window_a_posted_file_when_the_bucket_drops_it(aws,
                                                                                                     monkeypatch):
    from depu.config import get_settings
    from depu.jobs import upload_room, uploads
    from local.template import LocalTemplate

    [rule] = [rule for rule in LocalTemplate().raw["Resources"]["ArtifactsBucket"]["Properties"]
              ["LifecycleConfiguration"]["Rules"] if rule["Id"] == "expire-uploads"]
    assert rule["Prefix"] == uploads.UPLOADS_PREFIX and rule["ExpirationInDays"] == uploads.UPLOAD_FILES_DAYS
    most = get_settings().upload_max_outstanding
    key = user_with_key(ALICE)
    made = upload_room.clock()
    links = fill(key, most)
    posted = links[: most // 2]
    for link in posted:
        assert post(link, b"p" * 10).status_code == 204
    monkeypatch.setattr(upload_room, "clock", lambda: made + uploads.UPLOAD_LINK_SECONDS - 30)
    assert_error(call("POST", "/v1/uploads", key=key, json_body={"file_name": "x.bin", "size": 1}), 429,
                 "quota_exceeded")  # control: every link may still be posted
    monkeypatch.setattr(upload_room, "clock", lambda: made + uploads.UPLOAD_LINK_SECONDS + 5)
    key, _ = keys.create(ALICE, "second", ["jobs"], 30)  # another key of hers: one key's throttle is 30 at once
    fill(key, most - len(posted))  # the unposted links' room is free: their policy has expired, nothing is there
    assert_error(call("POST", "/v1/uploads", key=key, json_body={"file_name": "x.bin", "size": 1}), 429,
                 "quota_exceeded")  # the posted files still count
    gone = upload_room.object_gone_by(made + uploads.UPLOAD_LINK_SECONDS, uploads.UPLOAD_FILES_DAYS)
    assert 86_400 * uploads.UPLOAD_FILES_DAYS < gone - made <= 86_400 * (uploads.UPLOAD_FILES_DAYS + 1) + 900
    monkeypatch.setattr(upload_room, "clock", lambda: gone + 1)  # past the bucket's rule: not even a HEAD
    key, _ = keys.create(ALICE, "third", ["jobs"], 30)
    assert len(fill(key, most)) == most


def test_racing_requests_for_the_last_slot_exactly_one_wins(aws):
    import threading

    from depu.config import get_settings
    from depu.jobs import upload_room, uploads

    most = get_settings().upload_max_outstanding
    key = user_with_key(ALICE)
    fill(key, most - 1)
    racers, start = 8, threading.Barrier(8)
    won: list[str] = []
    refused: list[str] = []
    failed: list[BaseException] = []

    def race(index: int) -> None:
        start.wait()
        try:
            link = uploads.create_upload_link(ALICE, uploads.new_upload_id(), f"race{index}.bin", 10)
            won.append(link.key)
        except upload_room.UploadsFull as error:
            refused.append(error.message)
        except BaseException as error:  # noqa: BLE001 - reported below
            failed.append(error)

    threads = [threading.Thread(target=race, args=(index,)) for index in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failed and len(won) == 1 and len(refused) == racers - 1, (won, refused, failed)
    held = upload_room.outstanding(ALICE)
    assert len(held) == most and won[0] in {item.key for item in held}


# ------------------------------------------------------------------------------------------------ the CLI
FINGERPRINT = """
import hashlib
digest = hashlib.sha256()
with open("inputs/big.bin", "rb") as handle:
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        digest.update(chunk)
print("sha256", digest.hexdigest(), flush=True)
"""


@pytest.mark.e2e
def test_the_cli_uploads_a_21_mib_input_and_the_job_prints_its_sha256(aws, tmp_path):
    from agent_process import AgentProcess
    from rental_helpers import enrol_provider
    from test_public_api_cli import Cli, start_runtime

    runtime = start_runtime(aws, "PublicApiFunction", "AgentApiFunction", "MatcherFunction", "LeaseReaperFunction")
    agent = AgentProcess(runtime.url, tmp_path / "agent", "rig-cli-inputs", enrolment_token=enrol_provider())
    try:
        agent.wait_registered()
        key = user_with_key(ALICE, credits=5000)
        cli = Cli(runtime.url, tmp_path)
        assert cli("login", "--key", key).returncode == 0
        big = tmp_path / "big.bin"
        with open(big, "wb") as handle:  # over the Bot API's 20 MB, so no chat document could carry it
            for _ in range(21):
                handle.write(os.urandom(MIB))
            handle.write(os.urandom(123))
        (tmp_path / "fingerprint.py").write_text(FINGERPRINT)
        ran = cli("--json", "jobs", "run", "--gpu", "cpu", "--time-limit", "180", "--input", "big.bin",
                  "fingerprint.py", "--follow", timeout=420)
        assert ran.returncode == 0, (ran.stdout[-2000:], ran.stderr[-2000:], agent.log_text()[-3000:])
        expected = hashlib.sha256(big.read_bytes()).hexdigest()
        assert f"sha256 {expected}" in ran.stdout.splitlines()
        assert "Uploading big.bin" in ran.stderr  # progress on stderr
        final = json.loads(ran.stdout[ran.stdout.index("{"):])  # --json: the job's JSON after the log lines
        assert final["status"] == "succeeded" and final["inputs"] == ["big.bin"] and final["workload"] == "job"
        job = Job.get(final["job_id"])
        assert job.input_sizes == [21 * MIB + 123] and job.input_keys[0].startswith(f"uploads/{ALICE}/u")
    finally:
        agent.stop()
        runtime.stop()
