"""``/start``, ``/help``, ``/profile`` and the onboarding menu buttons.

``/start`` is where a user's profile (and their one-time starter credits) is created; it is safe to send
any number of times. The menu buttons (the ``menu`` flow: one stateless entry per target) open the other
features through the registry, so this module does not import them and a feature that is not deployed yet
says so instead of failing.
"""
from __future__ import annotations

import dataclasses
import html
import re

from depu import conversation, credits
from depu.bot.flows import ANY, Flow, Turn, button
from depu.bot.registry import Button, Chat, Command, Feature, Incoming, Keyboard, registry
from depu.bot.sections import Section, render_sections
from depu.config import get_settings
from depu.profiles import Profile, ensure_profile, get_profile, identity_changed, record_start, refresh_identity

MENU_PREFIX = "menu"

# What each onboarding button opens: the first of these commands that a feature registered.
MENU_TARGETS: dict[str, tuple[str, ...]] = {
    "rent": ("rent_gpu", "rent"),
    "fork": ("fork", "forks", "shadow_fork", "new_fork"),
    "analytics": ("analytics", "dashboard", "stats"),
    "profile": ("profile",),
    "help": ("help",),
}
_COMING_SOON = {
    "rent": "Renting GPUs",
    "fork": "Shadow forks",
    "analytics": "Chain analytics",
}

# Telegram deep-link payloads are 1-64 characters of A-Z, a-z, 0-9, _ and -.
_REFERRAL = re.compile(r"^ref_([A-Za-z0-9_-]{1,60})$")


def format_credits(amount: int) -> str:
    """``1,250 credits ($1.25)``: 1 credit is 0.001 USD."""
    amount = int(amount)
    unit = "credit" if amount == 1 else "credits"
    usd = f"{amount / 1000:,.3f}"
    if usd.endswith("0"):  # $1.25 and $0.001, not $1.250
        usd = usd[:-1]
    return f"{amount:,} {unit} (${usd})"


def menu_keyboard() -> Keyboard:
    return [
        [
            Button("Rent a GPU", data=conversation.encode(MENU_PREFIX, "rent")),
            Button("Shadow fork", data=conversation.encode(MENU_PREFIX, "fork")),
        ],
        [
            Button("Analytics", data=conversation.encode(MENU_PREFIX, "analytics")),
            Button("Profile", data=conversation.encode(MENU_PREFIX, "profile")),
        ],
    ]


def profile_of(incoming: Incoming) -> Profile:
    """The sender's profile, created (with starter credits) if they reached us without /start, with the
    name Telegram reports now. One read when nothing changed, so any handler can afford to call it."""
    identity = (incoming.first_name, incoming.username, incoming.language_code)
    profile = get_profile(incoming.user_id)
    if profile is None:
        return ensure_profile(incoming.user_id, *identity)[0]
    if identity_changed(profile, *identity):
        return refresh_identity(incoming.user_id, *identity)
    return profile


def start(incoming: Incoming, chat: Chat) -> None:
    profile, created = ensure_profile(incoming.user_id, incoming.first_name, incoming.username, incoming.language_code)
    payload = incoming.args.strip()
    referral = _REFERRAL.match(payload)
    own_link = referral is not None and referral.group(1) == str(incoming.user_id)
    record_start(incoming.user_id, payload if referral and not own_link else None)
    from depu.bot import private

    if private.resume(incoming, chat):  # a deep link from a group: answer what was asked there, here
        return

    name = html.escape(incoming.first_name or profile.first_name or "there")
    lines = [f"<b>Welcome{' back' if not created else ''} to DePU, {name}!</b>", ""]
    lines += [
        "Here is what I can do:",
        "1. <b>Rent a GPU</b>: send a Python script, it runs on a provider's GPU and you pay only for the "
        "seconds it uses. Providers earn credits by running our agent on their machines.",
        "2. <b>Shadow forks</b>: a private copy of Ethereum mainnet at any block, to try transactions "
        "safely before sending them for real.",
        "3. <b>Analytics</b>: chain statistics, charts, watched addresses and data exports.",
        "",
    ]
    starter = get_settings().starter_credits
    if created and starter > 0:
        lines.append(f"You received {format_credits(starter)} to try things out.")
    lines.append(f"Your balance: {format_credits(profile.credits)}.")
    if payload and not referral:
        lines.append("(I didn't recognise the link you followed, so I ignored it.)")
    elif own_link:
        lines.append("(That is your own invite link: share it with friends instead.)")
    lines.append("Pick one below, or send /help for every command.")
    chat.reply("\n".join(lines), menu_keyboard())


