"""The money invariants, checked from the stored state alone (tests; an operator can run them too).

1. Conservation: users' and providers' balances + payouts in flight + the treasury + the outside world
   (Stars in, DUSD out) sum to zero. Grants (the starter credits) come from the treasury; a job's fee (charge minus the
   provider's earnings) goes to it; referral rewards come from it.
2. No payout without a debit: every payout past ``requested`` has its ledger debit ``payout#<id>``.
3. No debit without a payout or a re-credit: every debit belongs to a payout that is in flight or confirmed,
   or failed with its ``payout-failed#<id>`` re-credit.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from depu import credits
from depu.credits import LedgerEntry
from depu.payouts.models import CONFIRMED, FAILED, IN_FLIGHT, REQUESTED, Payout
from depu.profiles import Profile


@dataclass
class Totals:
    users: int = 0
    in_flight: int = 0
    treasury: int = 0
    world: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.users + self.in_flight + self.treasury + self.world


def _signed(entry: LedgerEntry) -> int:
    return int(entry.amount) if entry.kind == "in" else -int(entry.amount)


def check() -> Totals:
    totals = Totals()
    for profile in Profile.scan(consistent_read=True):
        totals.users += int(profile.credits or 0) + int(profile.held or 0) + int(profile.earned or 0)
    entries = list(LedgerEntry.scan(consistent_read=True))
    payouts = {p.payout_id: p for p in Payout.scan(Payout.sk == "payout", consistent_read=True)}
    debits = {e.payout_id for e in entries if e.kind == "payout"}
    reversals = {e.payout_id for e in entries if e.kind == "payout_reversal"}
    for entry in entries:
        if entry.account in (credits.WORLD_STARS, credits.WORLD_DUSD):
            totals.world += _signed(entry)
        elif entry.account == credits.TREASURY:
            totals.treasury += _signed(entry)
        elif entry.kind == "grant":  # starter credits and any other grant DePU gives
            totals.treasury -= int(entry.amount)
        elif entry.kind == "settle":
            totals.treasury += int(entry.amount)
        elif entry.kind == "earn":
            totals.treasury -= int(entry.amount)
    for payout in payouts.values():
        if payout.state in IN_FLIGHT:
            totals.in_flight += int(payout.credits)
        debited = payout.payout_id in debits
        if payout.state != REQUESTED and payout.error is None and not debited:
            totals.problems.append(f"payout {payout.payout_id} ({payout.state}) has no debit")
        if payout.tx_hash and not debited:
            totals.problems.append(f"payout {payout.payout_id} was signed without a debit")
    for payout_id in debits:
        payout = payouts.get(payout_id)
        if payout is None:
            totals.problems.append(f"debit payout#{payout_id} has no payout")
        elif payout.state == FAILED and payout_id not in reversals:
            totals.problems.append(f"payout {payout_id} failed without its re-credit")
        elif payout.state not in (*IN_FLIGHT, CONFIRMED, FAILED):
            totals.problems.append(f"debit payout#{payout_id} with the payout {payout.state}")
    if totals.total != 0:
        totals.problems.append(f"money is not conserved: the accounts sum to {totals.total}")
    return totals
