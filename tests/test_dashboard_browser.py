"""The dashboard in real headless Chromium (Debian's), against the local stack's API runtime and moto.

Chromium and playwright-core are part of the project's setup (``make deps`` runs scripts/install_browser.sh);
the test installs nothing and never skips: without them it fails, saying what to run. Playwright (Node) drives a phone-sized page (390x844) through
the scenarios below; the page is served and answered by the real dashboard Lambda, routed from template.yaml
by ``local.runtime``. Screenshots land in ``.local/screenshots/``.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from depu.dashboard import initdata, sessions
from depu.forks import chainids
from local.moto_server import free_port
from tests.conftest import TEST_BOT_TOKEN
from tests.dashboard_support import (
    gpu_metrics,
    seed_chain,
    seed_fork,
    seed_profile,
    seed_running_job,
    seed_watch_with_flows,
    set_job_metrics,
    telegram_user,
)

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / ".local" / "screenshots"
DRIVER = ROOT / "tests" / "dashboard_browser.mjs"
USER_ID, OTHER_ID = 5150, 6160
THEME = {"bg_color": "#0f1b2d", "text_color": "#f0f4f8", "hint_color": "#7d8fa3", "button_color": "#e0528a",
         "button_text_color": "#ffffff", "secondary_bg_color": "#1b2a40"}
LIVE_UTILISATION = [41, 55, 62, 70, 78, 86, 90, 93]  # what the "agent" reports while the page is open; 93 last

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def browser_ready():
    missing = [what for what, there in (("chromium", shutil.which("chromium")), ("node", shutil.which("node")),
                                        ("playwright-core", (ROOT / "node_modules" / "playwright-core").is_dir()))
               if not there]
    assert not missing, f"{', '.join(missing)} missing: run `make deps` (scripts/install_browser.sh)"


@pytest.fixture
def local_api(aws):
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.template import LocalTemplate

    runtime = LocalRuntime(LocalTemplate(), aws.endpoint, RuntimeOptions(port=free_port())).start()
    try:
        yield runtime.url
    finally:
        runtime.stop()


def launch_url(base: str, init_data: str, theme: dict | None = None, poll_ms: int = 1000) -> str:
    """The Mini App's URL as Telegram opens it: launch data and theme in the fragment, the poll period in the query."""
    fragment = f"tgWebAppData={quote(init_data, safe='')}&tgWebAppVersion=7.10&tgWebAppPlatform=android"
    if theme:
        fragment += "&tgWebAppThemeParams=" + quote(json.dumps(theme), safe="")
    return f"{base}/dashboard/app/?poll={poll_ms}#{fragment}"