def help_command(incoming: Incoming, chat: Chat) -> None:
    lines = ["<b>DePU commands</b>"]
    for entry in sorted(registry.menu(), key=lambda entry: entry.name):
        lines.append(f"/{entry.name}: {html.escape(entry.description)}")
    lines += ["", "Credits: 1 credit = $0.001. Jobs reserve credits up front and return what they don't use."]
    chat.reply("\n".join(lines), menu_keyboard())


def profile_command(incoming: Incoming, chat: Chat) -> None:
    if incoming.chat_type != "private":
        # Balances and activity are the user's own business: never shown to a whole group.
        bot = get_settings().bot_username
        chat.reply(
            "Your profile shows your credits and activity, so I only show it in our private chat: "
            "send /profile there.",
            [[Button("Open a private chat", url=f"https://t.me/{bot}")]],
        )
        return
    profile = profile_of(incoming)
    chat.reply(render_profile(profile))


def render_profile(profile: Profile) -> str:
    name = html.escape(profile.first_name or "(no name)")
    if profile.username:
        name += f" (@{html.escape(profile.username)})"
    since = profile.created_at.strftime("%Y-%m-%d") if profile.created_at else "today"
    lines = [
        "<b>Your profile</b>",
        f"Name: {name}",
        f"Telegram id: <code>{int(profile.user_id)}</code>",
        f"Member since: {since}",
        "",
        "<b>Credits</b>",
        f"Available: {format_credits(profile.credits or 0)}",
        f"Held for running jobs: {format_credits(profile.held or 0)}",
        f"Earned as a provider: {format_credits(profile.earned or 0)}",
    ]
    for title, body in render_sections(int(profile.user_id)):
        lines += ["", f"<b>{html.escape(title)}</b>", body]
    return "\n".join(lines)


_KIND_WORDS = {
    "grant": "+{amount}",
    "hold": "reserved {amount}",
    "settle": "charged {amount}",
    "release": "returned {amount}",
}


def credit_activity(user_id: int) -> str:
    entries = credits.history(user_id, limit=5)
    if not entries:
        return "No credit activity yet."
    lines = []
    for entry in entries:
        what = _KIND_WORDS.get(entry.kind, entry.kind + " {amount}").format(amount=f"{int(entry.amount):,}")
        why = entry.reason or (f"job {entry.job_id or entry.hold_id}" if entry.hold_id else "")
        lines.append(f"{entry.created_at:%Y-%m-%d %H:%M} {what} {html.escape(why)}".rstrip())
    return "\n".join(lines)


def open_target(turn: Turn) -> None:
    """A menu button: the feature's entry command runs as if the user had typed it."""
    incoming, chat = turn.incoming, turn.chat
    target = turn.action
    entry = next((registry.commands[name] for name in MENU_TARGETS[target] if name in registry.commands), None)
    if entry is None:
        feature = _COMING_SOON.get(target, target)
        chat.answer_callback(f"{feature}: coming soon.")
        chat.reply(f"<b>{html.escape(feature)}</b> is coming soon. Send /help to see what works today.")
        return
    chat.answer_callback()
    as_command = dataclasses.replace(
        incoming,
        command=entry.name,
        args="",
        text=f"/{entry.name}",
        callback_id=None,
        callback_data=None,
    )
    entry.handler(as_command, chat)


MENU = Flow(name="menu", prefix=MENU_PREFIX, restart="/start",
            steps={(ANY, button(target)): open_target for target in MENU_TARGETS})

FEATURE = Feature(
    "basics",
    commands=(
        Command("start", "Welcome, starter credits and the main menu", start),
        Command("help", "List every command", help_command),
        Command("profile", "Your identity, credits and activity", profile_command),
    ),
    flows=(MENU,),
    sections=(Section(90, "Recent credit activity", credit_activity),),
)
