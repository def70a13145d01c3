"""Two-phase chain alerts against a real anvil chain, ChainTable in moto, and the notifier delivering to the
Telegram stand-in: one message per (watch, transfer), sent at inclusion, edited on confirmation and on reorgs (forced
with evm_snapshot/evm_revert); and the follower lease handing over between overlapping indexer runs."""
from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest

from local.devchain import DevChain
from telegram_harness import FakeLambdaContext, load_function, sqs_event

pytestmark = pytest.mark.e2e

CONFIRMATIONS = 3


@pytest.fixture
def chain():
    with DevChain(accounts=4) as devchain:
        devchain.deploy_defaults()
        yield devchain


@pytest.fixture
def notifier(aws, telegram, monkeypatch):
    from depu.config import get_settings
    from depu.telegram.client import bot_api

    monkeypatch.setenv("TELEGRAM_API_BASE", telegram.base_url)
    get_settings.cache_clear()
    bot_api.cache_clear()
    yield load_function("notifier")
    bot_api.cache_clear()


def make_indexer(chain, notices, **overrides):
    from depu.chain.indexer import Indexer, IndexerConfig

    config = IndexerConfig(**({"confirmations": CONFIRMATIONS, "start_block": 0, "chunk_blocks": 10,
                               "poll_seconds": 0.1} | overrides))
    return Indexer(chain.rpc_url, config, notify=notices.append)


def deliver(notifier, notices) -> None:
    """Everything queued so far, through the notifier function, in order; emptied after."""
    if notices:
        response = notifier.lambda_handler(sqs_event([n.to_json() for n in notices]), FakeLambdaContext())
        assert response["batchItemFailures"] == []
        notices.clear()


def slots_of(notices, tx_hash: str) -> list:
    return [n for n in notices if n.slot and tx_hash in n.slot]


def test_alert_at_inclusion_then_the_same_message_is_confirmed(aws, chain, notifier, telegram):
    from depu.analytics import watches

    watched = chain.accounts[0]  # holds the DUSD supply
    watches.add(5, 5, watched.lower(), Decimal(0))
    notices: list = []
    indexer = make_indexer(chain, notices)
    indexer.run(until_caught_up=True)
    notices.clear()
    tx = chain.transfer(chain.tokens["DUSD"], watched, chain.accounts[2], 3 * 10**18)
    indexer.run(until_caught_up=True)
    first = slots_of(notices, tx)
    assert [(n.slot_version, n.chat_id) for n in first] == [(0, 5)]
    assert "unconfirmed" in first[0].text and "sent 3 DUSD" in first[0].text
    all_seen = list(notices)
    deliver(notifier, notices)

    chain.mine(CONFIRMATIONS - 1)
    indexer.run(until_caught_up=True)
    assert slots_of(notices, tx) == [], "not confirmed before N blocks"
    chain.mine(1)
    indexer.run(until_caught_up=True)
    confirmed = slots_of(notices, tx)
    assert [n.slot_version for n in confirmed] == [1] and "confirmed" in confirmed[0].text
    all_seen += notices
    deliver(notifier, notices)
    indexer.run(until_caught_up=True)
    assert notices == [], "nothing more once confirmed"

    sends = [c for c in telegram.calls_of("sendMessage") if tx in c.params["text"]]
    edits = [c for c in telegram.calls_of("editMessageText") if tx in c.params["text"]]
    assert len(sends) == 1 and len(edits) == 1, "one message, edited once"
    assert "confirmed" in telegram.texts[(5, int(edits[0].params["message_id"]))]
    assert len({n.slot for n in all_seen if n.slot and tx in n.slot}) == 1


