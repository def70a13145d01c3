"""A provider's payout address. The first one is used at once; a change takes effect after 24 h (settings:
``PAYOUT_ADDRESS_DELAY_SECONDS``) and the provider is told so, so whoever takes over a Telegram account cannot
redirect earnings before the owner notices."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass

from eth_utils import to_checksum_address

from depu.config import get_settings
from depu.errors import UserError
from depu.payouts.models import Payee

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
ZERO = "0x" + "0" * 40


@dataclass(frozen=True)
class PayoutAddress:
    active: str | None
    pending: str | None = None
    pending_from: int | None = None


def parse(text: str) -> str:
    text = (text or "").strip()
    if not _ADDRESS.fullmatch(text) or text.lower() == ZERO:
        raise UserError("That is not an Ethereum address. Send one like <code>0x52908400098527886E0F7030069857D2E4169EE7</code>.")
    if text != text.lower() and text != text.upper()[:2].lower() + text[2:].upper():
        if to_checksum_address(text) != text:  # mixed case is a checksum (EIP-55): a typo breaks it
            raise UserError("That address has a wrong checksum (a typo?). Copy it again from your wallet.")
    return to_checksum_address(text)


def current(provider_id: int, now: float | None = None) -> PayoutAddress:
    """The address in force now (a pending change whose time has come counts as active)."""
    now = time.time() if now is None else now
    try:
        payee = Payee.get(f"payee#{int(provider_id)}", "payee", consistent_read=True)
    except Payee.DoesNotExist:
        return PayoutAddress(None)
    if payee.pending_address and payee.pending_from is not None and now >= int(payee.pending_from):
        return PayoutAddress(payee.pending_address)
    return PayoutAddress(payee.address, payee.pending_address, int(payee.pending_from) if payee.pending_from else None)


def set_address(provider_id: int, text: str, now: float | None = None) -> PayoutAddress:
    address = parse(text)
    now = time.time() if now is None else now
    state = current(provider_id, now)
    payee = Payee(f"payee#{int(provider_id)}", "payee")
    if state.active is None:
        payee.update(actions=[Payee.address.set(address), Payee.pending_address.remove(), Payee.pending_from.remove()])
        return PayoutAddress(address)
    if state.active == address:
        payee.update(actions=[Payee.address.set(address), Payee.pending_address.remove(), Payee.pending_from.remove()])
        return PayoutAddress(address)
    takes_effect = int(now) + get_settings().payout_address_delay_seconds
    payee.update(actions=[Payee.address.set(state.active), Payee.pending_address.set(address),
                          Payee.pending_from.set(takes_effect)])
    return PayoutAddress(state.active, address, takes_effect)
