"""Input files over Telegram's 20 MB: the upload link (a presigned POST), the check before dispatch, the
agent's pinned download (docs/security.md, "Upload links").

Uploads are real multipart POSTs (requests, and curl for the bot's one-line command) to moto's S3 with the
local stack's check of the signed POST policy (local/s3_post_policy.py: moto itself stores any form), so an
attack on the policy is refused here as S3 refuses it. The end-to-end test sends a 21 MiB document through the
chat's rent flow, posts it with the command the bot gave, and a real agent process runs the job on it.
"""
from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import shlex
import subprocess
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests

from rental_helpers import USER_ID, AgentApi, ensure_user, register_agent, run_matcher
from test_rental_bot import command, new_chat, press, run, sent_document, typed

OTHER_USER = USER_ID + 1
MIB = 1024 * 1024


def bucket() -> str:
    from depu.config import get_settings

    return get_settings().artifacts_bucket


def stored(key: str) -> bytes | None:
    try:
        return boto3.client("s3").get_object(Bucket=bucket(), Key=key)["Body"].read()
    except boto3.client("s3").exceptions.NoSuchKey:
        return None


def post(link_url: str, fields: dict[str, str], body: bytes, name: str = "file.bin") -> requests.Response:
    """The browser's form POST: the fields, then the file last (as S3 requires)."""
    return requests.post(link_url, data=fields, files={"file": (name, body)}, timeout=60)


def policy_of(fields: dict[str, str]) -> dict:
    return json.loads(base64.b64decode(fields["policy"]))


@pytest.fixture
def draft(aws):
    from depu.jobs import uploads

    ensure_user(USER_ID, credits=5000)
    ensure_user(OTHER_USER, credits=5000)
    return uploads.new_draft_id()


# ------------------------------------------------------------------------------------------- the policy
def test_the_link_is_a_fixed_key_a_size_range_and_a_short_expiry(draft):
    from depu.jobs import uploads

    link = uploads.create_link(USER_ID, draft, "../../etc/My Data.bin", size=30 * MIB)
    assert link.key == f"uploads/{USER_ID}/{draft}/etc_My_Data.bin" and link.name == "etc_My_Data.bin"
    policy = policy_of(link.fields)
    assert {"key": link.key} in policy["conditions"] and {"bucket": bucket()} in policy["conditions"]
    assert ["content-length-range", 1, 30 * MIB] in policy["conditions"]  # the declared size (the room it took)
    undeclared = uploads.create_link(USER_ID, draft, "other.bin")
    assert ["content-length-range", 1, uploads.max_bytes()] in policy_of(undeclared.fields)["conditions"]
    assert uploads.max_bytes() == 2 * 1024 ** 3 and uploads.describe_cap() == "2 GiB"  # the documented cap
    expires = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
    assert abs((expires - datetime.now(timezone.utc)).total_seconds() - 15 * 60) < 30 and link.expires_in == 900
    body = os.urandom(1024)
    assert post(link.url, link.fields, body).status_code == 204
    assert stored(link.key) == body


def test_an_upload_over_the_cap_is_refused_by_the_policy(draft, monkeypatch):
    from depu.config import get_settings
    from depu.jobs import uploads

    monkeypatch.setenv("UPLOAD_MAX_BYTES", str(MIB))
    get_settings.cache_clear()
    link = uploads.create_link(USER_ID, draft, "big.bin")
    refused = post(link.url, link.fields, b"x" * (MIB + 1))
    assert refused.status_code == 400 and "<Code>EntityTooLarge</Code>" in refused.text
    assert stored(link.key) is None
    assert post(link.url, link.fields, b"x" * MIB).status_code == 204  # control: at the cap it is taken
    with pytest.raises(Exception, match="at most 1 MiB"):
        uploads.create_link(USER_ID, draft, "big.bin", size=MIB + 1)  # a declared size over it: answered at once


