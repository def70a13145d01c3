"""The public API's Lambda against moto: keys and scopes, every abuse the issue names, throttling,
Idempotency-Key, logs with a cursor, artifacts, exports, and no key in any log line."""
from __future__ import annotations

import base64
import time

import pytest

from depu.apikeys import keys, throttle
from depu.jobs import storage
from depu.jobs.models import Job
from tests.dashboard_support import seed_running_job
from tests.public_api_support import call, user_with_key

ALICE, BOB = 5101, 5202
JOB_SPEC = {"gpu_class": "cpu", "workload": "benchmark", "time_limit_s": 300}


def assert_error(response: dict, status: int, code: str) -> None:
    assert response["statusCode"] == status, response["body"]
    error = response["json"]["error"]
    assert error["code"] == code and error["message"] and "request_id" in error


# ------------------------------------------------------------------------------------------------ keys
def test_a_key_is_shown_once_stored_only_as_a_hash_and_lists_without_its_secret(aws):
    import boto3
    from depu.config import get_settings

    key, info = keys.create(ALICE, "laptop", ["forks", "read-only"], days=7)
    table = boto3.resource("dynamodb").Table(get_settings().tokens_table)
    stored = str(table.scan()["Items"])
    assert key not in stored and key[4:] not in stored  # neither the key nor its secret part is kept
    [listed] = keys.list_keys(ALICE)
    assert listed.key_id == info.key_id and listed.name == "laptop" and listed.scopes == ["forks", "read-only"]
    assert listed.hint.startswith("dpk_") and len(listed.hint) < 12
    assert listed.expires_at - listed.created_at == 7 * 86400 and listed.last_used_at is None
    assert keys.list_keys(BOB) == []


@pytest.mark.parametrize(("scopes", "days"), [(["admin"], 30), (["read-only"], 30), ([], 30), (["jobs"], 0), (["jobs"], 400)])
def test_bad_key_requests_are_refused_clearly(aws, scopes, days):
    with pytest.raises(keys.KeyRequestError):
        keys.create(ALICE, "x", scopes, days)


def test_a_user_has_at_most_ten_keys_and_revoking_frees_a_slot(aws):
    made = [keys.create(ALICE)[1] for _ in range(keys.MAX_KEYS_PER_USER)]
    with pytest.raises(keys.KeyRequestError, match="most allowed"):
        keys.create(ALICE)
    with pytest.raises(keys.KeyRequestError):
        keys.revoke(BOB, made[0].key_id)  # another user's key id is not theirs to revoke
    keys.revoke(ALICE, made[0].key_id)
    keys.create(ALICE)
    assert len(keys.list_keys(ALICE)) == keys.MAX_KEYS_PER_USER


def test_last_used_time_is_recorded_by_each_request(aws):
    key = user_with_key(ALICE)
    assert call("GET", "/v1/profile", key=key)["statusCode"] == 200
    [listed] = keys.list_keys(ALICE)
    assert listed.last_used_at is not None and abs(listed.last_used_at - time.time()) < 30


# ------------------------------------------------------------------------------------------------ abuse
def test_another_users_key_reaches_none_of_alices_jobs_or_forks(aws):
    alice, bob = user_with_key(ALICE), user_with_key(BOB)
    job = call("POST", "/v1/jobs", key=alice, json_body=JOB_SPEC)["json"]
    for method, path in (("GET", f"/v1/jobs/{job['job_id']}"), ("GET", f"/v1/jobs/{job['job_id']}/logs"),
                         ("GET", f"/v1/jobs/{job['job_id']}/artifacts"), ("POST", f"/v1/jobs/{job['job_id']}/cancel")):
        assert_error(call(method, path, key=bob, json_body={} if method == "POST" else None), 404, "not_found")
    assert call("GET", "/v1/jobs", key=bob)["json"]["jobs"] == []
    assert Job.get(job["job_id"]).status == "queued"  # Bob's cancel did nothing
    assert call("GET", f"/v1/jobs/{job['job_id']}", key=alice)["json"]["status"] == "queued"


