"""``/api_keys`` (also from ``/profile``): create, list and revoke the API keys of the public API and the
``depu`` command. Everything goes through ``depu.apikeys.keys``, which stores only each key's hash.

A new key is shown once, in the private chat only (a key in a group would be every member's). Creating is a
short flow (``KEYS``): pick the scopes (toggle buttons), then the lifetime; the key is made in ``then``, after
the step's conditional write, so a double tap on the lifetime makes one key. The list's Revoke buttons are
stateless (``ANY``: the key id is on the button, and the domain checks it is the sender's).

Buttons are ``ak:1:<action>[:<arg>]``.
"""
from __future__ import annotations

import html
import time

from depu.apikeys import keys, scopes
from depu.bot.basics import profile_of
from depu.bot.flows import ANY, Flow, Next, Refuse, Turn, begin_step, button, end, go
from depu.bot.registry import Chat, Command, Feature, Incoming, Keyboard
from depu.bot.sections import Section

PREFIX = "ak"
FLOW = "api_keys"
LIFETIMES = (30, 90, 365)
SCOPE_WORDS = {scopes.JOBS: "GPU jobs", scopes.FORKS: "shadow forks", scopes.ANALYTICS: "analytics and exports",
               scopes.READ_ONLY: "read-only"}
PRIVATE_ONLY = ("API keys act as you, so I only show and make them in our private chat: send /api_keys there.")


def _when(stamp: int | None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(stamp)) if stamp else "never"


def menu(user_id: int) -> tuple[str, Keyboard]:
    listed = keys.list_keys(user_id)
    lines = ["<b>API keys</b>: for the <code>depu</code> command and your own code (the /v1 REST API). "
             "A key acts as you within its scopes; it is shown once, when it is made."]
    rows: Keyboard = []
    for info in listed:
        state = "expired" if info.expired else f"until {_when(info.expires_at)}"
        lines.append(f"• <code>{html.escape(info.hint)}</code> {html.escape(info.name)}: "
                     f"{', '.join(info.scopes)}; {state}; last used {_when(info.last_used_at)}")
        rows.append([KEYS.button(f"Revoke {info.hint} {info.name}"[:60], "rv", info.key_id)])
    if not listed:
        lines.append("You have none yet.")
    if len(listed) < keys.MAX_KEYS_PER_USER:
        rows.append([KEYS.button("New key", "new")])
    return "\n".join(lines), rows


def api_keys(incoming: Incoming, chat: Chat) -> None:
    if incoming.chat_type != "private":
        chat.reply(PRIVATE_ONLY)
        return
    profile_of(incoming)
    text, rows = menu(incoming.user_id)
    chat.reply(text, rows)


def _scopes_screen(turn: Turn) -> None:
    chosen = list(turn.data.get("scopes") or [])
    rows: Keyboard = [[KEYS.button(("✅ " if scope in chosen else "▫️ ") + SCOPE_WORDS[scope], "t", scope)]
                      for scope in scopes.ALL]
    rows.append([KEYS.button(f"{days} days", "days", days) for days in LIFETIMES])
    rows.append([KEYS.button("Cancel", "x")])
    turn.show("<b>New API key</b>: what may it do? Tap to switch a scope on or off, then pick how long it lives.\n"
              "<i>read-only</i> lets it look but not submit, create or delete anything.", rows)


def new_key(turn: Turn) -> Next:
    if turn.incoming.chat_type != "private":
        raise Refuse(PRIVATE_ONLY, alert=True)
    return begin_step("scopes", {"scopes": list(scopes.AREAS)}, then=_scopes_screen)


def toggle(turn: Turn) -> Next:
    scope = turn.arg(0)
    if scope not in scopes.ALL:
        raise Refuse("That scope is not on offer.")
    chosen = set(turn.data.get("scopes") or [])
    chosen ^= {scope}
    return go("scopes", {"scopes": [s for s in scopes.ALL if s in chosen]}, then=_scopes_screen)


def lifetime(turn: Turn) -> Next:
    days = turn.int_arg(0, allowed=LIFETIMES)
    try:
        scopes.normalise(list(turn.data.get("scopes") or []))
    except scopes.BadScopes as error:
        raise Refuse(str(error), alert=True) from None
    return go("made", {"days": days}, then=_make)


def _make(turn: Turn) -> None:
    """Runs once, after the write to step "made" won: a double tap makes one key."""
    try:
        key, info = keys.create(turn.user_id, f"chat {time.strftime('%Y-%m-%d', time.gmtime())}",
                                turn.data.get("scopes"), int(turn.data["days"]))
    except keys.KeyRequestError as error:
        turn.finish()
        turn.show(html.escape(str(error)), [[KEYS.button("Back to keys", "list")]])
        return
    turn.finish()
    turn.show(f"API key <code>{html.escape(info.key_id)}</code> made: {', '.join(info.scopes)}, until "
              f"{_when(info.expires_at)}. It follows in the next message, this once only.",
              [[KEYS.button("Back to keys", "list")]])
    turn.reply(f"Your new API key, shown this once only:\n<code>{html.escape(key)}</code>\n\nUse it with <code>depu login</code>, or as "
               "<code>Authorization: Bearer …</code>. Keep it secret: it acts as you. Delete this message once it "
               "is stored; if it leaks, revoke it in /api_keys.")


def revoke(turn: Turn) -> None:
    try:
        info = keys.revoke(turn.user_id, turn.arg(0))
    except keys.KeyRequestError:
        raise Refuse("That key is already gone.") from None
    text, rows = menu(turn.user_id)
    turn.show(f"Revoked <code>{html.escape(info.hint)}</code> {html.escape(info.name)}: it stops working now.\n\n"
              + text, rows)


def show_list(turn: Turn) -> None:
    text, rows = menu(turn.user_id)
    turn.show(text, rows)


def cancel(turn: Turn) -> Next:
    return end(then=show_list)


def keys_section(user_id: int) -> str:
    listed = keys.list_keys(user_id)
    if not listed:
        return "None. /api_keys makes one for the <code>depu</code> command and your own code."
    names = ", ".join(html.escape(info.name) for info in listed[:5])
    return f"{len(listed)} ({names}). /api_keys to make or revoke one."


KEYS = Flow(
    name=FLOW, prefix=PREFIX, restart="/api_keys",
    steps={
        (ANY, button("list")): show_list,
        (ANY, button("new")): new_key,
        (ANY, button("rv")): revoke,
        (ANY, button("x")): cancel,
        ("scopes", button("t")): toggle,
        ("scopes", button("days")): lifetime,
    },
)

FEATURE = Feature(
    "api_keys",
    commands=(Command("api_keys", "API keys for the depu command and your code", api_keys),),
    flows=(KEYS,),
    sections=(Section(70, "API keys", keys_section),),
)