def drive(tmp_path: Path, scenarios: list[dict]) -> dict[str, dict]:
    scenario_file, result_file = tmp_path / "scenarios.json", tmp_path / "results.json"
    scenario_file.write_text(json.dumps({"executablePath": shutil.which("chromium") or "/usr/bin/chromium",
                                         "scenarios": scenarios}))
    done = subprocess.run(["node", str(DRIVER), str(scenario_file), str(result_file)], cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    return {result["name"]: result for result in json.loads(result_file.read_text())}


def agent_heartbeats(job_id: str, stop: threading.Event) -> threading.Thread:
    """Change the job's GPU metrics the way agent heartbeats do, a bounded number of times."""

    def beat() -> None:
        for util in LIVE_UTILISATION:
            if stop.wait(1.0):
                return
            set_job_metrics(job_id, gpu_metrics(util, temp=50 + util // 4, power=150 + util * 2))

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    return thread


def test_dashboard_in_headless_chromium(browser_ready, local_api, tmp_path):
    seed_profile(USER_ID, "Grace")
    seed_profile(OTHER_ID, "Mallory")
    seed_running_job(USER_ID, "job-grace-live", gpu_metrics(30, temp=52, power=160))
    seed_running_job(OTHER_ID, "job-mallory-secret", gpu_metrics(99))
    now = int(time.time())
    seed_chain(head=21_000_030, blocks=20, now=now)
    seed_fork(USER_ID, "fork-grace-1", base_block=21_000_000)
    seed_fork(USER_ID, "fork-grace-2", base_block=21_000_024)
    seed_watch_with_flows(USER_ID, "0x" + "5a" * 20, received_wei=4 * 10**18, sent_wei=15 * 10**17,
                          block=21_000_029, now=now)
    valid = initdata.build(telegram_user(USER_ID, "Grace"), TEST_BOT_TOKEN, auth_date=now - 5)
    tampered = initdata.build(telegram_user(USER_ID, "Grace"), TEST_BOT_TOKEN, auth_date=now - 5).replace(
        quote(f'"id":{USER_ID}', safe=""), quote(f'"id":{OTHER_ID}', safe=""))
    assert tampered != valid  # the tamper really changed the signed user
    expired = initdata.build(telegram_user(USER_ID, "Grace"), TEST_BOT_TOKEN, auth_date=now - 2 * 3600)
    login_code = sessions.issue_login_code(USER_ID)
    login_link = f"{local_api}/dashboard/login?code={login_code}"
    injected = initdata.build(telegram_user(USER_ID, "Grace"), TEST_BOT_TOKEN, auth_date=now - 5)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    phone_shot = SCREENSHOTS / "dashboard-phone.png"
    refused_shot = SCREENSHOTS / "dashboard-refused.png"
    for shot in (phone_shot, refused_shot):
        shot.unlink(missing_ok=True)

    stop = threading.Event()
    heartbeats = agent_heartbeats("job-grace-live", stop)
    try:
        seen = drive(tmp_path, [
            {"name": "telegram", "url": launch_url(local_api, valid, THEME), "minPolls": 3, "minPoints": 3,
             "legend": f"GPU {LIVE_UTILISATION[-1]}%", "screenshot": str(phone_shot), "timeoutMs": 30000},
            {"name": "tampered", "url": launch_url(local_api, tampered), "waitFor": "error",
             "screenshot": str(refused_shot)},
            {"name": "expired", "url": launch_url(local_api, expired), "waitFor": "error"},
            {"name": "login-link", "url": login_link, "makeKey": {"name": "from-browser", "untick": ["forks"]}},
            {"name": "login-link-again", "url": login_link, "waitFor": "error"},
            {"name": "injected-webapp", "url": f"{local_api}/dashboard/app/?poll=1000",
             "injectTelegram": {"initData": injected, "themeParams": {"bg_color": "#123456"}}},
        ])
    finally:
        stop.set()
        heartbeats.join(timeout=10)

    # valid launch data signs in; the page shows this user's live job and credits, in Telegram's colours
    telegram = seen["telegram"]
    assert telegram["ok"], telegram
    assert telegram["state"] == "ready" and telegram["who"] == "Grace"
    assert telegram["jobs"] == ["job-grace-live"]  # never Mallory's job
    assert "1,000" in telegram["credits"] or "1000" in telegram["credits"]
    assert f"GPU {LIVE_UTILISATION[-1]}%" in telegram["legends"]  # the latest heartbeat reached the page
    assert "Memory 50%" in telegram["legends"]
    assert telegram["theme"] == "telegram"
    assert telegram["background"] == "rgb(15, 27, 45)"  # THEME bg_color
    assert telegram["cardBackground"] == "rgb(27, 42, 64)"  # THEME secondary_bg_color

    # the charts were drawn from the live data: several points per line, and each series' colour on canvas
    usage = next(c for c in telegram["canvases"] if c["chart"] == "usage")
    thermal = next(c for c in telegram["canvases"] if c["chart"] == "thermal")
    assert usage["points"] >= 6 and thermal["points"] >= 6  # >= 3 samples x 2 series, accumulated by polling
    assert usage["s1"] > 50 and usage["s2"] > 50, usage  # GPU utilisation and memory lines
    assert thermal["s3"] > 50 and thermal["s4"] > 50, thermal  # temperature and power lines
    for canvas, keys in ((usage, ("s1", "s2")), (thermal, ("s3", "s4"))):
        assert all(canvas[key + "Span"] > 0.5 for key in keys), canvas  # lines run across the time axis
    assert usage["width"] >= 600  # sized for the device pixel ratio (2x a ~340 px wide card)

    # forks' lag, the watched address's flows and the chain's activity are drawn as bars
    by_id = {canvas["id"]: canvas for canvas in telegram["canvases"] if canvas["id"]}
    assert by_id["forks-chart"]["points"] == 2 and by_id["forks-chart"]["s1"] > 50
    for fork_id in ("fork-grace-1", "fork-grace-2"):  # each fork's own chain id, as wallets need it
        assert f"chain id {chainids.for_fork(fork_id)}" in telegram["forks"], telegram["forks"]
    assert by_id["watches-chart"]["points"] == 2
    assert by_id["watches-chart"]["s2"] > 50 and by_id["watches-chart"]["s4"] > 50  # in and out bars
    assert by_id["chain-chart"]["points"] == 20 and by_id["chain-chart"]["s1"] > 50

    # usable on a phone: nothing wider than the 390 px viewport, no errors, nothing fetched from elsewhere
    assert telegram["viewportWidth"] == 390 and telegram["scrollWidth"] <= 390
    assert telegram["consoleErrors"] == []
    for result in seen.values():
        assert all(url.startswith(local_api + "/dashboard/") for url in result["requests"]), result["requests"]

    # tampered and expired launch data are refused, and the page says why
    assert seen["tampered"]["state"] == "error" and "bad signature" in seen["tampered"]["error"]
    assert seen["tampered"]["jobs"] == []
    assert seen["expired"]["state"] == "error" and "expired" in seen["expired"]["error"]

    # outside Telegram, the bot's one-time link signs in once; the code is wiped from the address bar
    assert seen["login-link"]["state"] == "ready" and seen["login-link"]["jobs"] == ["job-grace-live"]
    assert "login=" not in seen["login-link"]["hash"]
    # the API keys card makes a key (shown once, listed by its hint only) and revokes it
    made = seen["login-link"]
    assert made["newKey"].startswith("dpk_") and made["newKey"] not in made["keysListed"]
    assert "from-browser" in made["keysListed"] and "jobs, analytics" in made["keysListed"]
    assert made["keysAfterRevoke"] == "None yet."
    assert seen["login-link-again"]["state"] == "error"
    assert "already used" in seen["login-link-again"]["error"]

    # when Telegram's own script injected window.Telegram.WebApp, its initData and theme are used
    injected_seen = seen["injected-webapp"]
    assert injected_seen["state"] == "ready" and injected_seen["telegramReady"]
    assert injected_seen["background"] == "rgb(18, 52, 86)"

    assert phone_shot.stat().st_size > 10_000 and refused_shot.stat().st_size > 5_000


def test_bot_link_opens_the_dashboard_in_a_browser(browser_ready, aws, tmp_path):
    """The whole path a browser user takes, on the local stack: /webapp in the chat (Telegram stand-in ->
    webhook function -> the bot's handler) gives a one-time link; Chromium opens it and signs in once."""
    from depu.telegram.client import BotApi, bot_api
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.telegram_standin import LocalUser, TelegramStandIn
    from local.template import LocalTemplate
    from tests.conftest import TEST_WEBHOOK_SECRET

    standin = TelegramStandIn(TEST_BOT_TOKEN, port=0).start()
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    runtime = LocalRuntime(LocalTemplate(), aws.endpoint, RuntimeOptions(
        port=port, extra_environment={"TELEGRAM_API_BASE": standin.api_base, "PUBLIC_API_URL": api_url})).start()
    bot_api.cache_clear()
    try:
        BotApi(token=TEST_BOT_TOKEN, base_url=standin.api_base).set_webhook(
            f"{api_url}/telegram/webhook", TEST_WEBHOOK_SECRET)
        user = LocalUser(USER_ID, first_name="Grace")
        assert standin.send_user_message(user, text="/start").status == 200
        assert standin.send_user_message(user, text="/webapp").status == 200
        reply = standin.messages(USER_ID)[-1]
        links = [button["url"] for row in reply.buttons for button in row if "url" in button]
        assert len(links) == 1 and links[0].startswith(f"{api_url}/dashboard/login?code="), reply.buttons
        assert "works once" in reply.text

        seen = drive(tmp_path, [
            {"name": "from-bot", "url": links[0], "screenshot": str(SCREENSHOTS / "dashboard-from-bot.png")},
            {"name": "from-bot-again", "url": links[0], "waitFor": "error"},
        ])
    finally:
        runtime.stop()
        standin.stop()
        bot_api.cache_clear()

    assert seen["from-bot"]["state"] == "ready" and seen["from-bot"]["who"] == "Grace"
    assert seen["from-bot"]["credits"].startswith("1000")  # /start's starter credits, read back live
    assert "already used" in seen["from-bot-again"]["error"]
