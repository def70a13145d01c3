"""``/shadow_fork``: create, list, inspect, fund, impersonate, snapshot/revert, sync, auto-sync and delete
shadow forks. Every action goes through ``depu.forks.service``, which checks the fork is the sender's own.

Every fork has its own chain id (``depu.forks.chainids``); keeping mainnet's is an explicit choice made behind a
warning ("New fork with mainnet's chain id…", or ``/shadow_fork <block> keep-chain-id``).

Buttons are ``sf:1:<action>:<fork_id>[:<arg>]``; the table ``FORKS`` (``depu.bot.flows``) names what each
does. The buttons are stateless (``ANY``: the fork id is on the button, and the service checks it is the
sender's); the inputs a button cannot carry (a block number, an address and amount, a snapshot id) are typed
at explicit steps of the ``fork`` flow, which a button begins.
"""
from __future__ import annotations

import html
import time

from depu import conversation
from depu.bot import flows, private
from depu.bot.basics import profile_of
from depu.bot.flows import ANY, TEXT, Flow, Next, Turn, button
from depu.bot.registry import Button, Chat, Command, Feature, Incoming, Keyboard
from depu.bot.sections import Section
from depu.errors import UserError
from depu.forks import chainids, service
from depu.forks.models import ALIVE, Fork

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


def _say_turn(turn: Turn, text: str, buttons: Keyboard | None = None) -> None:
    _say(turn.incoming, turn.chat, text, buttons)


def show_list(turn: Turn) -> None:
    _say_turn(turn, *menu(turn.user_id))


def new_fork(turn: Turn) -> Next | None:
    """``new:latest`` creates one; ``new:ask`` asks for a block (step ``await_block``); ``new:mainnet`` warns
    before a fork keeps chain id 1."""
    how = turn.args[0] if turn.args else "latest"
    if how == "mainnet":
        turn.reply(f"{service.MAINNET_CHAIN_ID_WARNING}\n\nCreate a fork at latest that keeps chain id 1 anyway?",
                   [[Button("Yes, keep chain id 1", data=_data("newmainnet")), Button("No, its own chain id", data=_data("new", "latest"))]])
        return None
    if how == "ask":
        profile_of(turn.incoming)
        return flows.begin_step("await_block", then=lambda turn: _say_turn(turn, "Send the mainnet block number to fork from."))
    _create(turn.incoming, turn.chat, "latest")
    return None


def new_mainnet_fork(turn: Turn) -> None:
    _create(turn.incoming, turn.chat, "latest", keep_mainnet_chain_id=True)


def open_fork(turn: Turn) -> None:
    _say_turn(turn, *info_text(turn.user_id, turn.arg(0)))


def _ask(step: str, prompt: str):  # noqa: ANN202 - a flows.Handler
    """A button that asks for typed input about one fork: the flow begins at ``step``, remembering the fork."""
    def ask(turn: Turn) -> Next:
        fork_id = turn.arg(0)
        service.owned(turn.user_id, fork_id)
        profile_of(turn.incoming)
        return flows.begin_step(step, {"fork_id": fork_id}, then=lambda turn: _say_turn(turn, prompt))

    return ask


def snapshot(turn: Turn) -> None:
    fork_id = turn.arg(0)
    snapshot_id = service.snapshot(turn.user_id, fork_id)
    _say_turn(turn, f"Snapshot <code>{html.escape(snapshot_id)}</code> taken on fork <b>{fork_id}</b>. Revert to it with “Revert…”.")


def sync_now(turn: Turn) -> None:
    fork_id = turn.arg(0)
    service.sync_now(turn.user_id, fork_id)
    turn.answer("Sync started")
    _say_turn(turn, f"Syncing fork <b>{fork_id}</b> onto mainnet's head; I will report the new base and any conflicts.")


def auto_sync(turn: Turn) -> None:
    fork_id, wanted = turn.arg(0), turn.arg(1)
    fork = service.set_auto_sync(turn.user_id, fork_id, wanted == "on")
    turn.answer("Auto-sync " + ("on" if fork.auto_sync else "off"))
    _say_turn(turn, *info_text(turn.user_id, fork_id))


def new_url(turn: Turn) -> None:
    fork_id = turn.arg(0)
    url = service.rotate_url(turn.user_id, fork_id)
    _say_turn(turn, f"New RPC URL for fork <b>{fork_id}</b> (the old one no longer answers):\n<code>{html.escape(url)}</code>")