@pytest.mark.parametrize("target", ["another key of the draft", "another user's draft", "a job's inputs"])
def test_the_form_cannot_write_another_key(draft, target):
    from depu.jobs import storage, uploads

    link = uploads.create_link(USER_ID, draft, "data.bin")
    victim_draft = uploads.new_draft_id()
    key = {"another key of the draft": f"uploads/{USER_ID}/{draft}/other.bin",
           "another user's draft": uploads.draft_key(OTHER_USER, victim_draft, "data.bin"),
           "a job's inputs": storage.input_key("jvictim", "data.bin")}[target]
    refused = post(link.url, {**link.fields, "key": key}, b"attack")
    assert refused.status_code == 403 and "Policy Condition failed" in refused.text, refused.text
    assert stored(key) is None


def test_an_edited_policy_fails_its_signature(draft):
    from depu.jobs import uploads

    link = uploads.create_link(USER_ID, draft, "data.bin")
    policy = policy_of(link.fields)
    other = f"uploads/{OTHER_USER}/{draft}/data.bin"
    policy["conditions"] = [c if c != {"key": link.key} else {"key": other} for c in policy["conditions"]]
    policy["conditions"] = [["content-length-range", 1, 10 ** 12] if isinstance(c, list) and c[0] ==
                            "content-length-range" else c for c in policy["conditions"]]
    forged = {**link.fields, "key": other, "policy": base64.b64encode(json.dumps(policy).encode()).decode()}
    refused = post(link.url, forged, b"attack")
    assert refused.status_code == 403 and "SignatureDoesNotMatch" in refused.text
    assert stored(other) is None
    unsigned = {name: value for name, value in link.fields.items() if name not in ("policy", "x-amz-signature")}
    assert post(link.url, unsigned, b"attack").status_code == 403  # no policy: an anonymous write, refused
    assert stored(link.key) is None


def test_an_expired_link_is_refused(draft, monkeypatch):
    from depu.jobs import uploads
    from local import s3_post_policy

    link = uploads.create_link(USER_ID, draft, "data.bin")
    made = datetime.now(timezone.utc)
    monkeypatch.setattr(s3_post_policy, "clock", lambda: made + timedelta(seconds=uploads.UPLOAD_LINK_SECONDS + 5))
    refused = post(link.url, link.fields, b"late")
    assert refused.status_code == 403 and "Policy expired" in refused.text
    assert stored(link.key) is None
    monkeypatch.setattr(s3_post_policy, "clock", lambda: made + timedelta(seconds=uploads.UPLOAD_LINK_SECONDS - 30))
    assert post(link.url, link.fields, b"in time").status_code == 204  # control: the same link a little earlier


# ------------------------------------------------------------------------------------------- before dispatch
def test_confirm_needs_the_upload_of_this_users_draft_within_the_cap(draft, monkeypatch):
    from depu.config import get_settings
    from depu.errors import UserError
    from depu.jobs import uploads

    with pytest.raises(UserError, match="has not been uploaded yet"):
        uploads.confirm(USER_ID, draft, ["data.bin"])
    link = uploads.create_link(USER_ID, draft, "data.bin")
    assert post(link.url, link.fields, b"d" * 2048).status_code == 204
    [checked] = uploads.confirm(USER_ID, draft, ["data.bin"])
    assert (checked.key, checked.size) == (link.key, 2048) and checked.etag.strip('"')
    with pytest.raises(UserError, match="has not been uploaded yet"):
        uploads.confirm(OTHER_USER, draft, ["data.bin"])  # the same draft id is not another user's to claim
    monkeypatch.setenv("UPLOAD_MAX_BYTES", "1024")  # the cap lowered after the upload: the HEAD is the second line
    get_settings.cache_clear()
    with pytest.raises(UserError, match="over the 1024"):
        uploads.confirm(USER_ID, draft, ["data.bin"])


def _claim(agent_token: str) -> dict:
    status, body = AgentApi().call("/agent/claim", {"free_gpus": [0], "wait_seconds": 0}, agent_token)
    assert status == 200, body
    return body["job"]


def _claimed_inputs(job_id: str, agent_token: str) -> list[dict]:
    offer = _claim(agent_token)
    assert offer["job_id"] == job_id, offer
    return offer["inputs"]


def _cpu_agent(name: str = "rig") -> dict:
    from depu.agents.tokens import issue_enrolment_token
    from rental_helpers import CPU_BENCHMARK

    ensure_user(7001)
    return register_agent(AgentApi(), issue_enrolment_token(7001), gpus=[], benchmark=CPU_BENCHMARK, name=name)