def test_the_head_that_makes_a_block_n_deep_confirms_it_before_the_indexer_applies_it(aws, chain):
    """The confirmation edit is queued by the tip follower's turn on the N-th block, not after the confirmed
    indexer's work on that height; a reorganisation deeper than N before the indexer applied the height still
    edits it to dropped (the indexer having applied it: test_a_reorg_deeper_than_the_confirmations_...)."""
    from depu.analytics import alerts, watches
    from depu.chain import indexer as chain_indexer
    from depu.chain.indexer import RunReport

    watched = chain.accounts[0]  # holds the DUSD supply
    watches.add(5, 5, watched.lower(), Decimal(0))
    notices: list = []
    indexer = make_indexer(chain, notices)
    indexer.run(until_caught_up=True)
    notices.clear()
    fork_point = chain.snapshot()
    tx = chain.transfer(chain.tokens["DUSD"], watched, chain.accounts[2], 10**18)
    included = chain.w3.eth.get_transaction_receipt(tx)["blockNumber"]
    report = RunReport()
    indexer.tip.step(report)
    assert [n.slot_version for n in slots_of(notices, tx)] == [0]
    chain.mine(CONFIRMATIONS - 1)
    indexer.tip.step(report)
    assert [n.slot_version for n in slots_of(notices, tx)] == [0], "not confirmed before N blocks"
    chain.mine(1)
    indexer.tip.step(report)  # the tip's turn alone: the confirmed indexer has not applied the height
    assert chain_indexer.load_checkpoint().number < included
    confirmed = slots_of(notices, tx)
    assert [n.slot_version for n in confirmed] == [0, 1] and "✅ <b>confirmed</b>" in confirmed[1].text
    assert alerts.record(5, f"{tx}:L0", watched.lower())["state"] == alerts.CONFIRMED

    # deeper than the confirmations, before the indexer stored the height: its settle edits it to dropped
    chain.revert(fork_point)
    chain.mine(CONFIRMATIONS + 3)
    notices.clear()
    indexer.run(until_caught_up=True)
    assert [(n.slot_version, "dropped" in n.text) for n in slots_of(notices, tx)] == [(2, True)]
    assert alerts.record(5, f"{tx}:L0", watched.lower())["state"] == alerts.DROPPED
    indexer.run(until_caught_up=True)
    assert len(slots_of(notices, tx)) == 1, "nothing more once dropped"


def test_a_reorg_moves_one_alert_and_drops_the_other_in_their_own_messages(aws, chain, notifier, telegram):
    """T1 and T2 are alerted at inclusion; a reorg replaces their blocks with a chain holding only T1 (the
    same transaction, one block later): T1's message says it moved, then confirmed; T2's says dropped."""
    from depu.analytics import alerts, watches

    watched = chain.accounts[0]  # holds the DUSD supply
    watches.add(5, 5, watched.lower(), Decimal(0))
    dusd = chain.tokens["DUSD"]
    notices: list = []
    indexer = make_indexer(chain, notices)
    indexer.run(until_caught_up=True)
    notices.clear()
    fork_point = chain.snapshot()
    t1 = chain.transfer(dusd, watched, chain.accounts[2], 10**18)
    t2 = chain.send_eth(chain.accounts[3], watched, 2 * 10**18)
    indexer.run(until_caught_up=True)
    assert [n.slot_version for n in slots_of(notices, t1)] == [0]
    assert [n.slot_version for n in slots_of(notices, t2)] == [0]
    history = list(notices)
    deliver(notifier, notices)

    chain.revert(fork_point)
    chain.mine(1)  # the replacement chain is different from its first block on
    again = chain.transfer(dusd, watched, chain.accounts[2], 10**18)
    assert again == t1, "the same signed transaction, included again one block later"
    chain.mine(1)
    report_tip = indexer.run(until_caught_up=True)
    assert report_tip.tip_reorgs == 1
    moved = slots_of(notices, t1)
    assert [n.slot_version for n in moved] == [1] and "moved it to block" in moved[0].text
    assert slots_of(notices, t2) == [], "a dropped transfer is settled at its confirmation height"
    history += notices
    deliver(notifier, notices)

    chain.mine(CONFIRMATIONS + 1)
    indexer.run(until_caught_up=True)
    assert [(n.slot_version, "confirmed" in n.text) for n in slots_of(notices, t1)] == [(2, True)]
    assert [(n.slot_version, "dropped" in n.text) for n in slots_of(notices, t2)] == [(1, True)]
    history += notices
    deliver(notifier, notices)
    assert alerts.record(5, f"{t2}:N", watched.lower())["state"] == alerts.DROPPED

    for tx, final in ((t1, "confirmed"), (t2, "dropped")):
        sends = [c for c in telegram.calls_of("sendMessage") if tx in c.params["text"]]
        assert len(sends) == 1, f"never a second message for {final}"
        [message_id] = {m for (chat, m), text in telegram.texts.items() if chat == 5 and tx in text}
        assert final in telegram.texts[(5, message_id)]
    ours = [n for n in history if n.slot and (t1 in n.slot or t2 in n.slot)]
    assert sorted((n.slot_version for n in ours)) == [0, 0, 1, 1, 2], "two messages, three edits in all"


