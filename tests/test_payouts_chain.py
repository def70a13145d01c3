"""Provider withdrawals paid in DUSD on a real local chain (anvil), signed by the treasury key in KMS (moto),
through the real webhook for the chat part and the payout worker for the chain part."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from depu import credits
from depu.config import get_settings
from depu.errors import UserError
from depu.payouts import addresses, withdrawals
from depu.payouts.chain import Chain
from depu.payouts.models import CONFIRMED, FAILED, SENT, SIGNED, NonceRecord, get_payout
from depu.payouts.worker import Worker
import payments_support
import payouts_support
from depu.payouts.models import payouts_of
from payments_support import start
from payouts_support import DUSD, KillingRpcProxy, fund_treasury, provider_with_earnings, transfers_to

pytestmark = pytest.mark.e2e
stars, payout_chain = payments_support.stars, payouts_support.payout_chain  # the fixtures
PROVIDER = 92001
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _settle(worker: Worker, chain, payout_id: str) -> str:
    worker.advance(payout_id)
    chain.mine(2)
    return worker.advance(payout_id).state


def test_withdrawal_from_the_chat_is_an_erc20_transfer_the_indexer_sees(stars, payout_chain) -> None:
    from depu.chain import store
    from depu.chain.indexer import Indexer, IndexerConfig

    fund_treasury(payout_chain)
    provider_with_earnings(PROVIDER, 20_000)
    payee = payout_chain.accounts[2]
    start(stars, PROVIDER, f"/payout_address {payee}")
    assert "Payouts go to" in stars.messages(PROVIDER)[-1].text
    start(stars, PROVIDER, "/withdraw 5000")
    assert "on its way" in stars.messages(PROVIDER)[-1].text
    [payout] = payouts_of(PROVIDER)
    assert payout.state == "debited" and credits.balance(PROVIDER).earned == 15_000

    assert _settle(Worker(), payout_chain, payout.payout_id) == CONFIRMED
    payout = get_payout(payout.payout_id)
    assert payout_chain.balance_of(payout_chain.token, payee) == 5 * DUSD  # 5,000 credits = $5
    [log] = transfers_to(payout_chain, payee)
    assert log["transactionHash"] == payout.tx_hash
    assert "0x" + log["topics"][1][-40:] == payout_chain.treasury.lower()

    Indexer(payout_chain.rpc_url, IndexerConfig(confirmations=0, start_block=0, chunk_blocks=20)).run(until_caught_up=True)
    rows = [row for row in store.query_all(store.block_rows_pk(payout.block_number)) if row.get("tx_hash") == payout.tx_hash]
    assert [(row["kind"], row["recipient"], row["amount"]) for row in rows] == [("erc20", payee.lower(), str(5 * DUSD))]

    start(stars, PROVIDER, "/profile")
    assert payout.tx_hash in stars.messages(PROVIDER)[-1].text


def test_worker_killed_after_sending_before_recording_pays_exactly_once(payout_chain) -> None:
    fund_treasury(payout_chain)
    provider_with_earnings(PROVIDER, 10_000)
    payee = payout_chain.accounts[3]
    addresses.set_address(PROVIDER, payee)
    payout = withdrawals.request(PROVIDER, 4000)
    proxy = KillingRpcProxy(payout_chain.rpc_url)
    env = {**os.environ, "PAYOUT_CHAIN_RPC_URL": proxy.url,
           "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "layers", "depu"), ROOT])}
    code = f"from depu.payouts.worker import Worker; Worker().advance({payout.payout_id!r})"
    victim = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    proxy.victim = victim
    try:
        assert proxy.killed.wait(60), victim.communicate(timeout=5)[0].decode()[-2000:]
    finally:
        proxy.stop()
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode != 0  # killed, not finished
    stored = get_payout(payout.payout_id)
    assert stored.state == SIGNED  # the broadcast happened; recording it did not
    assert len(transfers_to(payout_chain, payee)) == 1  # anvil mined it

    assert _settle(Worker(), payout_chain, payout.payout_id) == CONFIRMED  # resumed: the same bytes re-sent
    assert get_payout(payout.payout_id).tx_hash == stored.tx_hash
    assert len(transfers_to(payout_chain, payee)) == 1
    assert payout_chain.balance_of(payout_chain.token, payee) == 4 * DUSD
    assert Chain(payout_chain.rpc_url).pending_nonce(payout_chain.treasury) == int(stored.nonce) + 1


def test_attack_concurrent_withdrawals_cannot_exceed_earnings(payout_chain) -> None:
    provider_with_earnings(PROVIDER, 8000)
    addresses.set_address(PROVIDER, payout_chain.accounts[2])
    results: list[object] = []

    def withdraw() -> None:
        try:
            results.append(withdrawals.request(PROVIDER, 3000))
        except UserError as error:
            results.append(error)

    threads = [threading.Thread(target=withdraw) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = [r for r in results if not isinstance(r, UserError)]
    assert len(accepted) == 2 and credits.balance(PROVIDER).earned == 2000
    payouts = [e for e in credits.provider_history(PROVIDER, 50) if e.kind == "payout"]
    assert sorted(e.payout_id for e in payouts) == sorted(p.payout_id for p in accepted)


def test_concurrent_workers_use_each_nonce_once_with_no_gaps(payout_chain) -> None:
    fund_treasury(payout_chain)
    provider_with_earnings(PROVIDER, 50_000)
    payee = payout_chain.accounts[2]
    addresses.set_address(PROVIDER, payee)
    first = Chain(payout_chain.rpc_url).pending_nonce(payout_chain.treasury)
    payouts = [withdrawals.request(PROVIDER, 1000 + index) for index in range(5)]
    errors: list[BaseException] = []

    def work(payout_id: str) -> None:
        try:
            for _ in range(3):  # two workers per payout, racing each other and the rest
                Worker().advance(payout_id)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=work, args=(p.payout_id,)) for p in payouts for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    worker = Worker()
    for _ in range(4):  # a worker that lost a race left its payout for the next run: finish them all
        payout_chain.mine(3)
        states = [worker.advance(p.payout_id).state for p in payouts]
    assert states == [CONFIRMED] * 5
    nonces = sorted(int(get_payout(p.payout_id).nonce) for p in payouts)
    assert nonces == list(range(first, first + 5))
    assert NonceRecord.get(f"nonce#{payout_chain.treasury}", "nonce").next_nonce == first + 5
    assert len(transfers_to(payout_chain, payee)) == 5
    assert payout_chain.balance_of(payout_chain.token, payee) == sum(withdrawals.token_units(p.credits) for p in payouts)


def test_reverted_transfer_fails_and_recredits_and_treasury_low_is_flagged(payout_chain) -> None:
    fund_treasury(payout_chain, dusd=0)  # gas, but no DUSD: the transfer reverts
    provider_with_earnings(PROVIDER, 5000)
    addresses.set_address(PROVIDER, payout_chain.accounts[2])
    payout = withdrawals.request(PROVIDER, 5000)
    assert credits.balance(PROVIDER).earned == 0
    worker = Worker()
    outcome = worker.advance(payout.payout_id)
    assert outcome.treasury_low is True
    assert outcome.state in (SENT, FAILED)
    payout_chain.mine(1)
    assert worker.advance(payout.payout_id).state == FAILED
    assert credits.balance(PROVIDER).earned == 5000
    kinds = [e.kind for e in credits.provider_history(PROVIDER, 50)]
    assert kinds.count("payout") == 1 and kinds.count("payout_reversal") == 1


def test_limits_and_minimum(payout_chain, monkeypatch) -> None:
    provider_with_earnings(PROVIDER, 50_000)
    addresses.set_address(PROVIDER, payout_chain.accounts[2])
    with pytest.raises(UserError, match="smallest"):
        withdrawals.request(PROVIDER, 999)
    monkeypatch.setenv("PAYOUT_DAILY_LIMIT_CREDITS", "6000")
    get_settings.cache_clear()
    with pytest.raises(UserError, match="daily withdrawal limit"):
        withdrawals.request(PROVIDER, 6001)  # over the limit on the day's first withdrawal
    withdrawals.request(PROVIDER, 5000)
    with pytest.raises(UserError, match="daily withdrawal limit"):
        withdrawals.request(PROVIDER, 1001)
    monkeypatch.setenv("PAYOUT_DAILY_LIMIT_CREDITS", "100000")
    monkeypatch.setenv("PAYOUT_DAILY_TOTAL_CREDITS", "7000")
    get_settings.cache_clear()
    with pytest.raises(UserError, match="overall limit"):
        withdrawals.request(PROVIDER, 3000)
    assert credits.balance(PROVIDER).earned == 45_000


def test_address_change_takes_effect_after_24_hours_with_a_notice(stars, payout_chain) -> None:
    first, second = payout_chain.accounts[1], payout_chain.accounts[2]
    start(stars, PROVIDER, f"/payout_address {first}")
    start(stars, PROVIDER, f"/payout_address {second}")
    notice = stars.messages(PROVIDER)[-1].text
    assert "24 hours" in notice and second in notice and first in notice
    assert addresses.current(PROVIDER).active == first
    assert addresses.current(PROVIDER, now=time.time() + 24 * 3600 + 1).active == second
    start(stars, PROVIDER, "/payout_address 0x123")
    assert "not an Ethereum address" in stars.messages(PROVIDER)[-1].text


def test_worker_lambda_takes_a_queued_payout_to_confirmed_and_sweeps_leftovers(payout_chain, capsys) -> None:
    import json

    from telegram_harness import FakeLambdaContext, load_function, sqs_event

    fund_treasury(payout_chain)
    provider_with_earnings(PROVIDER, 10_000)
    addresses.set_address(PROVIDER, payout_chain.accounts[2])
    handler = load_function("payout_worker")
    handler.WAIT_SECONDS = 3.0
    queued = withdrawals.request(PROVIDER, 2000)
    first = handler.lambda_handler(sqs_event([json.dumps({"payout_id": queued.payout_id})]), FakeLambdaContext())
    assert len(first["batchItemFailures"]) == 1  # sent, waiting for confirmations: back to the queue
    assert get_payout(queued.payout_id).state == SENT
    payout_chain.mine(2)
    assert handler.lambda_handler(sqs_event([json.dumps({"payout_id": queued.payout_id})]),
                                  FakeLambdaContext()) == {"batchItemFailures": []}
    assert get_payout(queued.payout_id).state == CONFIRMED
    leftover = withdrawals.request(PROVIDER, 3000)  # its queue message lost: the schedule finds it
    assert handler.lambda_handler({"source": "aws.events"}, FakeLambdaContext()) == {"advanced": 1}
    payout_chain.mine(2)
    handler.lambda_handler({"source": "aws.events"}, FakeLambdaContext())
    assert get_payout(leftover.payout_id).state == CONFIRMED
    assert '"TreasuryLow":[0' in capsys.readouterr().out.replace(" ", "")


def test_provider_shows_withdrawals_with_their_transaction_and_a_withdraw_button(stars, payout_chain) -> None:
    fund_treasury(payout_chain)
    provider_with_earnings(PROVIDER, 10_000)
    payee = payout_chain.accounts[2]
    addresses.set_address(PROVIDER, payee)
    payout = withdrawals.request(PROVIDER, 2000)
    assert _settle(Worker(), payout_chain, payout.payout_id) == CONFIRMED
    start(stars, PROVIDER, "/provider")
    shown = stars.messages(PROVIDER)[-1]
    assert get_payout(payout.payout_id).tx_hash in shown.text and payee in shown.text
    [data] = [d for d in shown.button_data() if d.startswith("money:")]
    assert stars.press_button(PROVIDER, shown.message_id, data).status == 200
    assert "/withdraw AMOUNT" in stars.messages(PROVIDER)[-1].text
