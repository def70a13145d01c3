"""The credit ledger: every movement of credits is a LedgerTable entry written in the same transaction as the
balance change on the profile.

Why this shape:
- The balance lives on the profile (``credits`` available, ``held`` reserved) so reading it is one get.
- Each movement is an entry keyed by the caller's idempotency id (``entry_id``) and written with
  ``attribute_not_exists(entry_id)``: a retried Lambda, a redelivered queue message or a double-tapped button
  applies it once. The balance update carries ``credits >= :amount`` so the balance can never go negative.
- A hold is closed exactly once, by ``settle`` or ``release`` (both write the same ``close#<hold_id>`` entry),
  so a job can never be charged twice nor refunded after being charged.

Amounts are integer credits (1 credit = 0.001 USD).
"""
from __future__ import annotations

from dataclasses import dataclass

from pynamodb.connection import Connection
from pynamodb.attributes import NumberAttribute, UnicodeAttribute, UTCDateTimeAttribute
from pynamodb.exceptions import TransactWriteError
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from depu.config import get_settings
from depu.retry import LEDGER_TRANSACTION
from depu.users import Profile, utcnow

STARTER_ENTRY = "grant#starter"


class LedgerError(Exception):
    """A ledger operation that cannot be applied."""


class InsufficientCredits(LedgerError):
    def __init__(self, user_id: int, needed: int, available: int | None):
        self.user_id, self.needed, self.available = user_id, needed, available
        super().__init__(f"user {user_id} needs {needed} credits, has {available}")


class UnknownAccount(LedgerError):
    """The user has no profile yet (never sent /start)."""


class UnknownHold(LedgerError):
    """``settle`` was asked to close a hold that was never placed."""


class HoldMismatch(LedgerError):
    """A hold id was reused with a different amount: a bug in the caller, not a retry."""


class LedgerEntry(Model):
    """One movement. ``amount`` is positive; ``kind`` says which way it moved."""

    class Meta:
        table_name = get_settings().ledger_table

    account = UnicodeAttribute(hash_key=True)  # "user#<id>" or "provider#<id>"
    entry_id = UnicodeAttribute(range_key=True)  # the idempotency key, e.g. "hold#<job>", "close#<job>"
    kind = UnicodeAttribute()  # grant | hold | settle | release | earn
    amount = NumberAttribute()  # grant/earn: credited; hold: reserved; settle: charged; release: returned
    released = NumberAttribute(default=0)  # settle/release: what went back to available credits
    reason = UnicodeAttribute(null=True)
    hold_id = UnicodeAttribute(null=True)
    job_id = UnicodeAttribute(null=True)
    provider_id = NumberAttribute(null=True)
    user_id = NumberAttribute(null=True)  # on provider entries: who paid
    created_at = UTCDateTimeAttribute()


@dataclass(frozen=True)
class Balance:
    credits: int
    held: int
    earned: int


def user_account(user_id: int) -> str:
    return f"user#{int(user_id)}"


def provider_account(provider_id: int) -> str:
    return f"provider#{int(provider_id)}"


def _hold_entry(hold_id: str) -> str:
    return f"hold#{hold_id}"


def _close_entry(hold_id: str) -> str:
    return f"close#{hold_id}"


def _check_amount(amount: int, *, allow_zero: bool = False) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValueError(f"credit amounts are whole numbers, got {amount!r}")
    if amount < 0 or (amount == 0 and not allow_zero):
        raise ValueError(f"credit amount must be positive, got {amount}")
    return amount