def test_a_reorg_deeper_than_the_confirmations_edits_the_confirmed_message(aws, chain):
    from depu.analytics import watches

    watched = chain.accounts[0]  # holds the DUSD supply
    watches.add(5, 5, watched.lower(), Decimal(0))
    notices: list = []
    indexer = make_indexer(chain, notices, confirmations=1)
    fork_point = chain.snapshot()
    tx = chain.transfer(chain.tokens["DUSD"], watched, chain.accounts[2], 10**18)
    chain.mine(3)
    indexer.run(until_caught_up=True)
    assert [n.slot_version for n in slots_of(notices, tx)] == [0] and "confirmed" in notices[-1].text
    notices.clear()
    chain.revert(fork_point)
    chain.mine(6)
    indexer.run(until_caught_up=True)
    assert [(n.slot_version, "dropped" in n.text) for n in slots_of(notices, tx)] == [(1, True)]


def test_overlapping_runs_hand_the_chain_over_without_a_gap(aws):
    """Two invocations overlap like the schedule's (each runs longer than the minute between them): the
    second waits as successor, the first hands over at its next turn, every block is alerted at the tip."""
    from depu.analytics import watches

    with DevChain(accounts=4, block_time=1) as chain:
        chain.deploy_defaults()
        watched = chain.accounts[1]
        watches.add(5, 5, watched.lower(), Decimal(0))
        seen: list[tuple[float, object]] = []
        lock = threading.Lock()

        def record(notice):
            with lock:
                seen.append((time.time(), notice))

        from depu.chain.indexer import Indexer, IndexerConfig
        from depu.chain.lease import FollowerLease

        config = IndexerConfig(confirmations=4, start_block=0, chunk_blocks=20, poll_seconds=0.1)
        reports: dict[str, object] = {}

        def invocation(name: str, seconds: float) -> None:
            reports[name] = Indexer(chain.rpc_url, config, notify=record).run(
                deadline=time.monotonic() + seconds, lease=FollowerLease(name))

        sent: list[str] = []
        stop = threading.Event()

        def driver() -> None:
            while not stop.is_set():
                sent.append(chain.send_eth(chain.accounts[2], watched, 10**15))
                time.sleep(0.5)

        first = threading.Thread(target=invocation, args=("first", 30.0))
        first.start()
        time.sleep(2.0)
        moves = threading.Thread(target=driver)
        moves.start()
        time.sleep(3.0)
        second = threading.Thread(target=invocation, args=("second", 12.0))
        second.start()
        first.join(timeout=40)
        time.sleep(4.0)
        stop.set()
        moves.join(timeout=10)
        second.join(timeout=30)

        a, b = reports["first"], reports["second"]
        assert a.handed_over and not b.handed_over
        assert a.seconds < 10, "the first run stopped when the second asked, long before its own deadline"
        # the first stops stepping when it hands over, before it notes the time: a few ms below zero is fine
        gap = b.following_since - a.followed_until
        assert -0.5 < gap < 1.0, f"the chain was not followed for {gap:.2f} s between the runs"
        assert a.tip_blocks > 0 and b.tip_blocks > 0
        unconfirmed = {n.slot.split(":")[2] for _, n in seen if n.slot and n.slot_version == 0}
        mined = [tx for tx in sent if chain.w3.eth.get_transaction_receipt(tx)["blockNumber"]
                 <= chain.block_number() - 1]
        assert set(mined) <= unconfirmed, "every transfer was alerted at inclusion, around the handover too"
        for tx in mined[:-1]:
            block = chain.w3.eth.get_transaction_receipt(tx)["blockNumber"]
            included = chain.w3.eth.get_block(block)["timestamp"]
            alerted = min(t for t, n in seen if n.slot and tx in n.slot)
            assert alerted - included < 1 + 2.5, f"{tx} alerted {alerted - included:.1f} s after its block"
