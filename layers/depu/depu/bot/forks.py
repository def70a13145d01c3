"""``/shadow_fork``: create, list, inspect, fund, impersonate, snapshot/revert, sync, auto-sync and delete
shadow forks. Every action goes through ``depu.forks.service``, which checks the fork is the sender's own.

Every fork has its own chain id (``depu.forks.chainids``); keeping mainnet's is an explicit choice made behind a
warning ("New fork with mainnet's chain id…", or ``/shadow_fork <block> keep-chain-id``).

Buttons are ``sf:1:<action>:<fork_id>[:<arg>]``. Steps that need typed input (a block number, an address and
amount, a snapshot id) are explicit conversation steps of the ``fork`` flow.
"""
from __future__ import annotations

import html
import time

from depu import conversation
from depu.bot import private
from depu.bot.basics import profile_of
from depu.bot.registry import Button, Chat, Incoming, Keyboard, callback, command, text
from depu.errors import UserError
from depu.forks import chainids, service
from depu.forks.models import ALIVE, Fork
from depu.profiles import profile_section

PREFIX = "sf"
FLOW = "fork"
KEEP_CHAIN_ID_WORDS = frozenset({"keep-chain-id", "mainnet-chain-id", "chainid=1", "chain-id=1"})


def _data(*parts: object) -> str:
    return conversation.encode(PREFIX, *parts)


def _label(fork: Fork) -> str:
    block = f"block {int(fork.base_block)}" if fork.base_block is not None else f"from {fork.block_requested}"
    return f"{fork.fork_id} · {fork.status} · {block}"


def menu(user_id: int) -> tuple[str, Keyboard]:
    forks = [fork for fork in service.list_forks(user_id) if fork.status in ALIVE]
    lines = ["<b>Shadow forks</b>: private copies of Ethereum mainnet you can change freely, gas-free, kept in step with mainnet.",
             f"You have {len(forks)} of {service.MAX_ALIVE_FORKS} live forks; each lives {service.FORK_LIFETIME_S // 3600} h."]
    keyboard: Keyboard = [[Button(_label(fork), data=_data("i", fork.fork_id))] for fork in forks]
    if len(forks) < service.MAX_ALIVE_FORKS:
        keyboard.append([Button("New fork at latest", data=_data("new", "latest")), Button("New fork at a block…", data=_data("new", "ask"))])
        keyboard.append([Button("New fork with mainnet's chain id…", data=_data("new", "mainnet"))])
    return "\n".join(lines), keyboard


@command("shadow_fork", "Shadow forks of Ethereum mainnet")
def shadow_fork(incoming: Incoming, chat: Chat) -> None:
    profile_of(incoming)
    if incoming.args:
        words = incoming.args.split()
        keep = any(word.lower() in KEEP_CHAIN_ID_WORDS for word in words)
        block = " ".join(word for word in words if word.lower() not in KEEP_CHAIN_ID_WORDS) or "latest"
        _create(incoming, chat, block, keep_mainnet_chain_id=keep)
        return
    body, keyboard = menu(incoming.user_id)
    _say(incoming, chat, body, keyboard)


def _say(incoming: Incoming, chat: Chat, text: str, buttons: Keyboard | None = None, hint: str = "") -> None:
    """Every fork answer is the user's alone (RPC URLs are bearer credentials, the rest is their fork's state):
    from a group it goes to the private chat (``depu.bot.private``)."""
    private.send(incoming, chat, text, buttons, resume="fork", closed_hint=hint)


def chain_id_line(fork: Fork) -> str:
    """The fork's chain id as the user should see it: wallets need it, and chain id 1 needs a warning."""
    if fork.chain_id is None:
        return "Chain id: assigned when the fork starts"
    if int(fork.chain_id) == chainids.MAINNET:
        return "Chain id: <b>1 (mainnet's)</b> ⚠️ transactions signed for this fork are valid on Ethereum mainnet"
    return f"Chain id: <code>{int(fork.chain_id)}</code> (this fork's own; add it to your wallet as a custom network)"


