"""The dashboard Lambda end to end against moto: sign-in routes, per-user data, the page and its headers."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import pytest

from depu.dashboard import initdata, sessions, site
from tests.conftest import TEST_BOT_TOKEN
from tests.dashboard_support import gpu_metrics, invoke, seed_profile, seed_running_job, set_job_metrics, telegram_user

ALICE, BOB = 1001, 2002


def sign_in(user_id: int, first_name: str = "Ada") -> str:
    response = invoke("POST", "/dashboard/session",
                      json_body={"init_data": initdata.build(telegram_user(user_id, first_name), TEST_BOT_TOKEN)})
    assert response["statusCode"] == 201, response["body"]
    return response["json"]["token"]


def test_init_data_opens_a_session_that_reads_the_overview(aws):
    seed_profile(ALICE)
    response = invoke("POST", "/dashboard/session",
                      json_body={"init_data": initdata.build(telegram_user(ALICE), TEST_BOT_TOKEN)})
    assert response["statusCode"] == 201
    body = response["json"]
    assert body["user"] == {"id": ALICE, "first_name": "Ada", "username": f"user{ALICE}"}
    assert sessions.session_for(body["token"]).user_id == ALICE
    assert response["headers"]["Cache-Control"] == "no-store"

    overview = invoke("GET", "/dashboard/overview", token=body["token"])
    assert overview["statusCode"] == 200
    assert overview["json"]["user_id"] == ALICE
    assert overview["json"]["credits"]["state"] == "ok"
    assert overview["json"]["credits"]["available"] == 1000  # the starter grant, read from the profile


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: _tamper(initdata.build(telegram_user(ALICE), TEST_BOT_TOKEN)), "bad signature"),
        (lambda: initdata.build(telegram_user(ALICE), TEST_BOT_TOKEN, auth_date=1_000_000_000), "expired"),
        (lambda: initdata.build(telegram_user(ALICE), "42:other-bot"), "bad signature"),
    ],
    ids=["tampered", "expired", "other-bot"],
)
def test_untrustworthy_init_data_gets_no_session(aws, make, reason):
    response = invoke("POST", "/dashboard/session", json_body={"init_data": make()})
    assert response["statusCode"] == 401
    assert reason in response["json"]["error"]
    assert "token" not in response["json"]


def _tamper(data: str) -> str:
    fields = dict(parse_qsl(data))
    fields["user"] = json.dumps(telegram_user(BOB))
    return urlencode(fields)


@pytest.mark.parametrize("body", ["not json", "[]", "{}", json.dumps({"init_data": 5})])
def test_malformed_session_requests_get_a_clear_400(aws, body):
    response = invoke("POST", "/dashboard/session", json_body=body)
    assert response["statusCode"] == 400
    assert "init_data" in response["json"]["error"]


@pytest.mark.parametrize("token", [None, "forged-token", "Basic abc"])
def test_overview_needs_a_session(aws, token):
    response = invoke("GET", "/dashboard/overview", token=token)
    assert response["statusCode"] == 401
    assert "user_id" not in response["json"]


def test_a_user_sees_only_their_own_jobs_and_credits(aws):
    seed_profile(ALICE, "Alice")
    seed_profile(BOB, "Bob")
    seed_running_job(ALICE, "job-alice-1", gpu_metrics(87))
    seed_running_job(BOB, "job-bob-1", gpu_metrics(12))
    alice, bob = sign_in(ALICE), sign_in(BOB)

    # a user_id in the query is ignored: the session decides whose data this is
    seen_by_alice = invoke("GET", f"/dashboard/overview?user_id={BOB}", token=alice)
    seen_by_bob = invoke("GET", "/dashboard/overview", token=bob)
    assert [job["job_id"] for job in seen_by_alice["json"]["jobs"]["items"]] == ["job-alice-1"]
    assert [job["job_id"] for job in seen_by_bob["json"]["jobs"]["items"]] == ["job-bob-1"]
    assert "job-bob-1" not in seen_by_alice["body"] and "job-alice-1" not in seen_by_bob["body"]
    assert seen_by_alice["json"]["jobs"]["items"][0]["samples"][0]["util"] == 87
    assert seen_by_bob["json"]["jobs"]["items"][0]["samples"][0]["util"] == 12


def test_job_metrics_follow_the_agents_latest_heartbeat(aws):
    seed_profile(ALICE)
    seed_running_job(ALICE, "job-live", gpu_metrics(40, temp=55, power=180, used_mb=20480))
    token = sign_in(ALICE)
    first = invoke("GET", "/dashboard/overview", token=token)["json"]["jobs"]
    set_job_metrics("job-live", gpu_metrics(95, temp=71, power=390, used_mb=61440))
    second = invoke("GET", "/dashboard/overview", token=token)["json"]["jobs"]
    assert first["running"] == 1
    sample = first["items"][0]["samples"][-1]
    assert (sample["util"], sample["mem"], sample["temp"], sample["power"]) == (40, 25.0, 55, 180)
    sample = second["items"][0]["samples"][-1]
    assert (sample["util"], sample["mem"], sample["temp"], sample["power"]) == (95, 75.0, 71, 390)


def test_a_closed_session_reads_nothing(aws):
    token = sign_in(ALICE)
    assert invoke("DELETE", "/dashboard/session", token=token)["statusCode"] == 204
    assert invoke("GET", "/dashboard/overview", token=token)["statusCode"] == 401


def test_browser_login_link_redirects_then_redeems_once(aws):
    seed_profile(ALICE, "Alice")
    code = sessions.issue_login_code(ALICE)
    link = invoke("GET", f"/dashboard/login?code={code}")
    assert link["statusCode"] == 302
    assert link["headers"]["Location"] == f"app/#login={code}"  # the code travels in the fragment only

    first = invoke("POST", "/dashboard/session", json_body={"login_code": code})  # the GET did not burn it
    assert first["statusCode"] == 201 and first["json"]["user"]["id"] == ALICE
    assert first["json"]["user"]["first_name"] == "Alice"
    second = invoke("POST", "/dashboard/session", json_body={"login_code": code})
    assert second["statusCode"] == 401 and "already used" in second["json"]["error"]


def test_a_malformed_login_link_never_reaches_the_location_header(aws):
    link = invoke("GET", "/dashboard/login?code=abc%0D%0ASet-Cookie:x")
    assert link["headers"]["Location"] == "app/#login_error=1"


# ------------------------------------------------------------------------------------------- the page
def test_app_root_redirects_to_the_folder_so_relative_urls_work(aws):
    response = invoke("GET", "/dashboard/app")
    assert (response["statusCode"], response["headers"]["Location"]) == (302, "app/")


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/dashboard/app/", "text/html; charset=utf-8"),
        ("/dashboard/app/app.js", "text/javascript; charset=utf-8"),
        ("/dashboard/app/charts.js", "text/javascript; charset=utf-8"),
        ("/dashboard/app/app.css", "text/css; charset=utf-8"),
    ],
)
def test_page_files_are_served_with_a_strict_policy(aws, path, content_type):
    response = invoke("GET", path)
    assert response["statusCode"] == 200
    headers = response["headers"]
    assert headers["Content-Type"] == content_type
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("name", ["..%2Ftemplate.yaml", "missing.js", "app.py", ".env"])
def test_nothing_outside_the_site_is_served(aws, name):
    assert invoke("GET", f"/dashboard/app/{name}")["statusCode"] == 404


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_script = False
        self.attributes: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.attributes += [name for name, _ in attrs]
        if tag == "script":
            self.scripts.append(dict(attrs))
            self._in_script = True

    def handle_endtag(self, tag):
        self._in_script = False if tag == "script" else self._in_script

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline_script = True


def test_page_has_no_inline_code_and_loads_only_its_own_files():
    root = site.default_site_dir()
    parser = _Tags()
    parser.feed((root / "index.html").read_text())
    assert parser.scripts and all(script.get("src") for script in parser.scripts)
    assert not parser.inline_script
    assert not [name for name in parser.attributes if name == "style" or name.startswith("on")]
    for path in root.iterdir():
        text = path.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), f"{path.name} loads something from elsewhere"
        assert "innerHTML" not in text and "eval(" not in text, path.name


def test_deployed_function_serves_the_page_from_the_bucket(aws, monkeypatch, tmp_path):
    published = site.publish(Path(site.default_site_dir()))
    assert {"index.html", "app.js", "charts.js", "telegram.js", "app.css"} <= set(published)
    expected = (site.default_site_dir() / "telegram.js").read_text()
    monkeypatch.setenv("DASHBOARD_SITE_DIR", str(tmp_path / "not-packaged"))
    response = invoke("GET", "/dashboard/app/telegram.js")
    assert response["statusCode"] == 200
    assert response["body"] == expected
    assert invoke("GET", "/dashboard/app/missing.js")["statusCode"] == 404