def test_another_users_key_cannot_touch_alices_fork(aws):
    from forks_support import register_fork_host

    register_fork_host("host-pub")
    alice, bob = user_with_key(ALICE), user_with_key(BOB)
    created = call("POST", "/v1/forks", key=alice, json_body={})
    assert created["statusCode"] == 201, created["body"]
    fork_id = created["json"]["fork"]["fork_id"]
    assert "/rpc/dpf_" in created["json"]["rpc_url"]
    for method, path, body in (("GET", f"/v1/forks/{fork_id}", None), ("DELETE", f"/v1/forks/{fork_id}", None),
                               ("POST", f"/v1/forks/{fork_id}/sync", {}), ("POST", f"/v1/forks/{fork_id}/rpc-url", {}),
                               ("POST", f"/v1/forks/{fork_id}/fund", {"address": "0x" + "11" * 20, "eth": "1"}),
                               ("POST", f"/v1/forks/{fork_id}/snapshots", {})):
        assert_error(call(method, path, key=bob, json_body=body), 404, "not_found")
    assert call("GET", "/v1/forks", key=bob)["json"]["forks"] == []
    assert call("GET", f"/v1/forks/{fork_id}", key=alice)["json"]["fork"]["status"] in ("requested", "provisioning")


def test_a_revoked_key_is_refused_at_once(aws):
    key = user_with_key(ALICE)
    assert call("GET", "/v1/jobs", key=key)["statusCode"] == 200
    [info] = keys.list_keys(ALICE)
    keys.revoke(ALICE, info.key_id)
    assert_error(call("GET", "/v1/jobs", key=key), 401, "unauthorized")
    assert_error(call("POST", "/v1/jobs", key=key, json_body=JOB_SPEC), 401, "unauthorized")
    assert list(Job.by_user.query(ALICE)) == []


def test_a_request_racing_a_revocation_loses(aws):
    key = user_with_key(ALICE)
    caller = keys.authenticate(key)  # authenticated just before the revocation lands
    keys.revoke(ALICE, caller.key_id)
    assert throttle.take(caller.record).revoked


def test_a_read_only_key_reads_but_cannot_write(aws):
    key = user_with_key(ALICE, scopes=["jobs", "forks", "analytics", "read-only"])
    assert call("GET", "/v1/jobs", key=key)["statusCode"] == 200
    assert call("GET", "/v1/profile", key=key)["statusCode"] == 200
    for path, body in (("/v1/jobs", JOB_SPEC), ("/v1/forks", {}),
                       ("/v1/exports", {"dataset": "transfers", "from_block": 1, "to_block": 2})):
        assert_error(call("POST", path, key=key, json_body=body), 403, "forbidden")
    assert list(Job.by_user.query(ALICE)) == []
    from depu import credits

    assert credits.balance(ALICE).held == 0


def test_a_key_reaches_only_the_areas_it_was_given(aws):
    key = user_with_key(ALICE, scopes=["analytics"])
    assert call("GET", "/v1/analytics/chain", key=key)["statusCode"] == 200
    assert_error(call("GET", "/v1/jobs", key=key), 403, "forbidden")
    assert_error(call("GET", "/v1/forks", key=key), 403, "forbidden")
    assert_error(call("POST", "/v1/jobs", key=key, json_body=JOB_SPEC), 403, "forbidden")


def test_an_expired_key_is_refused(aws):
    from depu.profiles import ensure_profile

    ensure_profile(ALICE, first_name="A", username="a")
    key, _ = keys.create(ALICE, "old", days=1, now=time.time() - 2 * 86400)
    assert keys.authenticate(key) is None
    assert_error(call("GET", "/v1/profile", key=key), 401, "unauthorized")
    keys.create(ALICE)  # and listing or creating prunes it
    assert [k.name for k in keys.list_keys(ALICE)] == ["key"]


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer dpk_forged", "Basic dpk_abc", "Bearer " + "x" * 5000,
                                    "Bearer dpk_\udcff"])
def test_missing_forged_and_malformed_keys_get_401(aws, header):
    response = call("GET", "/v1/jobs", headers={"Authorization": header} if header else None)
    assert_error(response, 401, "unauthorized")
    assert response["headers"]["WWW-Authenticate"].startswith("Bearer")


def test_an_oversized_body_is_refused_before_anything_is_parsed_or_stored(aws):
    key = user_with_key(ALICE)
    big = {**JOB_SPEC, "workload": "script", "script_b64": "A" * (3 * 1024 * 1024)}
    assert_error(call("POST", "/v1/jobs", key=key, json_body=big), 413, "payload_too_large")
    # refused even without a key: an outsider's big body costs nothing either
    assert_error(call("POST", "/v1/jobs", json_body=big), 413, "payload_too_large")
    # a script over the 1 MiB the chat allows, but inside the body limit, is a clear 400/422
    over = base64.b64encode(b"#" * (1024 * 1024 + 1)).decode()
    refused = call("POST", "/v1/jobs", key=key, json_body={**JOB_SPEC, "workload": "script", "script_b64": over})
    assert refused["statusCode"] in (400, 422) and refused["json"]["error"]["code"] in ("invalid_request", "validation_failed")
    assert list(Job.by_user.query(ALICE)) == []


