"""The credit ledger against moto: idempotency, no negative balances, holds closed exactly once, and the ledger
entries always explain the balance."""
from __future__ import annotations

import itertools
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moto_serializable import serialize_dynamodb


@pytest.fixture
def ledger(aws, monkeypatch):
    serialize_dynamodb(monkeypatch)
    from depu import credits, profiles

    return credits, profiles


def _replayed_balance(credits, user_id: int) -> tuple[int, int, int]:
    """Rebuild (available, held, charged) from the ledger entries alone."""
    entries = credits.history(user_id, limit=10_000)
    holds = {entry.hold_id: int(entry.amount) for entry in entries if entry.kind == "hold"}
    available = sum(int(entry.amount) for entry in entries if entry.kind == "grant") - sum(holds.values())
    held, charged = sum(holds.values()), 0
    for entry in entries:
        if entry.kind in ("settle", "release"):
            amount, returned = holds[entry.hold_id], int(entry.released)
            held -= amount
            available += returned
            charged += amount - returned
    return available, held, charged


def test_grant_applies_once_per_entry_id(ledger):
    credits, profiles = ledger
    profiles.ensure_profile(1, "Ada")
    start = credits.balance(1).credits

    assert credits.grant(1, 250, "grant#promo-1", "Promo") is True
    assert credits.grant(1, 250, "grant#promo-1", "Promo") is False
    assert credits.grant(1, 999, "grant#promo-1", "Promo again, other amount") is False

    assert credits.balance(1).credits == start + 250
    promo = [e for e in credits.history(1) if e.entry_id == "grant#promo-1"]
    assert len(promo) == 1 and promo[0].amount == 250 and promo[0].reason == "Promo"


def test_grant_to_unknown_user_changes_nothing(ledger):
    credits, _ = ledger
    with pytest.raises(credits.UnknownAccount):
        credits.grant(404, 10, "grant#x", "nobody")
    assert credits.history(404) == []  # the entry was in the cancelled transaction


def test_amounts_must_be_positive_integers(ledger):
    credits, profiles = ledger
    profiles.ensure_profile(1, "Ada")
    for amount in (0, -5, 1.5, True, "3"):
        with pytest.raises(ValueError):
            credits.grant(1, amount, "grant#bad", "bad")
        with pytest.raises(ValueError):
            credits.hold(1, amount, "job-bad")
    with pytest.raises(ValueError):
        credits.settle(1, "job-bad", -1, provider_id=None, job_id="job-bad")
    assert [entry.entry_id for entry in credits.history(1)] == [credits.STARTER_ENTRY]


def test_hold_insufficient_raises_and_changes_nothing(ledger):
    credits, profiles = ledger
    profiles.ensure_profile(1, "Ada")
    before = credits.balance(1)

    with pytest.raises(credits.InsufficientCredits) as raised:
        credits.hold(1, before.credits + 1, "job-1")

    assert raised.value.available == before.credits and raised.value.needed == before.credits + 1
    assert credits.balance(1) == before
    assert all(e.kind != "hold" for e in credits.history(1))
    credits.release(1, "job-1")  # the job's cleanup may release a hold that never happened: no-op
    assert credits.balance(1) == before


def test_hold_is_idempotent_and_rejects_a_reused_id_with_another_amount(ledger):
    credits, profiles = ledger
    profiles.ensure_profile(1, "Ada")
    credits.hold(1, 300, "job-1")
    credits.hold(1, 300, "job-1")
    assert credits.balance(1) == credits.Balance(700, 300, 0)
    with pytest.raises(credits.HoldMismatch):
        credits.hold(1, 301, "job-1")
    assert credits.balance(1) == credits.Balance(700, 300, 0)