def _submit_with_upload(user_id: int, draft: str, body: bytes, name: str = "data.bin"):
    from depu.jobs import service, uploads

    link = uploads.create_link(user_id, draft, name)
    assert post(link.url, link.fields, body).status_code == 204
    job = service.submit(user_id, user_id, gpu_class="cpu", workload="job", params={"command": "ls inputs"},
                         time_limit_s=300, uploaded=uploads.confirm(user_id, draft, [name]))
    return job, link


def test_a_link_reused_after_the_job_started_changes_nothing_the_job_reads(draft, tmp_path):
    from depu_agent import inputs as agent_inputs
    from depu_agent.envcache import SetupFailed

    agent = _cpu_agent()
    original = os.urandom(4096)
    job, link = _submit_with_upload(USER_ID, draft, original)
    run_matcher()
    [item] = _claimed_inputs(job.job_id, agent["agent_token"])
    assert urlsplit(item["url"]).path.endswith(f"/{link.key}") and item["size"] == 4096
    signed = parse_qs(urlsplit(item["url"]).query)
    assert "if-match" in signed["X-Amz-SignedHeaders"][0].split(";")  # S3 refuses the link without the header
    fetched = requests.get(item["url"], headers={"If-Match": item["if_match"]}, timeout=30)
    assert fetched.status_code == 200 and fetched.content == original  # control: the version the user submitted

    assert post(link.url, link.fields, b"swapped after the job started").status_code == 204  # S3 takes it
    assert requests.get(item["url"], headers={"If-Match": item["if_match"]}, timeout=30).status_code == 412
    target = tmp_path / "inputs"
    target.mkdir()
    with pytest.raises(SetupFailed, match="changed after it was checked"):
        agent_inputs.fetch([item], target, None, 64 * MIB, lambda line: None)


def test_the_agent_holds_the_download_to_the_checked_size(draft, tmp_path):
    from depu_agent import inputs as agent_inputs
    from depu_agent.envcache import SetupFailed

    agent = _cpu_agent()
    job, _link = _submit_with_upload(USER_ID, draft, b"z" * 3000)
    run_matcher()
    [item] = _claimed_inputs(job.job_id, agent["agent_token"])
    for number, (size, says) in enumerate([(2999, "larger than the 2999 bytes"), (3001, "is 3000 bytes, not the 3001")]):
        target = tmp_path / f"inputs-{number}"
        target.mkdir()
        with pytest.raises(SetupFailed, match=says):
            agent_inputs.fetch([{**item, "size": size}], target, None, 64 * MIB, lambda line: None)
    target = tmp_path / "inputs-cap"
    target.mkdir()
    with pytest.raises(SetupFailed, match="over this machine's cap"):
        agent_inputs.fetch([item], target, None, 2000, lambda line: None)


def test_an_agent_gets_links_to_its_own_jobs_inputs_only(draft):
    from depu.jobs import uploads

    first, second = _cpu_agent("rig-a"), _cpu_agent("rig-b")
    mine, mine_link = _submit_with_upload(USER_ID, draft, b"mine")
    theirs, theirs_link = _submit_with_upload(OTHER_USER, uploads.new_draft_id(), b"theirs")
    run_matcher()
    offers = {agent["agent_id"]: _claim(agent["agent_token"]) for agent in (first, second)}
    keys_by_job = {offer["job_id"]: [urlsplit(item["url"]).path.split("/", 2)[2] for item in offer["inputs"]]
                   for offer in offers.values()}
    assert keys_by_job == {mine.job_id: [mine_link.key], theirs.job_id: [theirs_link.key]}
    holder_of_mine = next(agent for agent in (first, second) if offers[agent["agent_id"]]["job_id"] == mine.job_id)
    status, _ = AgentApi().call(f"/agent/jobs/{theirs.job_id}/progress", {"progress": 0.1},
                                holder_of_mine["agent_token"])
    assert status == 404  # the other job is not this agent's: no route of it answers