@pytest.mark.parametrize("body", ["not json", "[]", '{"gpu_class": "cpu"}', '{"gpu_class": "cpu", "workload": "benchmark", "bogus": 1}',
                                  '{"gpu_class": "../../etc", "workload": "benchmark"}'])
def test_malformed_job_bodies_get_the_one_error_shape(aws, body):
    key = user_with_key(ALICE)
    response = call("POST", "/v1/jobs", key=key, raw_body=body, headers={"Content-Type": "application/json"})
    assert response["statusCode"] in (400, 422), response["body"]
    assert response["json"]["error"]["code"] in ("invalid_request", "validation_failed")


def test_throttling_is_per_key_and_says_when_to_retry(aws, monkeypatch):
    monkeypatch.setattr(throttle, "RATE_PER_SECOND", 0.01)  # no refill during the test: exactly BURST pass
    key, other = user_with_key(ALICE), user_with_key(BOB)
    statuses = [call("GET", "/v1/profile", key=key)["statusCode"] for _ in range(int(throttle.BURST) + 5)]
    assert statuses == [200] * int(throttle.BURST) + [429] * 5
    refused = call("GET", "/v1/profile", key=key)
    assert_error(refused, 429, "rate_limited")
    assert int(refused["headers"]["Retry-After"]) >= 1
    assert call("GET", "/v1/profile", key=other)["statusCode"] == 200  # Bob's key has its own bucket
    record = keys.authenticate(key).record
    assert throttle.take(record, now=time.time() + 200).allowed  # the bucket refills with time


# ------------------------------------------------------------------------------------------------ idempotency
def test_the_same_idempotency_key_submits_once_and_holds_credits_once(aws):
    from depu import credits

    key = user_with_key(ALICE)
    first = call("POST", "/v1/jobs", key=key, json_body=JOB_SPEC, headers={"Idempotency-Key": "run-1"})
    again = call("POST", "/v1/jobs", key=key, json_body=JOB_SPEC, headers={"Idempotency-Key": "run-1"})
    assert first["statusCode"] == again["statusCode"] == 201
    assert first["json"]["job_id"] == again["json"]["job_id"]
    assert len(list(Job.by_user.query(ALICE))) == 1
    assert credits.balance(ALICE).held == first["json"]["max_cost"]
    reused = call("POST", "/v1/jobs", key=key, json_body={**JOB_SPEC, "time_limit_s": 600},
                  headers={"Idempotency-Key": "run-1"})
    assert_error(reused, 422, "idempotency_key_reused")
    other = call("POST", "/v1/jobs", key=key, json_body=JOB_SPEC, headers={"Idempotency-Key": "run-2"})
    assert other["json"]["job_id"] != first["json"]["job_id"]
    # another user's request with the same Idempotency-Key is their own
    bob = call("POST", "/v1/jobs", key=user_with_key(BOB), json_body=JOB_SPEC, headers={"Idempotency-Key": "run-1"})
    assert bob["statusCode"] == 201 and bob["json"]["job_id"] != first["json"]["job_id"]


def test_a_replayed_fork_creation_never_returns_the_rpc_url_again(aws):
    import boto3
    from depu.config import get_settings
    from forks_support import register_fork_host

    register_fork_host("host-pub")
    key = user_with_key(ALICE)
    first = call("POST", "/v1/forks", key=key, json_body={}, headers={"Idempotency-Key": "fork-1"})
    again = call("POST", "/v1/forks", key=key, json_body={}, headers={"Idempotency-Key": "fork-1"})
    assert first["json"]["rpc_url"] and again["json"]["rpc_url"] is None
    assert again["json"]["fork"]["fork_id"] == first["json"]["fork"]["fork_id"]
    token = first["json"]["rpc_url"].rsplit("/", 1)[-1]
    stored = str(boto3.resource("dynamodb").Table(get_settings().idempotency_table).scan()["Items"])
    assert token not in stored


