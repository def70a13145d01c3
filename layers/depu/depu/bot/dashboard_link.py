"""``/webapp``: open the live dashboard, as a Telegram Mini App or in any browser.

(``/dashboard`` is the analytics feature's chart command, so the live web dashboard has its own name.)

Inside Telegram the ``web_app`` button opens the page with Telegram's signed launch data, which is all the
sign-in it needs. For a browser elsewhere the bot also gives a one-time login link (5 minutes, single use,
stored hashed). The link signs in as the user who asked, so it is only ever sent in a private chat: asked for
in a group, it goes to the user's private chat (``depu.bot.private``), since anyone in the group could tap it.
"""
from __future__ import annotations

from depu.bot import private
from depu.bot.registry import Button, Chat, Command, Feature, Incoming
from depu.config import get_settings
from depu.dashboard import sessions


def dashboard_url() -> str:
    return f"{get_settings().public_api_url}/dashboard/app/"


def login_url(code: str) -> str:
    return f"{get_settings().public_api_url}/dashboard/login?code={code}"


def open_dashboard(incoming: Incoming, chat: Chat) -> None:
    rows: list[list[Button]] = []
    lines = ["<b>Live dashboard</b>: your GPU jobs with live metrics, forks, watched addresses, credits."]
    if dashboard_url().startswith("https://"):
        rows.append([Button("Open dashboard", web_app_url=dashboard_url())])
    else:
        lines.append("(Telegram opens Mini Apps only from https addresses; use the browser link here.)")
    code = sessions.issue_login_code(incoming.user_id)
    rows.append([Button("Open in a browser (one-time link)", url=login_url(code))])
    minutes = sessions.LOGIN_TTL // 60
    lines.append(f"The browser link works once, within {minutes} minutes. Do not share it: it signs in as you.")
    # from a group both go to the private chat: the link signs in as the user, and Mini App buttons work there only
    if private.send(incoming, chat, "\n".join(lines), rows, resume="webapp") is None and private.in_group(incoming):
        sessions.revoke_login_code(code)  # it reached no one


FEATURE = Feature("dashboard_link", commands=(Command("webapp", "Open the live dashboard", open_dashboard),))