def _signed_get_check(url: str, headers: dict[str, str], now: datetime | None = None):
    """The local S3's check of a presigned GET (local/s3_presigned_get.py) on ``url`` as a client sends it."""
    from local import s3_presigned_get

    split = urlsplit(url)
    secrets = {os.environ["AWS_ACCESS_KEY_ID"]: os.environ["AWS_SECRET_ACCESS_KEY"]}
    return s3_presigned_get.check("GET", split.path, split.query, {"host": split.netloc, **headers}, secrets, now)


@pytest.mark.parametrize("key", ["uploads/1/d0123456789abcdef/plain.bin", "jobs/j1/outputs/a b+c=d&e%f~g.bin",
                                 "jobs/j1/ünïcödé/(1)!*'.tar.gz"])
def test_the_local_signature_check_accepts_what_botocore_signs_and_nothing_edited(aws, key):
    """botocore (the SDK's reference signer) signs; the local check, written from the SigV4 spec, must accept
    exactly that request and refuse it with any signed part changed."""
    from botocore.config import Config

    from local.s3_post_policy import Refused

    s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket(), "Key": key, "IfMatch": '"abc"'},
                                    ExpiresIn=600)
    _signed_get_check(url, {"If-Match": '"abc"', "Accept-Encoding": "gzip"})  # an unsigned header is not checked
    plain = s3.generate_presigned_url("get_object", Params={"Bucket": bucket(), "Key": key}, ExpiresIn=60)
    _signed_get_check(plain, {})
    split = urlsplit(url)
    edits = {"the key": (url.replace(split.path, split.path[:-1] + "X"), {"If-Match": '"abc"'}),
             "a parameter": (url.replace("X-Amz-Expires=600", "X-Amz-Expires=601"), {"If-Match": '"abc"'}),
             "a parameter added": (url + "&response-content-type=text%2Fhtml", {"If-Match": '"abc"'}),
             "the signed header's value": (url, {"If-Match": '"abd"'}),
             "the signed header dropped": (url, {})}
    for edit, (edited, headers) in edits.items():
        with pytest.raises(Refused, match="signature we calculated") as refused:
            _signed_get_check(edited, headers)
        assert refused.value.status == 403, edit
    with pytest.raises(Refused, match="Request has expired"):
        _signed_get_check(url, {"If-Match": '"abc"'}, now=datetime.now(timezone.utc) + timedelta(seconds=605))


def test_s3_refuses_an_agent_that_edits_its_input_link_drops_if_match_or_comes_late(draft, monkeypatch):
    """The agent's presigned GET of an input, over HTTP to the local S3 (which checks SigV4 as S3 does)."""
    from depu.jobs import uploads
    from local import s3_presigned_get

    agent = _cpu_agent()
    victim_link = uploads.create_link(OTHER_USER, uploads.new_draft_id(), "data.bin")
    assert post(victim_link.url, victim_link.fields, b"the other user's data").status_code == 204
    mine = os.urandom(2048)
    job, link = _submit_with_upload(USER_ID, draft, mine)
    run_matcher()
    [item] = _claimed_inputs(job.job_id, agent["agent_token"])
    honest = requests.get(item["url"], headers={"If-Match": item["if_match"]}, timeout=30)
    assert honest.status_code == 200 and honest.content == mine  # control: the link as given

    other_key = item["url"].replace(link.key, victim_link.key)
    assert other_key != item["url"] and stored(victim_link.key) == b"the other user's data"
    for name, url, headers in [("another user's object", other_key, {"If-Match": item["if_match"]}),
                               ("If-Match dropped", item["url"], {}),
                               ("If-Match changed", item["url"], {"If-Match": '"0123456789abcdef0123456789abcdef"'}),
                               ("If-Match made a wildcard", item["url"], {"If-Match": "*"})]:
        refused = requests.get(url, headers=headers, timeout=30)
        assert refused.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in refused.text, name
        assert b"other user" not in refused.content
    expires = int(parse_qs(urlsplit(item["url"]).query)["X-Amz-Expires"][0])
    monkeypatch.setattr(s3_presigned_get, "clock", lambda: datetime.now(timezone.utc) + timedelta(seconds=expires + 5))
    late = requests.get(item["url"], headers={"If-Match": item["if_match"]}, timeout=30)
    assert late.status_code == 403 and "Request has expired" in late.text
    monkeypatch.undo()
    assert requests.get(item["url"], headers={"If-Match": item["if_match"]}, timeout=30).status_code == 200
    unsigned = requests.get(f"{urlsplit(item['url']).scheme}://{urlsplit(item['url']).netloc}/{bucket()}/{link.key}",
                            timeout=30)
    assert unsigned.status_code == 403  # no signature at all: a private bucket's object, as before