def _create(incoming: Incoming, chat: Chat, block: str, keep_mainnet_chain_id: bool = False) -> None:
    # the fork's notices (ready, synced, expiring) go to the user's private chat when asked for in a group
    notices_to = incoming.user_id if private.in_group(incoming) else incoming.chat_id
    created = service.create_fork(incoming.user_id, notices_to, block, keep_mainnet_chain_id=keep_mainnet_chain_id)
    warning = f"{service.MAINNET_CHAIN_ID_WARNING}\n\n" if keep_mainnet_chain_id else ""
    _say(
        incoming, chat,
        f"Creating shadow fork <b>{created.fork.fork_id}</b> from {html.escape(created.fork.block_requested)}. "
        "I will tell you when it is ready (usually a few seconds).\n"
        f"{chain_id_line(created.fork)}\n\n{warning}"
        f"RPC URL (keep it secret; it is shown only now):\n<code>{html.escape(created.rpc_url)}</code>",
        [[Button("Open fork", data=_data("i", created.fork.fork_id))]],
        hint=f"Your fork <b>{created.fork.fork_id}</b> is being created; there, open it and tap “New RPC URL” to get its URL.",
    )


def info_text(user_id: int, fork_id: str) -> tuple[str, Keyboard]:
    details = service.info(user_id, fork_id)
    fork = details.fork
    behind = details.blocks_behind
    left = max(0, int(fork.expires_at - time.time()))
    lines = [
        f"<b>Shadow fork {fork.fork_id}</b> — {fork.status}",
        f"Base block: {int(fork.base_block) if fork.base_block is not None else 'not yet'}"
        + (f" ({behind} blocks behind mainnet)" if behind is not None else ""),
        chain_id_line(fork),
        f"Journal: {details.journal_size} entries",
        f"Auto-sync: {'every ' + str(int(fork.sync_interval_s)) + ' s' if fork.auto_sync else 'off'}",
        f"Expires in: {left // 3600} h {left % 3600 // 60} min",
        "RPC URL: shown once at creation; “New RPC URL” replaces it.",
    ]
    if fork.conflict_count:
        lines.append(f"Last sync: {int(fork.conflict_count)} journal entries behaved differently.")
    if fork.last_sync_error:
        lines.append(f"Last sync failed: {html.escape(fork.last_sync_error)}")
    fid = fork.fork_id
    keyboard: Keyboard = []
    if fork.status in ALIVE:
        keyboard = [
            [Button("Fund an address", data=_data("fund", fid)), Button("Impersonate", data=_data("imp", fid))],
            [Button("Snapshot", data=_data("snap", fid)), Button("Revert…", data=_data("rev", fid))],
            [Button("Sync now", data=_data("sync", fid)),
             Button("Auto-sync off" if fork.auto_sync else "Auto-sync on", data=_data("auto", fid, "off" if fork.auto_sync else "on"))],
            [Button("New RPC URL", data=_data("url", fid)), Button("Delete", data=_data("del", fid))],
        ]
    keyboard.append([Button("All forks", data=_data("list"))])
    return "\n".join(lines), keyboard


_ASK = {
    "fund": ("await_fund", "Send the address to fund and the amount of ETH, e.g.\n<code>0xAb5801a7D398351b8bE11C439e05C5B3259aeC9B 10</code>"),
    "imp": ("await_impersonate", "Send the address to impersonate. Transactions from it (eth_sendTransaction) then need no key."),
    "rev": ("await_revert", "Send the snapshot id to revert to (e.g. <code>0x3</code>). Everything after it is dropped from the journal."),
}


