"""The payout state machine, one conditional write per transition, resumable after a crash at any point.

    debited --(nonce bound)--> debited+nonce --(KMS signs, raw tx stored)--> signed --(broadcast)--> sent
    sent --(receipt ok, N blocks deep)--> confirmed
    sent --(receipt reverted)--> failed, earnings re-credited (same transaction)

Why it cannot pay twice: a payout is only ever broadcast as the raw transaction stored on it, and that is
stored once (``attribute_not_exists(raw_tx)``). A worker killed after broadcasting and before writing
``sent`` resumes at ``signed`` and broadcasts the same bytes again: the node knows them (or has mined them)
and the hash is the same. A second transaction for the same payout would need a second signature, and the
signing step refuses once a raw transaction exists.

Why nonces are neither reused nor skipped: the next nonce is taken from the NonceRecord (``next_nonce = n``
-> ``n + 1``) in the same transaction that binds ``n`` to one payout, and a payout with a nonce always goes
on to broadcast it (even a reverted transfer consumes its nonce on chain).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from depu import credits
from depu.config import get_settings
from depu.credits import LedgerEntry, _Transaction, provider_account
from depu.payouts import transaction as tx
from depu.payouts.chain import Chain
from depu.payouts.kms_signer import KmsSigner
from depu.payouts.models import (
    CONFIRMED, DEBITED, FAILED, FINAL, SENT, SIGNED, NonceRecord, Payout, get_payout,
)
from depu.profiles import Profile, utcnow

log = logging.getLogger(__name__)
_KNOWN = ("already known", "known transaction", "nonce too low", "already imported", "replacement transaction")


@dataclass(frozen=True)
class Outcome:
    payout_id: str
    state: str
    tx_hash: str | None = None
    treasury_low: bool = False


class Worker:
    def __init__(self, chain: Chain | None = None, signer: KmsSigner | None = None) -> None:
        settings = get_settings()
        self.chain = chain or Chain(settings.payout_chain_rpc_url)
        self.signer = signer or KmsSigner(settings.treasury_key_id)

    # ------------------------------------------------------------------ driving
    def advance(self, payout_id: str) -> Outcome:
        """Take the payout as far as it can go now (at most to ``sent`` + one confirmation check)."""
        payout = get_payout(payout_id)
        if payout is None:
            raise LookupError(f"no payout {payout_id}")
        for _ in range(6):
            if not self.step(payout):
                break  # final, waiting (confirmations) or lost a race; the next run goes on
            payout = get_payout(payout_id)
        return Outcome(payout_id, payout.state, payout.tx_hash, self.treasury_low())

    def step(self, payout: Payout) -> bool:
        """One transition from the payout's stored state; False when there is nothing to do now."""
        if payout.state in FINAL:
            return False
        step = {DEBITED: self._sign if payout.nonce is not None else self._take_nonce,
                SIGNED: self._broadcast, SENT: self._confirm}.get(payout.state)
        return step(payout) if step is not None else False  # requested: never debited, nothing to do

    def run(self, payout_id: str, seconds: float, poll: float = 1.0) -> Outcome:
        """``advance`` until the payout is final or ``seconds`` have passed."""
        deadline = time.monotonic() + seconds
        while True:
            outcome = self.advance(payout_id)
            if outcome.state in FINAL or time.monotonic() + poll > deadline:
                return outcome
            time.sleep(poll)

    def treasury_low(self) -> bool:
        from depu.payouts.withdrawals import token_units

        settings = get_settings()
        if not settings.payout_token_address:
            return False
        balance = self.chain.token_balance(settings.payout_token_address, self.signer.address)
        return balance < token_units(settings.treasury_low_credits)

    # ------------------------------------------------------------------ steps (True: moved on)
    def _take_nonce(self, payout: Payout) -> bool:
        treasury = self.signer.address
        record_key = f"nonce#{treasury}"
        try:
            record = NonceRecord.get(record_key, "nonce", consistent_read=True)
            nonce, condition = int(record.next_nonce), NonceRecord.next_nonce == int(record.next_nonce)
        except NonceRecord.DoesNotExist:
            # the first payout from this treasury starts where the chain is
            nonce, condition = self.chain.pending_nonce(treasury), NonceRecord.pk.does_not_exist()
        transaction = _Transaction()
        transaction.update("nonce", NonceRecord(record_key, "nonce"), [NonceRecord.next_nonce.set(nonce + 1)], condition)
        transaction.update("payout", Payout(payout.pk, "payout"),
                           [Payout.nonce.set(nonce), Payout.treasury.set(treasury), Payout.updated_at.set(utcnow())],
                           (Payout.state == DEBITED) & Payout.nonce.does_not_exist())
        failed = transaction.commit()
        return not failed or "payout" in failed  # payout: another worker bound one; nonce: retry next loop

    def _sign(self, payout: Payout) -> bool:
        settings = get_settings()
        max_fee, tip = self.chain.fees()
        transfer = tx.Transfer(chain_id=self.chain.chain_id(), nonce=int(payout.nonce),
                               token=settings.payout_token_address, to=payout.to_address,
                               amount=int(payout.token_amount), max_fee_per_gas=max_fee, max_priority_fee_per_gas=tip)
        raw = transfer.raw(self.signer.sign_digest(transfer.digest()))
        try:
            Payout(payout.pk, "payout").update(
                actions=[Payout.raw_tx.set("0x" + raw.hex()), Payout.tx_hash.set(tx.tx_hash(raw)),
                         Payout.state.set(SIGNED), Payout.updated_at.set(utcnow())],
                condition=(Payout.state == DEBITED) & Payout.raw_tx.does_not_exist() & (Payout.nonce == int(payout.nonce)))
        except Exception as error:  # noqa: BLE001 - a lost race: the stored transaction is the one that counts
            if "ConditionalCheckFailed" not in repr(error):
                raise
        return True

    def _broadcast(self, payout: Payout) -> bool:
        self._send(payout)
        Payout(payout.pk, "payout").update(actions=[Payout.state.set(SENT), Payout.updated_at.set(utcnow())],
                                           condition=Payout.state.is_in(SIGNED, SENT))
        return True

    def _send(self, payout: Payout) -> None:
        from depu.chain.rpc import RpcError

        try:
            self.chain.send_raw(payout.raw_tx)
        except RpcError as error:
            known = any(word in str(error).lower() for word in _KNOWN)
            if not known or self.chain.transaction(payout.tx_hash) is None and self.chain.receipt(payout.tx_hash) is None:
                raise
            # the node has (or has mined) these very bytes: sent before a crash, nothing new to pay

    def _confirm(self, payout: Payout) -> bool:
        receipt = self.chain.receipt(payout.tx_hash)
        if receipt is None:
            if self.chain.transaction(payout.tx_hash) is None:
                self._send(payout)  # dropped from the pool: the same bytes again, never a new nonce
            return False
        block = int(receipt["blockNumber"], 16)
        if int(receipt.get("status", "0x0"), 16) != 1:
            self._fail(payout, f"the transfer reverted in block {block}")
            return True
        if self.chain.head() - block + 1 < get_settings().payout_confirmations:
            return False
        now = utcnow()
        transaction = _Transaction()
        transaction.update("payout", Payout(payout.pk, "payout"),
                           [Payout.state.set(CONFIRMED), Payout.block_number.set(block), Payout.updated_at.set(now)],
                           Payout.state == SENT)
        transaction.put("world", LedgerEntry(credits.WORLD_DUSD, f"payout#{payout.payout_id}", kind="in",
                                             amount=int(payout.credits), payout_id=payout.payout_id,
                                             provider_id=int(payout.provider_id), created_at=now,
                                             reason=f"DUSD paid out in {payout.tx_hash}"),
                        LedgerEntry.entry_id.does_not_exist())
        if transaction.commit():
            return True  # confirmed by another run
        _notify(payout, f"💸 Withdrawal of {int(payout.credits):,} credits confirmed: "
                        f"<code>{payout.tx_hash}</code> to <code>{payout.to_address}</code>.")
        return True

    def _fail(self, payout: Payout, why: str) -> None:
        """failed and re-credited, in one transaction (so there is never a failure without its re-credit)."""
        now, amount = utcnow(), int(payout.credits)
        transaction = _Transaction()
        transaction.update("payout", Payout(payout.pk, "payout"),
                           [Payout.state.set(FAILED), Payout.error.set(why), Payout.updated_at.set(now)],
                           Payout.state == SENT)
        transaction.put("entry", LedgerEntry(provider_account(payout.provider_id), f"payout-failed#{payout.payout_id}",
                                             kind="payout_reversal", amount=amount, payout_id=payout.payout_id,
                                             reason=f"Withdrawal failed, credits returned: {why}", created_at=now),
                        LedgerEntry.entry_id.does_not_exist())
        transaction.update("earnings", Profile(payout.provider_id), [Profile.earned.add(amount)])
        failed = transaction.commit()
        if failed and failed != {"payout", "entry"}:
            raise credits.LedgerError(f"payout {payout.payout_id} could not be failed: {sorted(failed)}")
        if not failed:
            _notify(payout, f"Withdrawal of {amount:,} credits failed ({why}); the credits are back in your earnings.")


def _notify(payout: Payout, text: str) -> None:
    if not get_settings().notify_queue_url:
        return
    from depu.notify import Notice, enqueue

    enqueue(Notice(chat_id=int(payout.provider_id), text=text, dedupe_key=f"payout#{payout.payout_id}#{text[:12]}"))