def test_settle_charges_at_most_the_hold_returns_the_rest_and_pays_the_provider(ledger):
    credits, profiles = ledger
    profiles.ensure_profile(1, "Renter")
    profiles.ensure_profile(2, "Provider")
    credits.hold(1, 300, "job-1")

    assert credits.settle(1, "job-1", 120, provider_id=2, job_id="job-1") == 120
    assert credits.balance(1) == credits.Balance(880, 0, 0)
    assert credits.balance(2) == credits.Balance(1000, 0, 120)
    earned = credits.provider_history(2)
    assert [(e.amount, e.job_id, e.user_id) for e in earned] == [(120, "job-1", 1)]

    # a repeat (retried Lambda) with any charge changes nothing and reports the first charge
    assert credits.settle(1, "job-1", 300, provider_id=2, job_id="job-1") == 120
    credits.release(1, "job-1")
    assert credits.balance(1) == credits.Balance(880, 0, 0)
    assert credits.balance(2).earned == 120

    credits.hold(1, 100, "job-2")
    assert credits.settle(1, "job-2", 10_000, provider_id=2, job_id="job-2") == 100  # capped at the hold
    assert credits.balance(1) == credits.Balance(780, 0, 0)
    assert credits.balance(2).earned == 220


def test_release_returns_everything_and_blocks_a_later_settle(ledger):
    credits, profiles = ledger
    profiles.ensure_profile(1, "Ada")
    credits.hold(1, 400, "job-1")
    credits.release(1, "job-1")
    credits.release(1, "job-1")
    assert credits.balance(1) == credits.Balance(1000, 0, 0)
    assert credits.settle(1, "job-1", 50, provider_id=2, job_id="job-1") == 0
    assert credits.balance(1) == credits.Balance(1000, 0, 0)
    assert credits.provider_history(2) == []


def test_settle_unknown_hold_raises(ledger):
    credits, profiles = ledger
    profiles.ensure_profile(1, "Ada")
    with pytest.raises(credits.UnknownHold):
        credits.settle(1, "never-held", 5, provider_id=None, job_id="x")
    # a hold is per user: another user's hold id is not this user's
    profiles.ensure_profile(2, "Bob")
    credits.hold(2, 10, "job-b")
    with pytest.raises(credits.UnknownHold):
        credits.settle(1, "job-b", 5, provider_id=None, job_id="job-b")
    assert credits.balance(2) == credits.Balance(990, 10, 0)


def test_renting_your_own_gpu_settles_in_one_item_update(ledger):
    credits, profiles = ledger
    profiles.ensure_profile(1, "Ada")
    credits.hold(1, 200, "job-1")
    assert credits.settle(1, "job-1", 50, provider_id=1, job_id="job-1") == 50
    assert credits.balance(1) == credits.Balance(950, 0, 50)


def test_provider_without_profile_is_credited_and_later_gets_starter_once(ledger):
    credits, profiles = ledger
    profiles.ensure_profile(1, "Renter")
    credits.hold(1, 100, "job-1")
    credits.settle(1, "job-1", 40, provider_id=77, job_id="job-1")
    assert credits.balance(77) == credits.Balance(0, 0, 40)
    with pytest.raises(credits.InsufficientCredits) as raised:  # earnings are not spendable credits
        credits.hold(77, 1, "job-x")
    assert raised.value.available == 0

    profile, created = profiles.ensure_profile(77, "Late provider")
    assert created is False  # the row existed (earnings), but it is completed and granted once
    assert (profile.credits, profile.earned, profile.first_name) == (1000, 40, "Late provider")
    profiles.ensure_profile(77, "Late provider")
    assert credits.balance(77) == credits.Balance(1000, 0, 40)


def test_concurrent_settles_of_one_hold_charge_once(ledger):
    credits, profiles = ledger
    profiles.ensure_profile(1, "Ada")
    profiles.ensure_profile(2, "Provider")
    credits.hold(1, 500, "job-1")
    barrier = threading.Barrier(6)

    def settle_once(charge: int) -> int:
        barrier.wait()
        return credits.settle(1, "job-1", charge, provider_id=2, job_id="job-1")

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(settle_once, [100, 200, 300, 400, 450, 499]))

    assert len(set(results)) == 1  # every caller is told the one charge that happened
    charged = results[0]
    assert credits.balance(1) == credits.Balance(1000 - charged, 0, 0)
    assert credits.balance(2).earned == charged
    assert len(credits.provider_history(2)) == 1


def test_concurrent_holds_never_overdraw(ledger):
    credits, profiles = ledger
    profiles.ensure_profile(1, "Ada")  # 1000 starter credits
    barrier = threading.Barrier(8)

    def try_hold(n: int) -> bool:
        barrier.wait()
        try:
            credits.hold(1, 300, f"job-{n}")
            return True
        except credits.InsufficientCredits:
            return False

    with ThreadPoolExecutor(8) as pool:
        placed = sum(pool.map(try_hold, range(8)))

    assert placed == 3
    assert credits.balance(1) == credits.Balance(100, 900, 0)