# ------------------------------------------------------------------------------------------------ jobs
def test_a_script_job_is_submitted_with_the_chats_spec_and_cancelled(aws):
    from depu import credits

    key = user_with_key(ALICE)
    source = b"print('hello from the API')\n"
    created = call("POST", "/v1/jobs", key=key, json_body={
        "gpu_class": "cpu", "workload": "script", "time_limit_s": 120, "file_name": "hello.py",
        "script_b64": base64.b64encode(source).decode()})
    assert created["statusCode"] == 201, created["body"]
    job = Job.get(created["json"]["job_id"])
    assert job.workload == "script" and job.params == {"file_name": "hello.py"} and storage.get(job.script_key) == source
    assert credits.balance(ALICE).held == job.max_cost
    cancelled = call("POST", f"/v1/jobs/{job.job_id}/cancel", key=key, json_body={})
    assert cancelled["json"]["status"] == "cancelled" and cancelled["json"]["finished"]
    assert credits.balance(ALICE).held == 0
    assert_error(call("POST", f"/v1/jobs/{job.job_id}/cancel", key=key, json_body={}), 400, "invalid_request")


def test_a_job_spec_is_submitted_with_requirements_env_and_gpu_count_as_the_chats_own_job(aws):
    from depu import credits
    from depu.agents.catalogue import price_per_hour
    from depu.jobs import spec

    key = user_with_key(ALICE)
    source = b"import os; print(os.environ['MODE'])\n"
    requirements = "# tools\nNumPy>=1.26\nrequests[socks]==2.32.3\n"
    created = call("POST", "/v1/jobs", key=key, json_body={
        "gpu_class": "cpu", "workload": "job", "time_limit_s": 120, "file_name": "train.py",
        "script_b64": base64.b64encode(source).decode(), "requirements": requirements,
        "env": {"MODE": "fast"}, "gpu_count": 2, "image": "default"})
    assert created["statusCode"] == 201, created["body"]
    job = Job.get(created["json"]["job_id"])
    lines = ["numpy>=1.26", "requests[socks]==2.32.3"]
    assert job.workload == "job" and int(job.gpu_count) == 2 and storage.get(job.script_key) == source
    assert job.params == {"requirements": lines, "env": {"MODE": "fast"}, "gpu_count": 2, "image": "default",
                          "file_name": "train.py", "env_hash": spec.env_hash(lines)}
    assert created["json"]["params"]["env_hash"] == spec.env_hash(lines)
    assert int(job.price_per_hour) == 2 * price_per_hour("cpu") > 0  # each of its GPUs pays the class price
    assert credits.balance(ALICE).held == job.max_cost
    command = call("POST", "/v1/jobs", key=key, json_body={"gpu_class": "cpu", "workload": "job",
                                                            "time_limit_s": 60, "command": "nvidia-smi"})
    assert command["statusCode"] == 201, command["body"]
    assert Job.get(command["json"]["job_id"]).params["command"] == "nvidia-smi"


@pytest.mark.parametrize("fields, words", [
    ({"requirements": "torch\nhttps://evil.example/pkg.whl\n"}, "line 2"),
    ({"requirements": "--extra-index-url http://10.0.0.1/simple\nnumpy\n"}, "line 1"),
    ({"env": {"AWS_SECRET_ACCESS_KEY": "x"}}, "looks like a secret"),
    ({"env": {"HF_TOKEN": "x"}}, "looks like a secret"),
    ({"env": {"LD_PRELOAD": "/tmp/x.so"}}, "set by the sandbox"),
    ({"gpu_count": 9}, "gpu_count is from 1 to 8"),
    ({"image": "pytorch/pytorch:latest"}, "default image"),
    ({}, "a command or a script"),
])
def test_a_job_spec_the_domain_refuses_is_a_clear_400_with_its_message_and_nothing_held(aws, fields, words):
    from depu import credits

    key = user_with_key(ALICE)
    body = {"gpu_class": "cpu", "workload": "job", "time_limit_s": 60,
            **({} if not fields else {"command": "python -c 'print(1)'"}), **fields}
    refused = call("POST", "/v1/jobs", key=key, json_body=body)
    assert_error(refused, 400, "invalid_request")
    assert words in refused["json"]["error"]["message"], refused["json"]["error"]["message"]
    assert list(Job.by_user.query(ALICE)) == [] and credits.balance(ALICE).held == 0


@pytest.mark.parametrize("fields", [{"image": "pytorch/pytorch:latest"}, {"requirements": "numpy\n"},
                                    {"env": {"MODE": "x"}}, {"gpu_count": 2}])