def ask_delete(turn: Turn) -> None:
    fork_id = turn.arg(0)
    service.owned(turn.user_id, fork_id)
    _say_turn(turn, f"Delete fork <b>{fork_id}</b>? Its state and journal are gone for good.",
              [[Button("Yes, delete", data=_data("delok", fork_id)), Button("Keep it", data=_data("i", fork_id))]])


def delete(turn: Turn) -> None:
    fork_id = turn.arg(0)
    service.delete_fork(turn.user_id, fork_id)
    turn.answer("Deleting")
    _say_turn(turn, f"Deleting fork <b>{fork_id}</b>; its RPC URL no longer answers.")


# typed answers to the flow's questions; a UserError (bad address, no such block) keeps the question open
def typed_block(turn: Turn) -> Next:
    _create(turn.incoming, turn.chat, turn.incoming.text)
    return flows.end()


def typed_fund(turn: Turn) -> Next:
    words, fork_id = turn.incoming.text.split(), str(turn.data.get("fork_id", ""))
    if len(words) != 2:
        raise UserError("Send two things: the address and the amount of ETH, e.g. <code>0xAb58…eC9B 10</code>.")
    balance = service.fund(turn.user_id, fork_id, words[0], words[1])
    account = service.checksum_address(words[0])
    _say_turn(turn, f"<code>{account}</code> now holds {balance / 10**18:,.6f} ETH on fork <b>{fork_id}</b>.")
    return flows.end()


def typed_impersonate(turn: Turn) -> Next:
    fork_id = str(turn.data.get("fork_id", ""))
    account = service.impersonate(turn.user_id, fork_id, turn.incoming.text)
    _say_turn(turn, f"Fork <b>{fork_id}</b> now accepts eth_sendTransaction from <code>{account}</code> without its key.")
    return flows.end()


def typed_revert(turn: Turn) -> Next:
    fork_id = str(turn.data.get("fork_id", ""))
    reverted = service.revert(turn.user_id, fork_id, turn.incoming.text.strip())
    _say_turn(turn, f"Fork <b>{fork_id}</b> reverted; the journal dropped everything after the snapshot."
              if reverted else "No such snapshot on this fork (a snapshot can be reverted to once).")
    return flows.end()


FORKS = Flow(
    name=FLOW, prefix=PREFIX, restart="/shadow_fork",
    steps={
        (ANY, button("list")): show_list,
        (ANY, button("new")): new_fork,
        (ANY, button("newmainnet")): new_mainnet_fork,
        (ANY, button("i")): open_fork,
        (ANY, button("fund")): _ask("await_fund", "Send the address to fund and the amount of ETH, e.g.\n"
                                    "<code>0xAb5801a7D398351b8bE11C439e05C5B3259aeC9B 10</code>"),
        (ANY, button("imp")): _ask("await_impersonate", "Send the address to impersonate. Transactions from it "
                                   "(eth_sendTransaction) then need no key."),
        (ANY, button("rev")): _ask("await_revert", "Send the snapshot id to revert to (e.g. <code>0x3</code>). "
                                   "Everything after it is dropped from the journal."),
        (ANY, button("snap")): snapshot,
        (ANY, button("sync")): sync_now,
        (ANY, button("auto")): auto_sync,
        (ANY, button("url")): new_url,
        (ANY, button("del")): ask_delete,
        (ANY, button("delok")): delete,
        ("await_block", TEXT): typed_block,
        ("await_fund", TEXT): typed_fund,
        ("await_impersonate", TEXT): typed_impersonate,
        ("await_revert", TEXT): typed_revert,
    },
)


def forks_section(user_id: int) -> str:
    forks = [fork for fork in service.list_forks(user_id) if fork.status in ALIVE]
    if not forks:
        return "No shadow forks yet. /shadow_fork creates one."
    listed = ", ".join(f"{fork.fork_id} ({fork.status})" for fork in forks)
    return f"{len(forks)} of {service.MAX_ALIVE_FORKS} live: {listed}"


FEATURE = Feature(
    "forks",
    commands=(Command("shadow_fork", "Shadow forks of Ethereum mainnet", shadow_fork),),
    flows=(FORKS,),
    sections=(Section(30, "Shadow forks", forks_section),),
)