_user_ids = itertools.count(10_000)

_operation = st.one_of(
    st.tuples(st.just("grant"), st.integers(1, 500), st.integers(0, 3)),
    st.tuples(st.just("hold"), st.integers(1, 900), st.integers(0, 4)),
    st.tuples(st.just("settle"), st.integers(0, 1000), st.integers(0, 4)),
    st.tuples(st.just("release"), st.integers(0, 0), st.integers(0, 4)),
)


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(_operation, min_size=1, max_size=10))
def test_ledger_invariants_hold_for_any_sequence(ledger, operations):
    """Random grant/hold/settle/release sequences (ids repeat on purpose: retries and double taps) keep
    credits >= 0, held >= 0, credits + held + charged == granted, and every close applies once."""
    credits, profiles = ledger
    user_id, provider_id = next(_user_ids), next(_user_ids)
    profiles.ensure_profile(user_id, "Prop")
    granted = 1000
    expected_credits, expected_held, charged = 1000, 0, 0
    placed: dict[str, int] = {}  # every hold ever placed -> amount
    holds: dict[str, int] = {}  # open holds
    closed: dict[str, int] = {}  # hold id -> amount charged
    grants: set[str] = set()

    for operation, amount, slot in operations:
        hold_id = f"job-{slot}"
        if operation == "grant":
            applied = credits.grant(user_id, amount, f"grant#{slot}", "test")
            assert applied == (f"grant#{slot}" not in grants)
            if applied:
                grants.add(f"grant#{slot}")
                granted += amount
                expected_credits += amount
        elif operation == "hold":
            if hold_id in placed:  # a retry: same amount is a no-op, another amount is refused
                if amount == placed[hold_id]:
                    credits.hold(user_id, amount, hold_id)
                else:
                    with pytest.raises(credits.HoldMismatch):
                        credits.hold(user_id, amount, hold_id)
            elif amount > expected_credits:
                with pytest.raises(credits.InsufficientCredits):
                    credits.hold(user_id, amount, hold_id)
            else:
                credits.hold(user_id, amount, hold_id)
                placed[hold_id] = holds[hold_id] = amount
                expected_credits -= amount
                expected_held += amount
        elif operation == "settle":
            if hold_id in closed:
                assert credits.settle(user_id, hold_id, amount, provider_id=provider_id, job_id=hold_id) == closed[
                    hold_id
                ]
            elif hold_id in holds:
                held_amount = holds.pop(hold_id)
                result = credits.settle(user_id, hold_id, amount, provider_id=provider_id, job_id=hold_id)
                assert result == min(amount, held_amount)
                closed[hold_id] = result
                charged += result
                expected_held -= held_amount
                expected_credits += held_amount - result
            else:
                with pytest.raises(credits.UnknownHold):
                    credits.settle(user_id, hold_id, amount, provider_id=provider_id, job_id=hold_id)
        else:
            credits.release(user_id, hold_id)
            if hold_id in holds:
                held_amount = holds.pop(hold_id)
                closed[hold_id] = 0
                expected_held -= held_amount
                expected_credits += held_amount

        now = credits.balance(user_id)
        assert now.credits >= 0 and now.held >= 0
        assert (now.credits, now.held) == (expected_credits, expected_held)
        assert now.credits + now.held + charged == granted

    assert credits.balance(provider_id).earned == charged
    assert _replayed_balance(credits, user_id) == (expected_credits, expected_held, charged)


def test_provider_earns_its_share_and_the_payer_pays_the_whole_charge(ledger):
    credits, profiles = ledger
    profiles.ensure_profile(1, "Payer", None, None)
    credits.hold(1, 500, "job-share")
    charged = credits.settle(1, "job-share", 101, provider_id=2, job_id="job-share", provider_share_pct=80)
    assert charged == 101
    assert credits.balance(2).earned == credits.provider_earnings(101, 80) == 80  # rounded down
    assert credits.balance(1).credits == 1000 - 101
    with pytest.raises(ValueError):
        credits.settle(1, "job-x", 1, provider_id=2, job_id="job-x", provider_share_pct=101)