def test_job_spec_fields_on_another_workload_are_refused_as_unsupported(aws, fields):
    key = user_with_key(ALICE)
    refused = call("POST", "/v1/jobs", key=key, json_body={**JOB_SPEC, **fields})
    assert_error(refused, 400, "unsupported")
    assert "'job' workload" in refused["json"]["error"]["message"]
    assert list(Job.by_user.query(ALICE)) == []


def test_too_few_credits_is_a_clear_400_in_plain_text(aws):
    key = user_with_key(ALICE)
    refused = call("POST", "/v1/jobs", key=key, json_body={**JOB_SPEC, "gpu_class": "h200-141gb", "time_limit_s": 14400})
    assert_error(refused, 400, "invalid_request")
    assert "<b>" not in refused["json"]["error"]["message"] and "credits" in refused["json"]["error"]["message"]


def test_logs_page_from_a_cursor_and_follow_returns_when_lines_arrive_or_the_job_ends(aws):
    key = user_with_key(ALICE)
    seed_running_job(ALICE, "jlogs01")
    for seq, lines in ((0, ["a", "b"]), (1, ["c"]), (3, ["e"])):  # seq 2 never stored: a gap is fine
        storage.put(storage.log_key("jlogs01", seq), "\n".join(lines).encode())
    page = call("GET", "/v1/jobs/jlogs01/logs", key=key)["json"]
    assert page["lines"] == ["a", "b", "c", "e"] and page["cursor"] == 3 and not page["finished"]
    page = call("GET", "/v1/jobs/jlogs01/logs?cursor=0", key=key)["json"]
    assert page["lines"] == ["c", "e"]
    started = time.monotonic()
    empty = call("GET", "/v1/jobs/jlogs01/logs?cursor=3", key=key)["json"]
    assert empty["lines"] == [] and empty["cursor"] == 3 and time.monotonic() - started < 5  # no follow: no wait
    Job("jlogs01").update(actions=[Job.status.set("succeeded")])
    ended = call("GET", "/v1/jobs/jlogs01/logs?cursor=3&follow=true", key=key)["json"]
    assert ended["finished"] and ended["lines"] == [] and time.monotonic() - started < 5


def test_artifacts_come_as_links_and_a_changed_file_is_withheld(aws):
    key = user_with_key(ALICE)
    seed_running_job(ALICE, "jart01")
    for name in ("weights.pt", "changed.txt"):
        storage.put(storage.artifact_prefix("jart01") + name, b"data")
    etags = [storage.head(storage.artifact_prefix("jart01") + n)[1] for n in ("weights.pt", "changed.txt")]
    storage.put(storage.artifact_prefix("jart01") + "changed.txt", b"swapped later")
    Job("jart01").update(actions=[Job.status.set("succeeded"),
                                  Job.artifacts.set([storage.artifact_prefix("jart01") + n for n in ("weights.pt", "changed.txt")]),
                                  Job.artifact_etags.set(etags)])
    listed = call("GET", "/v1/jobs/jart01/artifacts", key=key)["json"]["artifacts"]
    assert [(a["name"], a["state"]) for a in listed] == [("weights.pt", "ok"), ("changed.txt", "withheld")]
    assert listed[0]["url"].startswith("http") and listed[1]["url"] is None
    assert abs(listed[0]["expires_at"] - (time.time() + storage.DOWNLOAD_URL_SECONDS)) < 60  # the link says when it dies
    assert listed[1]["expires_at"] is None


# ------------------------------------------------------------------------------------------------ exports
def test_an_export_is_pending_then_ready_with_a_link_and_only_its_owner_sees_it(aws):
    from depu.analytics import export, export_quota

    key = user_with_key(ALICE)
    token = "0x" + "ab" * 20
    started = call("POST", "/v1/exports", key=key, json_body={
        "dataset": "transfers", "from_block": 10, "to_block": 20, "format": "csv", "token": token})
    assert started["statusCode"] == 202, started["body"]
    export_id = started["json"]["export_id"]
    assert call("GET", f"/v1/exports/{export_id}", key=key)["json"]["status"] == "pending"
    assert_error(call("GET", f"/v1/exports/{export_id}", key=user_with_key(BOB)), 404, "not_found")
    # a second export while the first is built hits the chat's quota, with the same words
    assert_error(call("POST", "/v1/exports", key=key, json_body={"dataset": "blocks", "from_block": 1, "to_block": 2}),
                 429, "quota_exceeded")
    request = export.ExportRequest(export_id, ALICE, ALICE, "transfers", 10, 20, "csv", token)
    storage.put(request.key, b"block_number\n11\n")
    export_quota.release(ALICE, export_id)
    ready = call("GET", f"/v1/exports/{export_id}", key=key)["json"]
    assert ready["status"] == "ready" and ready["size"] == len(b"block_number\n11\n") and ready["download_url"] and ready["token"] == token


