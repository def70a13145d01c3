"""The money feature's buttons that other screens show (/profile's Top up, /provider's Withdraw), in a module
of their own so those screens need not import the money feature (which imports them back)."""
from __future__ import annotations

from depu import conversation
from depu.chat import Button

PREFIX = "money"  # the money flow's callback prefix (depu.bot.money.MONEY)


def topup_button() -> Button:
    return Button("Top up with Telegram Stars", data=conversation.encode(PREFIX, "topup"))


def withdraw_button() -> Button:
    return Button("Withdraw earnings", data=conversation.encode(PREFIX, "withdraw"))