# ------------------------------------------------------------------------------------------- the Mini App's route
def test_the_dashboard_route_makes_a_link_for_the_users_draft_only(draft, telegram, monkeypatch):
    from dashboard_support import invoke
    from depu.bot import rental
    from depu.conversation import load
    from depu.dashboard import sessions

    token, _session = sessions.open_session(USER_ID)
    assert invoke("POST", "/dashboard/uploads", json_body={"file_name": "a.bin", "size": 10})["statusCode"] == 401
    refused = invoke("POST", "/dashboard/uploads", token=token, json_body={"file_name": "a.bin", "size": 10})
    assert refused["statusCode"] == 400 and "My own job" in refused["json"]["error"]

    from depu.bot import flows

    flows.begin(USER_ID, rental.RENT, "inputs", {"gpu_class": "cpu", "workload": "job", "command": "ls"})
    made = invoke("POST", "/dashboard/uploads", token=token, json_body={"file_name": "weights.pt", "size": 30 * MIB})
    assert made["statusCode"] == 201, made
    link = made["json"]
    held = load(USER_ID).data
    assert held["inputs"] == [{"name": "weights.pt", "upload": True, "size": 30 * MIB}]
    assert link["fields"]["key"] == f"uploads/{USER_ID}/{held['draft']}/weights.pt" and link["expires_in"] == 900
    assert post(link["url"], link["fields"], b"w" * 100).status_code == 204
    again = invoke("POST", "/dashboard/uploads", token=token, json_body={"file_name": "weights.pt", "size": 1})
    assert again["statusCode"] == 400 and "already has an input file" in again["json"]["error"]
    over = invoke("POST", "/dashboard/uploads", token=token, json_body={"file_name": "x.pt", "size": 3 * 1024 ** 3})
    assert over["statusCode"] == 400 and "2 GiB" in over["json"]["error"]


# ------------------------------------------------------------------------------------------- end to end
import test_rental_e2e as e2e  # noqa: E402

cloud, agents = e2e.cloud, e2e.agents

PROBE = ("python -c 'import hashlib, json, os; data = open(\"inputs/big.bin\", \"rb\").read(); "
         "print(json.dumps({\"size\": len(data), \"sha256\": hashlib.sha256(data).hexdigest()}))'")


@pytest.mark.e2e
def test_a_21_mib_document_comes_by_upload_link_and_reaches_the_jobs_sandbox(agents, tmp_path):
    from test_rental_e2e import finished

    from depu.jobs import service

    ensure_user(USER_ID, credits=5000)
    agent = agents("rig-uploads")
    agent.wait_registered()
    chat = new_chat()
    from depu.bot import rental

    rental.rent_gpu(command("rent_gpu"), chat)
    run(press(chat.button("CPU")), chat)
    run(press(chat.button("My own job")), chat)
    run(typed(PROBE), chat)
    run(press(chat.button("No packages")), chat)
    size = 21 * MIB + 123
    assert run(sent_document("big.bin", size, file_id="not-downloadable"), chat) == "document", chat.text
    assert "upload it yourself within 15 min" in chat.text and "2 GiB" in chat.text
    curl = html.unescape(re.search(r"<pre>(.*?)</pre>", chat.text, re.S).group(1))
    run(press(chat.button("Done")), chat)
    run(press(chat.button("1")), chat)
    run(press(chat.button("5 min")), chat)
    run(press(chat.button("Submit")), chat)
    assert "has not been uploaded yet" in chat.text and not service.user_jobs(USER_ID)  # nothing dispatched

    body = os.urandom(size)
    (tmp_path / "big.bin").write_bytes(body)
    subprocess.run(shlex.split(curl), cwd=tmp_path, check=True, timeout=120)  # the bot's one-line command
    run(press(chat.button("5 min")), chat)
    run(press(chat.button("Submit")), chat)
    [job] = service.user_jobs(USER_ID)
    assert job.input_sizes == [size]

    done = finished(job.job_id, 180)
    assert done.status == "succeeded", (done.error, done.logs_tail, agent.log_text()[-3000:])
    facts = json.loads(next(line for line in done.logs_tail if line.startswith("{")))
    assert facts == {"size": size, "sha256": hashlib.sha256(body).hexdigest()}
    assert "[setup] input big.bin ready" in done.logs_tail
    assert done.setup_started_at is not None and done.started_at >= done.setup_started_at  # the fetch: unbilled