def test_an_export_of_an_empty_range_ends_empty(aws):
    from depu.analytics import export_quota

    key = user_with_key(ALICE)
    export_id = call("POST", "/v1/exports", key=key, json_body={"dataset": "blocks", "from_block": 1, "to_block": 2})["json"]["export_id"]
    export_quota.release(ALICE, export_id)  # what the exporter does after a range with no rows
    assert call("GET", f"/v1/exports/{export_id}", key=key)["json"]["status"] == "empty"


def test_the_exporter_filters_an_api_exports_transfers_by_token(aws):
    from depu.analytics import export, export_run, raw

    token, other = "0x" + "ab" * 20, "0x" + "cd" * 20
    rows = [{"block_number": 5, "block_hash": "0x1", "block_timestamp": 1, "tx_hash": f"0x{i}", "tx_index": i,
             "log_index": i, "asset": asset, "kind": "erc20", "shape": "standard", "sender": "0x" + "01" * 20,
             "recipient": "0x" + "02" * 20, "amount": "7", "token_id": None} for i, asset in enumerate((token, other, token))]
    raw.write_part("transfers", 0, 9, rows)
    request = export.ExportRequest.from_json(export.ExportRequest("abc123", ALICE, ALICE, "transfers", 0, 9, "jsonl", token).to_json())
    export_run.build(request)
    body = storage.get(request.key).decode().splitlines()
    assert len(body) == 2 and all(token in line for line in body)
    # a request queued before the filter existed (no asset field) still builds every asset
    old = export.ExportRequest.from_json('{"request_id": "old1", "user_id": 1, "chat_id": 1, "dataset": "transfers", '
                                         '"start": 0, "end": 9, "format": "csv"}')
    assert old.asset is None


# ------------------------------------------------------------------------------------------------ secrets
def test_no_key_appears_in_any_log_line(aws, capfd):
    import logging

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record) + repr(getattr(record, "__dict__", {})))

    keep = Keep()
    logging.getLogger().addHandler(keep)
    logging.getLogger().setLevel(logging.DEBUG)
    try:
        key = user_with_key(ALICE)
        revoked = user_with_key(BOB)
        keys.revoke(BOB, keys.list_keys(BOB)[0].key_id)
        read_only = user_with_key(ALICE + 1, scopes=["jobs", "read-only"])
        call("GET", "/v1/profile", key=key)
        call("POST", "/v1/jobs", key=key, json_body=JOB_SPEC, headers={"Idempotency-Key": "k1"})
        call("POST", "/v1/jobs", key=key, json_body={"bogus": key})  # the key even inside a refused body
        call("GET", "/v1/jobs", key=revoked)
        call("POST", "/v1/jobs", key=read_only, json_body=JOB_SPEC)
        call("GET", "/v1/nowhere", key=key)
        call("GET", "/v1/jobs", headers={"Authorization": f"Basic {key}"})
    finally:
        logging.getLogger().removeHandler(keep)
    out, err = capfd.readouterr()
    everything = out + err + "\n".join(records)
    assert "request refused" in everything  # the logs were captured
    for secret in (key, revoked, read_only):
        assert secret not in everything and secret[4:20] not in everything


def test_bodies_that_are_not_utf8_json_or_nest_too_deeply_get_a_clear_400(aws):
    from tests.dashboard_support import FakeContext, proxy_event
    from tests.public_api_support import handler_module

    key = user_with_key(ALICE)
    binary = proxy_event("POST", "/v1/jobs", headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                         body=base64.b64encode(b"\xd5\xff\x00garbage").decode())
    binary["isBase64Encoded"] = True
    answer = handler_module().lambda_handler(binary, FakeContext())
    assert answer["statusCode"] == 400 and "UTF-8" in answer["body"]
    deep = call("POST", "/v1/jobs", key=key, raw_body="[" * 100_000 + "]" * 100_000,
                headers={"Content-Type": "application/json"})
    assert_error(deep, 400, "invalid_request")
    assert list(Job.by_user.query(ALICE)) == []
