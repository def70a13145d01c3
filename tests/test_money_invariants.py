"""Money invariants under Hypothesis-chosen interleavings of top-ups (and their redeliveries), refunds (and
refused refunds), jobs that pay providers, concurrent-in-effect withdrawals and payout worker steps, including
a worker that dies right after broadcasting: after every single operation the ledger conserves money, no
payout exists without its debit and no debit without a payout or re-credit; at the end each confirmed payout
was paid on chain exactly once."""
from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import payments_support
import payouts_support
from depu import credits
from depu.errors import UserError
from depu.payments import invariants, orders, refunds, topup
from depu.payouts import addresses, withdrawals
from depu.payouts.models import CONFIRMED, FINAL, SIGNED, get_payout, payouts_of
from depu.payouts.worker import Worker
from depu.profiles import ensure_profile
from depu.telegram.client import bot_api
from local.telegram_standin.stars import StarTransaction
from payouts_support import fund_treasury, provider_with_earnings, transfers_to

pytestmark = pytest.mark.e2e
stars, payout_chain = payments_support.stars, payouts_support.payout_chain  # the fixtures
USERS = [93001, 93002]
PROVIDERS = [93101, 93102]

operation = st.one_of(
    st.tuples(st.just("topup"), st.sampled_from(USERS), st.sampled_from([50, 100])),
    st.tuples(st.just("redeliver"), st.integers(0, 5)),
    st.tuples(st.just("refund"), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("job"), st.sampled_from(USERS), st.sampled_from(PROVIDERS), st.integers(1, 3000)),
    st.tuples(st.just("withdraw"), st.sampled_from(PROVIDERS), st.integers(1000, 4000)),
    st.tuples(st.just("step"), st.integers(0, 7)),
    st.tuples(st.just("sign"), st.integers(0, 7)),
    st.tuples(st.just("send_and_die"), st.integers(0, 7)),
    st.tuples(st.just("mine"),),
)


class Money:
    def __init__(self, standin, chain) -> None:
        self.standin, self.chain, self.worker = standin, chain, Worker()
        self.payments: list[topup.SuccessfulPayment] = []
        self.payouts: list[str] = []  # this interleaving's own payouts (earlier ones are all final)

    def run(self, op: tuple) -> None:
        getattr(self, op[0])(*op[1:])

    def topup(self, user: int, stars_: int) -> None:
        order = orders.open_order(user, stars_)
        charge_id = f"stxHYP{time.time_ns()}"
        self.standin.stars.transactions.append(StarTransaction(charge_id, stars_, int(time.time()), user, True))
        payment = topup.SuccessfulPayment(user, user, "XTR", stars_, order.order_id, charge_id)
        self.payments.append(payment)
        topup.apply(payment)

    def redeliver(self, index: int) -> None:
        if self.payments:
            topup.apply(self.payments[index % len(self.payments)])

    def refund(self, index: int, refused: bool) -> None:
        if not self.payments:
            return
        payment = self.payments[index % len(self.payments)]
        self.standin.stars.refund_failures = 1 if refused else 0
        try:
            refunds.refund(bot_api(), payment.user_id, payment.charge_id)
        except UserError:
            pass

    def job(self, user: int, provider: int, amount: int) -> None:
        hold_id = f"hyp-{time.time_ns()}"
        try:
            credits.hold(user, amount, hold_id)
        except credits.InsufficientCredits:
            return
        credits.settle(user, hold_id, amount // 2 + 1, provider_id=provider, job_id=hold_id, provider_share_pct=80)

    def withdraw(self, provider: int, amount: int) -> None:
        try:
            self.payouts.append(withdrawals.request(provider, amount).payout_id)
        except UserError:
            pass

    def _payout(self, index: int):
        return get_payout(self.payouts[index % len(self.payouts)]) if self.payouts else None

    def step(self, index: int) -> None:
        payout = self._payout(index)
        if payout is not None:
            self.worker.step(payout)

    def sign(self, index: int) -> None:
        """Steps until the payout's transaction is signed (and not yet broadcast)."""
        payout = self._payout(index)
        while payout is not None and payout.state == "debited" and self.worker.step(payout):
            payout = get_payout(payout.payout_id)

    def send_and_die(self, index: int) -> None:
        """The worker broadcasts, then dies before recording it (the state stays ``signed``)."""
        payout = self._payout(index)
        if payout is not None and payout.state == SIGNED:
            self.worker._send(payout)

    def mine(self) -> None:
        self.chain.mine(1)


def _assert_invariants() -> None:
    totals = invariants.check()
    assert totals.problems == [], totals
    assert totals.total == 0


@pytest.mark.timeout(600)
def test_money_is_conserved_under_any_interleaving(stars, payout_chain) -> None:
    fund_treasury(payout_chain, dusd=10_000_000)
    for user in USERS:
        ensure_profile(user, "User")
    for index, provider in enumerate(PROVIDERS):
        provider_with_earnings(provider, 200_000, payer=93999 - index)  # enough for many withdrawals
        addresses.set_address(provider, payout_chain.accounts[1 + index])
    _assert_invariants()

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(operation, min_size=1, max_size=25))
    def interleaving(ops: list[tuple]) -> None:
        money = Money(stars, payout_chain)
        for op in ops:
            money.run(op)
            _assert_invariants()
        for _ in range(4):  # then let every payout finish
            payout_chain.mine(2)
            for provider in PROVIDERS:
                for payout in payouts_of(provider):
                    if payout.state not in FINAL:
                        money.worker.advance(payout.payout_id)
        _assert_invariants()
        for index, provider in enumerate(PROVIDERS):
            mine = payouts_of(provider)
            assert all(p.state in FINAL or p.state == "requested" for p in mine), [p.state for p in mine]
            paid = sum(int(p.token_amount) for p in mine if p.state == CONFIRMED)
            logs = transfers_to(payout_chain, payout_chain.accounts[1 + index])
            assert sum(int(log["data"], 16) for log in logs) == paid  # each confirmed payout once, nothing else
            assert len(logs) == sum(1 for p in mine if p.state == CONFIRMED)
            assert {get_payout(p.payout_id).tx_hash for p in mine if p.state == CONFIRMED} == \
                {log["transactionHash"] for log in logs}

    interleaving()