# ------------------------------------------------------------------------------------------- the Mini App in Chromium
@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_the_mini_app_uploads_a_file_to_the_drafts_link_in_chromium(aws, tmp_path):
    """Real headless Chromium: the page's CSP lets it post to the bucket's origin and the bucket's CORS (from
    template.yaml, for the API's origin) lets it read S3's answer; the file lands at the draft's key."""
    import shutil
    from urllib.parse import quote

    from conftest import TEST_BOT_TOKEN
    from dashboard_support import telegram_user

    from depu.bot import flows, rental
    from depu.conversation import load
    from depu.dashboard import initdata
    from local.moto_server import free_port
    from local.provision import provision
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.template import LocalTemplate

    assert shutil.which("chromium") and shutil.which("node"), "chromium or node missing: run `make deps`"
    port = free_port()
    template = LocalTemplate(parameters={"PublicApiUrl": f"http://127.0.0.1:{port}"})
    provision(template, aws.endpoint, bot_token=TEST_BOT_TOKEN, webhook_secret="test-webhook-secret-0123456789")
    runtime = LocalRuntime(template, aws.endpoint, RuntimeOptions(port=port)).start()
    try:
        ensure_user(USER_ID, credits=5000)
        flows.begin(USER_ID, rental.RENT, "inputs", {"gpu_class": "cpu", "workload": "job", "command": "ls"})
        launch = initdata.build(telegram_user(USER_ID, "Grace"), TEST_BOT_TOKEN, auth_date=int(time.time()) - 5)
        body = os.urandom(3 * MIB + 7)
        scenario, result = tmp_path / "scenario.json", tmp_path / "result.json"
        scenario.write_text(json.dumps({
            "executablePath": shutil.which("chromium"), "fileName": "weights.pt",
            "fileBase64": base64.b64encode(body).decode(),
            "url": f"{runtime.url}/dashboard/app/?poll=1000#tgWebAppData={quote(launch, safe='')}&tgWebAppVersion=7.10"}))
        done = subprocess.run(["node", "tests/uploads_browser.mjs", str(scenario), str(result)], capture_output=True,
                              text=True, timeout=240, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert done.returncode == 0, done.stderr[-2000:]
        seen = json.loads(result.read_text())
    finally:
        runtime.stop()
    assert seen["ok"] and seen["status"].startswith("Uploaded weights.pt"), seen
    draft = load(USER_ID).data["draft"]
    assert stored(f"uploads/{USER_ID}/{draft}/weights.pt") == body
    posts = [line for line in seen["requests"] if line.startswith("POST ")]
    assert any(line.endswith("/dashboard/uploads") for line in posts) and any(aws.endpoint in line for line in posts)


# ------------------------------------------------------------------------------------------- outputs as links
def test_the_end_of_job_message_gives_output_links_with_their_expiry(aws):
    from dashboard_support import seed_running_job

    from depu.bot import job_text
    from depu.jobs import storage
    from depu.jobs.models import Job

    ensure_user(USER_ID)
    seed_running_job(USER_ID, "jout01")
    key = storage.artifact_prefix("jout01") + "outputs.zip"
    etag = storage.put(key, b"PK" + os.urandom(64))
    Job("jout01").update(actions=[Job.status.set("succeeded"), Job.artifacts.set([key]), Job.artifact_etags.set([etag]),
                                  Job.charged.set(1), Job.billed_seconds.set(5), Job.max_cost.set(9)])
    text = job_text.summary_text(Job.get("jout01"))
    assert "links work for up to 24 h" in text and "/jobs jout01" in text
    url = html.unescape(re.search(r'<a href="([^"]+)">outputs.zip</a>', text).group(1))
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["86400"]
    assert requests.get(url, timeout=30).content == stored(key)