def _check_id(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise ValueError(f"{what} must be a non-empty string of at most 200 characters")
    return value


class _Transaction:
    """A TransactWrite whose items carry labels, so a cancellation says *which* condition failed.

    PynamoDB sends condition checks, then puts, then updates; DynamoDB's cancellation reasons come back in
    that order, one per item. We record labels in the same order to map reasons back to meaning."""

    def __init__(self) -> None:
        self._checks: list[tuple[str, tuple]] = []
        self._puts: list[tuple[str, tuple]] = []
        self._updates: list[tuple[str, tuple]] = []

    def check(self, label: str, model_cls: type[Model], hash_key, condition) -> None:
        self._checks.append((label, (model_cls, hash_key, condition)))

    def put(self, label: str, model: Model, condition) -> None:
        self._puts.append((label, (model, condition)))

    def update(self, label: str, model: Model, actions: list, condition=None) -> None:
        self._updates.append((label, (model, actions, condition)))

    def commit(self) -> set[str]:
        """Apply all items or none. Returns the labels whose condition failed (empty set: applied). A
        transaction DynamoDB cancelled for a conflict or throttling is retried by LEDGER_TRANSACTION."""
        labels = [label for label, _ in self._checks + self._puts + self._updates]

        def attempt() -> set[str]:
            try:
                with TransactWrite(connection=Connection()) as transaction:
                    for _, (model_cls, hash_key, condition) in self._checks:
                        transaction.condition_check(model_cls, hash_key, condition=condition)
                    for _, (model, condition) in self._puts:
                        transaction.save(model, condition=condition)
                    for _, (model, actions, condition) in self._updates:
                        transaction.update(model, actions=actions, condition=condition)
                return set()
            except TransactWriteError as error:
                codes = _cancellation_codes(error)
                failed = {labels[i] for i, code in codes.items() if code == "ConditionalCheckFailed"}
                if failed:
                    return failed
                raise

        return LEDGER_TRANSACTION.retrying(_collided)(attempt)


def _cancellation_codes(error: TransactWriteError) -> dict[int, str]:
    """Each cancelled item's reason code, by the item's position (none unless DynamoDB cancelled it)."""
    if error.cause_response_code != "TransactionCanceledException":
        return {}
    return {i: reason.code for i, reason in enumerate(error.cancellation_reasons or []) if reason is not None}


def _collided(error: BaseException) -> bool:
    """A transaction cancelled because another one touched an item, or throttled: safe to run again."""
    return isinstance(error, TransactWriteError) and any(
        code in ("TransactionConflict", "ThrottlingError") for code in _cancellation_codes(error).values()
    )


def _entry(account: str, entry_id: str, kind: str, amount: int, **fields) -> LedgerEntry:
    return LedgerEntry(account, entry_id, kind=kind, amount=amount, created_at=utcnow(), **fields)


def open_account(profile: Profile, starter: int) -> bool:
    """Create ``profile`` with ``starter`` credits and its ledger entry, atomically. False if it exists."""
    _check_amount(starter, allow_zero=True)
    profile.credits = starter
    transaction = _Transaction()
    transaction.put("profile", profile, Profile.user_id.does_not_exist())
    if starter:
        transaction.put(
            "entry",
            _entry(user_account(profile.user_id), STARTER_ENTRY, "grant", starter, reason="Welcome credits"),
            LedgerEntry.entry_id.does_not_exist(),
        )
    failed = transaction.commit()
    if failed - {"profile", "entry"}:
        raise LedgerError(f"unexpected failure {failed}")
    return not failed


def grant(user_id: int, amount: int, entry_id: str, reason: str) -> bool:
    """Add ``amount`` available credits. False (and nothing changes) if ``entry_id`` was already applied."""
    _check_amount(amount)
    _check_id(entry_id, "entry_id")
    transaction = _Transaction()
    transaction.put(
        "entry",
        _entry(user_account(user_id), entry_id, "grant", amount, reason=reason),
        LedgerEntry.entry_id.does_not_exist(),
    )
    transaction.update(
        "profile",
        Profile(user_id),
        [Profile.credits.add(amount), Profile.updated_at.set(utcnow())],
        Profile.user_id.exists(),
    )
    failed = transaction.commit()
    if "entry" in failed:
        return False
    if "profile" in failed:
        raise UnknownAccount(f"user {user_id} has no profile")
    return True


def hold(user_id: int, amount: int, hold_id: str) -> None:
    """Reserve ``amount`` credits for a job (available -> held). Raises ``InsufficientCredits``.

    Repeating the same ``hold_id`` with the same amount is a no-op (already held, or already closed)."""
    _check_amount(amount)
    _check_id(hold_id, "hold_id")
    entry_id = _hold_entry(hold_id)
    transaction = _Transaction()
    transaction.put(
        "entry",
        _entry(user_account(user_id), entry_id, "hold", amount, hold_id=hold_id),
        LedgerEntry.entry_id.does_not_exist(),
    )
    transaction.update(
        "profile",
        Profile(user_id),
        [Profile.credits.add(-amount), Profile.held.add(amount), Profile.updated_at.set(utcnow())],
        Profile.user_id.exists() & (Profile.credits >= amount),
    )
    failed = transaction.commit()
    if "entry" in failed:
        existing = _get_entry(user_account(user_id), entry_id)
        if existing is not None and int(existing.amount) != amount:
            raise HoldMismatch(f"hold {hold_id} exists with {int(existing.amount)} credits, not {amount}")
        return
    if "profile" in failed:
        profile = _profile_or_none(user_id)
        if profile is None:
            raise UnknownAccount(f"user {user_id} has no profile")
        raise InsufficientCredits(user_id, amount, int(profile.credits or 0))


def settle(
    user_id: int, hold_id: str, charge: int, *, provider_id: int | None, job_id: str, provider_share_pct: int = 100
) -> int:
    """Close a hold: charge ``min(charge, held amount)``, return the rest to available credits, and credit the
    provider's earnings with ``provider_share_pct`` percent of what was charged (rounded down; DePU's fee is
    the rest). Idempotent by ``hold_id``: a repeat returns the amount the first call charged (0 if the hold
    was released instead). Returns the amount charged."""
    _check_amount(charge, allow_zero=True)
    if not 0 <= provider_share_pct <= 100:
        raise ValueError(f"provider share must be 0..100 percent, got {provider_share_pct}")
    return _close(user_id, hold_id, charge, provider_id=provider_id, job_id=job_id, kind="settle",
                  provider_share_pct=provider_share_pct)


def release(user_id: int, hold_id: str) -> None:
    """Cancel a hold before any use: everything goes back to available credits. Idempotent; releasing a hold
    that was never placed (the hold itself failed) is a no-op."""
    try:
        _close(user_id, hold_id, 0, provider_id=None, job_id=None, kind="release")
    except UnknownHold:
        return


def provider_earnings(charged: int, provider_share_pct: int) -> int:
    """The provider's part of a charge, rounded down to a whole credit."""
    return charged * provider_share_pct // 100


def _close(
    user_id: int, hold_id: str, charge: int, *, provider_id, job_id, kind: str, provider_share_pct: int = 100
) -> int:
    _check_id(hold_id, "hold_id")
    account = user_account(user_id)
    placed = _get_entry(account, _hold_entry(hold_id))
    if placed is None:
        raise UnknownHold(f"no hold {hold_id} for user {user_id}")
    held_amount = int(placed.amount)
    charged = min(charge, held_amount)
    returned = held_amount - charged
    now = utcnow()

    transaction = _Transaction()
    transaction.put(
        "close",
        _entry(account, _close_entry(hold_id), kind, charged if kind == "settle" else returned,
               released=returned, hold_id=hold_id, job_id=job_id, provider_id=provider_id),
        LedgerEntry.entry_id.does_not_exist(),
    )
    payer_actions = [Profile.held.add(-held_amount), Profile.updated_at.set(now)]
    if returned:
        payer_actions.append(Profile.credits.add(returned))
    earned = provider_earnings(charged, provider_share_pct)
    if provider_id is not None and earned:
        transaction.put(
            "earn",
            _entry(provider_account(provider_id), f"earn#{user_id}#{hold_id}", "earn", earned,
                   hold_id=hold_id, job_id=job_id, user_id=int(user_id)),
            LedgerEntry.entry_id.does_not_exist(),
        )
        if int(provider_id) == int(user_id):
            # One transaction may touch an item once: a user renting their own GPU is one update.
            payer_actions.append(Profile.earned.add(earned))
        else:
            # Upsert: a provider's earnings are kept even if they never opened the bot themselves.
            transaction.update("provider", Profile(provider_id), [Profile.earned.add(earned)])
    transaction.update("payer", Profile(user_id), payer_actions, Profile.held >= held_amount)
    failed = transaction.commit()
    if not failed:
        return charged
    if "close" in failed:
        closed = _get_entry(account, _close_entry(hold_id))
        if closed is None:  # pragma: no cover - the entry that made us fail cannot vanish
            raise LedgerError(f"hold {hold_id} closing conflict")
        return int(closed.amount) if closed.kind == "settle" else 0
    raise LedgerError(f"hold {hold_id} for user {user_id} cannot be closed: {sorted(failed)} failed")


def balance(user_id: int) -> Balance:
    profile = _profile_or_none(user_id)
    if profile is None:
        return Balance(0, 0, 0)
    return Balance(int(profile.credits or 0), int(profile.held or 0), int(profile.earned or 0))


def history(user_id: int, limit: int = 20) -> list[LedgerEntry]:
    """The user's most recent movements, newest first.

    The sort key is the idempotency id, not time, so entries are read and sorted here; a user's ledger is
    small (a few entries per job)."""
    entries = list(LedgerEntry.query(user_account(user_id), consistent_read=True))
    entries.sort(key=lambda entry: (entry.created_at, entry.entry_id), reverse=True)
    return entries[: max(0, limit)]


def provider_history(provider_id: int, limit: int = 20) -> list[LedgerEntry]:
    """What a provider earned, newest first."""
    entries = list(LedgerEntry.query(provider_account(provider_id), consistent_read=True))
    entries.sort(key=lambda entry: (entry.created_at, entry.entry_id), reverse=True)
    return entries[: max(0, limit)]


def _get_entry(account: str, entry_id: str) -> LedgerEntry | None:
    try:
        return LedgerEntry.get(account, entry_id, consistent_read=True)
    except LedgerEntry.DoesNotExist:
        return None


def _profile_or_none(user_id: int) -> Profile | None:
    try:
        return Profile.get(user_id, consistent_read=True)
    except Profile.DoesNotExist:
        return None
