"""Money in the chat: ``/topup`` (credit packs paid in Telegram Stars), ``/refund`` (unused top-ups),
``/payout_address`` and ``/withdraw`` (providers' earnings out as DUSD on chain).

The invoice itself is answered by the webhook (``depu.payments.webhook``): these handlers only open orders,
send invoices and start refunds and withdrawals. Money never moves in a group chat. Its buttons are one flow
table of stateless entries (``ANY``): a pack button sends an invoice, a refund button refunds one top-up.
"""
from __future__ import annotations

import html
from datetime import datetime, timezone

from depu.bot.basics import format_credits, profile_of
from depu.bot import money_buttons
from depu.bot.flows import ANY, Flow, Turn, button
from depu.bot.registry import Button, Chat, Command, Feature, Incoming
from depu.bot.sections import Section
from depu.errors import UserError


def _private_only(incoming: Incoming) -> None:
    if incoming.chat_type != "private":
        raise UserError("Payments happen in our private chat only: send the command there.")


def topup_keyboard() -> list[list[Button]]:
    from depu.payments.orders import packs

    return [[MONEY.button(f"{pack.credits:,} credits for ⭐{pack.stars}", "pack", pack.stars)] for pack in packs()]


def topup(incoming: Incoming, chat: Chat) -> None:
    _private_only(incoming)
    profile = profile_of(incoming)
    chat.reply(f"You have {format_credits(int(profile.credits or 0))}. Pick a pack; you pay in Telegram Stars, "
               "and the credits are yours the moment Telegram confirms the payment.", topup_keyboard())


def pack_button(turn: Turn) -> None:
    from depu.payments.invoices import send_topup_invoice
    from depu.payments.orders import packs
    from depu.telegram.client import bot_api

    _private_only(turn.incoming)
    stars = turn.int_arg(0, allowed=tuple(pack.stars for pack in packs()))
    profile_of(turn.incoming)
    send_topup_invoice(bot_api(), turn.user_id, stars, chat_id=turn.incoming.chat_id)
    turn.answer()
    return None


def refund_command(incoming: Incoming, chat: Chat) -> None:
    from depu.config import get_settings
    from depu.payments.refunds import refundable

    _private_only(incoming)
    charges = refundable(incoming.user_id)[:5]
    days = get_settings().refund_window_days
    if not charges:
        chat.reply(f"No top-up of the last {days} days can be refunded.")
        return
    buttons = [[MONEY.button(f"⭐{int(c.stars)} → {int(c.credits):,} credits ({c.created_at:%d %b})", "refund", c.order_id)]
               for c in charges]
    chat.reply(f"Top-ups whose credits are unused can be refunded within {days} days. Which one?", buttons)


def refund_button(turn: Turn) -> None:
    from depu.payments import orders, refunds
    from depu.telegram.client import bot_api

    _private_only(turn.incoming)
    order = orders.find(turn.arg(0))
    if order is None or int(order.user_id) != turn.user_id or not order.charge_id:
        raise UserError("There is no such top-up to refund.")
    result = refunds.refund(bot_api(), turn.user_id, order.charge_id)
    turn.answer()
    if result.status == "refunded":
        turn.reply(f"Refunded: ⭐{result.stars} are on their way back to you; {result.credits:,} credits were taken back.")
    elif result.status == "failed":
        turn.reply("Telegram refused the refund, so nothing changed: your credits are still yours.")
    else:
        turn.reply("The refund is being processed; I will settle it within the hour.")
    return None


def topup_menu_button(turn: Turn) -> None:
    """The Top up button under /profile."""
    topup(turn.incoming, turn.chat)
    return None


def withdraw_menu_button(turn: Turn) -> None:
    """The Withdraw button under /provider."""
    withdraw(turn.incoming, turn.chat)
    return None


def payout_address(incoming: Incoming, chat: Chat) -> None:
    from depu.payouts import addresses

    _private_only(incoming)
    if not incoming.args:
        state = addresses.current(incoming.user_id)
        lines = [f"Payouts go to <code>{state.active}</code>." if state.active else "No payout address yet."]
        if state.pending:
            lines.append(f"Changing to <code>{state.pending}</code> at {_when(state.pending_from)}.")
        lines.append("Set one with <code>/payout_address 0x…</code>.")
        chat.reply("\n".join(lines))
        return
    state = addresses.set_address(incoming.user_id, incoming.args)
    if state.pending:
        chat.reply(f"⚠️ Your payout address changes to <code>{state.pending}</code> at {_when(state.pending_from)} "
                   f"(24 hours from now). Until then payouts still go to <code>{state.active}</code>. "
                   "If this was not you, set your old address again now to cancel the change.")
    else:
        chat.reply(f"Payouts go to <code>{state.active}</code>.")


def withdraw(incoming: Incoming, chat: Chat) -> None:
    from depu.config import get_settings
    from depu.payouts import withdrawals

    _private_only(incoming)
    profile = profile_of(incoming)
    minimum = get_settings().payout_min_credits
    if not incoming.args:
        chat.reply(f"You have {format_credits(int(profile.earned or 0))} earned. Send "
                   f"<code>/withdraw AMOUNT</code> (at least {minimum:,} credits) to get it as DUSD.")
        return
    text = incoming.args.replace(",", "").strip()
    if not text.isdigit() or len(text) > 15:
        raise UserError("Send the amount in whole credits, e.g. <code>/withdraw 5000</code>.")
    payout = withdrawals.request(incoming.user_id, int(text))
    chat.reply(f"Withdrawal of {format_credits(int(payout.credits))} to <code>{html.escape(payout.to_address)}</code> "
               "is on its way. I will message you when it is confirmed on chain.")


def _when(epoch: int | None) -> str:
    if epoch is None:
        return "soon"
    return datetime.fromtimestamp(int(epoch), timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def provider_lines(user_id: int) -> list[str]:
    """/provider's withdrawals: where payouts go and the recent ones, each with its transaction hash."""
    from depu.payouts import addresses

    address = addresses.current(user_id).active
    lines = ["\n<b>Withdrawals</b> (DUSD on chain): " + (f"to <code>{address}</code>" if address
                                                         else "set an address with /payout_address first")]
    body = withdrawals_section(user_id)
    if not body.startswith("None yet"):
        lines.append(body)
    return lines


def withdrawals_section(user_id: int) -> str:
    from depu.payouts.models import payouts_of

    payouts = payouts_of(user_id)[:5]
    if not payouts:
        return "None yet. Providers withdraw earnings with /withdraw; buy credits with /topup."
    return "\n".join(f"{int(p.credits):,} credits: {p.state}" + (f" <code>{p.tx_hash}</code>" if p.tx_hash else "")
                     for p in payouts)


MONEY = Flow(
    name="money", prefix=money_buttons.PREFIX, restart="/topup",
    steps={
        (ANY, button("pack")): pack_button,
        (ANY, button("refund")): refund_button,
        (ANY, button("topup")): topup_menu_button,
        (ANY, button("withdraw")): withdraw_menu_button,
    },
)

FEATURE = Feature(
    "money",
    commands=(
        Command("topup", "Buy credits with Telegram Stars", topup),
        Command("refund", "Refund a recent, unused top-up", refund_command),
        Command("payout_address", "Set the Ethereum address your earnings are paid to", payout_address),
        Command("withdraw", "Withdraw provider earnings as DUSD", withdraw),
    ),
    flows=(MONEY,),
    sections=(Section(80, "Withdrawals", withdrawals_section),),
)