@callback(PREFIX)
def fork_button(incoming: Incoming, chat: Chat) -> None:
    try:
        _, parts = conversation.decode(incoming.callback_data or "")
    except conversation.CallbackDataError:
        chat.answer_callback("This button is from an older version. Send /shadow_fork again.", alert=True)
        return
    action, args = (parts[0], parts[1:]) if parts else ("list", [])
    user = incoming.user_id
    if action == "list":
        chat.answer_callback()
        _say(incoming, chat, *menu(user))
    elif action == "new":
        if args and args[0] == "mainnet":
            chat.answer_callback()
            chat.reply(f"{service.MAINNET_CHAIN_ID_WARNING}\n\nCreate a fork at latest that keeps chain id 1 anyway?",
                       [[Button("Yes, keep chain id 1", data=_data("newmainnet")), Button("No, its own chain id", data=_data("new", "latest"))]])
        elif args and args[0] == "ask":
            profile_of(incoming)
            conversation.start(user, FLOW, "await_block")
            chat.answer_callback()
            _say(incoming, chat, "Send the mainnet block number to fork from.")
        else:
            chat.answer_callback()
            _create(incoming, chat, "latest")
    elif action == "newmainnet":
        chat.answer_callback()
        _create(incoming, chat, "latest", keep_mainnet_chain_id=True)
    elif action == "i" and args:
        chat.answer_callback()
        _say(incoming, chat, *info_text(user, args[0]))
    elif action in _ASK and args:
        service.owned(user, args[0])
        step, prompt = _ASK[action]
        profile_of(incoming)
        conversation.start(user, FLOW, step, {"fork_id": args[0]})
        chat.answer_callback()
        _say(incoming, chat, prompt)
    elif action == "snap" and args:
        snapshot_id = service.snapshot(user, args[0])
        chat.answer_callback()
        _say(incoming, chat, f"Snapshot <code>{html.escape(snapshot_id)}</code> taken on fork <b>{args[0]}</b>. Revert to it with “Revert…”.")
    elif action == "sync" and args:
        service.sync_now(user, args[0])
        chat.answer_callback("Sync started")
        _say(incoming, chat, f"Syncing fork <b>{args[0]}</b> onto mainnet's head; I will report the new base and any conflicts.")
    elif action == "auto" and len(args) == 2:
        fork = service.set_auto_sync(user, args[0], args[1] == "on")
        chat.answer_callback("Auto-sync " + ("on" if fork.auto_sync else "off"))
        _say(incoming, chat, *info_text(user, args[0]))
    elif action == "url" and args:
        url = service.rotate_url(user, args[0])
        chat.answer_callback()
        _say(incoming, chat, f"New RPC URL for fork <b>{args[0]}</b> (the old one no longer answers):\n<code>{html.escape(url)}</code>")
    elif action == "del" and args:
        service.owned(user, args[0])
        chat.answer_callback()
        _say(incoming, chat, f"Delete fork <b>{args[0]}</b>? Its state and journal are gone for good.",
                   [[Button("Yes, delete", data=_data("delok", args[0])), Button("Keep it", data=_data("i", args[0]))]])
    elif action == "delok" and args:
        service.delete_fork(user, args[0])
        chat.answer_callback("Deleting")
        _say(incoming, chat, f"Deleting fork <b>{args[0]}</b>; its RPC URL no longer answers.")
    else:
        chat.answer_callback("Unknown action. Send /shadow_fork.", alert=True)


@text
def fork_input(incoming: Incoming, chat: Chat) -> bool:
    """Typed answers to the fork flow's questions; False when no fork question is pending."""
    current = conversation.load(incoming.user_id)
    if current is None or current.flow != FLOW:
        return False
    words = incoming.text.split()
    fork_id = str(current.data.get("fork_id", ""))
    if current.step == "await_block":
        _create(incoming, chat, incoming.text)
    elif current.step == "await_fund":
        if len(words) != 2:
            raise UserError("Send two things: the address and the amount of ETH, e.g. <code>0xAb58…eC9B 10</code>.")
        balance = service.fund(incoming.user_id, fork_id, words[0], words[1])
        account = service.checksum_address(words[0])
        _say(incoming, chat, f"<code>{account}</code> now holds {balance / 10**18:,.6f} ETH on fork <b>{fork_id}</b>.")
    elif current.step == "await_impersonate":
        account = service.impersonate(incoming.user_id, fork_id, incoming.text)
        _say(incoming, chat, f"Fork <b>{fork_id}</b> now accepts eth_sendTransaction from <code>{account}</code> without its key.")
    elif current.step == "await_revert":
        reverted = service.revert(incoming.user_id, fork_id, incoming.text.strip())
        _say(incoming, chat, f"Fork <b>{fork_id}</b> reverted; the journal dropped everything after the snapshot."
                   if reverted else "No such snapshot on this fork (a snapshot can be reverted to once).")
    else:
        return False
    conversation.clear(incoming.user_id, FLOW)
    return True


@profile_section(30, "Shadow forks")
def forks_section(user_id: int) -> str:
    forks = [fork for fork in service.list_forks(user_id) if fork.status in ALIVE]
    if not forks:
        return "No shadow forks yet. /shadow_fork creates one."
    listed = ", ".join(f"{fork.fork_id} ({fork.status})" for fork in forks)
    return f"{len(forks)} of {service.MAX_ALIVE_FORKS} live: {listed}"
