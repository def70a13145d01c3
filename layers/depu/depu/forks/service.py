"""What a user can do with shadow forks; the bot's /shadow_fork menu calls only this module.

Every function takes the acting user's id and reaches only that user's forks (another user's fork is
"not found", exactly like a missing one). Lifecycle changes start the Step Functions state machines; writes to
a fork (funding, impersonation, snapshots) go through the same proxy path as the user's own RPC calls, so they
are journaled like any other write.
"""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import boto3
import requests

from depu.config import get_settings
from depu.errors import UserError
from depu.forks import chainids, hosts, journal, proxy, tokens
from depu.forks.models import ACTIVE, ALIVE, DELETED, DELETING, FAILED, REQUESTED, SERVING, Fork, utcnow_iso

MAX_ALIVE_FORKS = 3
FORK_LIFETIME_S = 24 * 3600
WARN_BEFORE_S = 3600
DEFAULT_SYNC_INTERVAL_S = 600
MIN_SYNC_INTERVAL_S = 60
PROVISION_TIMEOUT_S = 300
REBASE_TIMEOUT_S = 300
STOP_TIMEOUT_S = 60
MAX_FUND_ETH = Decimal(1_000_000)
WEI_PER_ETH = 10**18


@dataclass
class Created:
    fork: Fork
    rpc_url: str


@dataclass
class ForkInfo:
    fork: Fork
    journal_size: int
    mainnet_head: int | None
    follow: dict[str, Any] | None = None  # the host's depu_followStatus, when the fork follows

    @property
    def base_block(self) -> int | None:
        """Where the fork is now: a following fork moves on its host, ahead of the recorded base."""
        live = (self.follow or {}).get("base_block")
        recorded = int(self.fork.base_block) if self.fork.base_block is not None else None
        if isinstance(live, int) and (recorded is None or live >= recorded):
            return live
        return recorded

    @property
    def blocks_behind(self) -> int | None:
        if self.mainnet_head is None or self.base_block is None:
            return None
        return max(0, self.mainnet_head - self.base_block)


def _sfn():
    return boto3.client("stepfunctions")


# ------------------------------------------------------------------------------------------------ lifecycle
def parse_block(text: str | int | None) -> str:
    """'latest' or a block number as a decimal string; a clear error for anything else."""
    value = str(text if text is not None else "latest").strip().lower()
    if value in ("", "latest", "head"):
        return "latest"
    if not value.isdigit() or int(value) <= 0:
        raise UserError("A fork starts at <b>latest</b> or at a positive block number, e.g. <code>19000000</code>.")
    head = mainnet_head()
    if head is not None and int(value) > head:
        raise UserError(f"Block {int(value)} is not mined yet: mainnet is at block {head}.")
    return str(int(value))


MAINNET_CHAIN_ID_WARNING = (
    "⚠️ This fork keeps mainnet's chain id 1: every transaction you sign for it is also valid on Ethereum mainnet, "
    "and anyone who sees it (the fork's host included) could broadcast it there for real. Sign only with throwaway "
    "keys, or use a fork with its own chain id."
)


def create_fork(user_id: int, chat_id: int, block: str | int | None = "latest", keep_mainnet_chain_id: bool = False) -> Created:
    """Record a fork, give it an RPC URL (shown once), assign it to the least loaded approved host and start
    the create state machine. The fork gets its own chain id (``chainids``) unless the user explicitly chose to
    keep mainnet's (see MAINNET_CHAIN_ID_WARNING)."""
    base = parse_block(block)
    alive = [fork for fork in list_forks(user_id) if fork.status in ALIVE]
    if len(alive) >= MAX_ALIVE_FORKS:
        raise UserError(f"You already have {len(alive)} live shadow forks (the limit is {MAX_ALIVE_FORKS}). Delete one first.")
    host = hosts.choose()
    if host is None:
        raise UserError("No approved fork host is online right now, so a fork cannot be built. Try again in a few minutes.")
    now = int(time.time())
    fork_id = "f" + secrets.token_hex(4)
    token, token_hash = tokens.issue(fork_id, user_id, now + FORK_LIFETIME_S + 3600)
    fork = Fork(
        fork_id,
        user_id=user_id,
        chat_id=chat_id,
        created_at=utcnow_iso(),
        status=REQUESTED,
        block_requested=base,
        chain_id=chainids.MAINNET if keep_mainnet_chain_id else chainids.for_fork(fork_id),
        rpc_token_hash=token_hash,
        auto_sync=False,
        follow=True,
        sync_interval_s=DEFAULT_SYNC_INTERVAL_S,
        sync_loop="",
        expires_at=now + FORK_LIFETIME_S,
        warned=False,
        next_seq=0,
        lock_until=0,
        host_snapshots={},
        assigned_host=host,
    )
    fork.save(condition=Fork.fork_id.does_not_exist())
    try:
        start_create(fork, base, "is ready", name=f"{fork_id}-create")
    except Exception:
        # never leave a 'requested' fork behind to count against the user's quota
        fork.update(actions=[Fork.status.set(FAILED), Fork.failure.set("StartFailed")])
        tokens.revoke(token_hash)
        raise
    return Created(fork, tokens.rpc_url(token))


def start_create(fork: Fork, block: str, ready_text: str, name: str) -> str:
    payload = {
        "fork_id": fork.fork_id,
        "chat_id": int(fork.chat_id),
        "block": block,
        "ready_text": ready_text,
        "provision_timeout_s": PROVISION_TIMEOUT_S,
    }
    return _start(get_settings().fork_create_state_machine_arn, name, payload)


def start_delete(fork: Fork, reason_text: str = "was deleted") -> str:
    payload = {"fork_id": fork.fork_id, "chat_id": int(fork.chat_id), "reason_text": reason_text, "stop_timeout_s": STOP_TIMEOUT_S}
    return _start(get_settings().fork_delete_state_machine_arn, f"{fork.fork_id}-delete", payload)


def _start(arn: str, name: str, payload: dict[str, Any]) -> str:
    client = _sfn()
    try:
        return client.start_execution(stateMachineArn=arn, name=name, input=json.dumps(payload))["executionArn"]
    except client.exceptions.ExecutionAlreadyExists:
        return f"{arn.replace(':stateMachine:', ':execution:')}:{name}"


def delete_fork(user_id: int, fork_id: str) -> Fork:
    """Revoke the RPC URL at once, then let the delete state machine stop the host and tell the user."""
    fork = owned(user_id, fork_id)
    if fork.status in (DELETING, DELETED):
        raise UserError("This fork is already being deleted.")
    tokens.revoke(fork.rpc_token_hash)
    start_delete(fork)
    return fork


def sync_now(user_id: int, fork_id: str) -> str:
    fork = _serving(user_id, fork_id)
    payload = {"fork_id": fork.fork_id, "chat_id": int(fork.chat_id), "once": True, "interval_s": 0, "rebase_timeout_s": REBASE_TIMEOUT_S}
    return _start(get_settings().fork_sync_state_machine_arn, f"{fork.fork_id}-sync-{int(time.time() * 1000)}", payload)


def set_auto_sync(user_id: int, fork_id: str, enabled: bool, interval_s: int = DEFAULT_SYNC_INTERVAL_S) -> Fork:
    """Switch the sync loop on (a new loop replaces any older one) or off (the loop ends at its next turn)."""
    fork = owned(user_id, fork_id)
    if fork.status not in ALIVE:
        raise UserError("This fork is no longer running.")
    interval = max(MIN_SYNC_INTERVAL_S, int(interval_s))
    loop = f"{fork.fork_id}-loop-{int(time.time() * 1000)}" if enabled else ""
    fork.update(
        actions=[Fork.auto_sync.set(enabled), Fork.sync_interval_s.set(interval), Fork.sync_loop.set(loop)],
        condition=Fork.status.is_in(*ALIVE),
    )
    if enabled:
        payload = {"fork_id": fork.fork_id, "chat_id": int(fork.chat_id), "once": False, "interval_s": interval, "rebase_timeout_s": REBASE_TIMEOUT_S}
        _start(get_settings().fork_sync_state_machine_arn, loop, payload)
    return fork


def set_follow(user_id: int, fork_id: str, enabled: bool) -> Fork:
    """Follow mode on or off for one fork: recorded on the fork (so a rebuilt fork keeps it) and told to the
    fork's host now (``depu_setFollow``, a method only DePU itself sends; the proxy refuses it from users)."""
    fork = owned(user_id, fork_id)
    if fork.status not in ALIVE:
        raise UserError("This fork is no longer running.")
    fork.update(actions=[Fork.follow.set(bool(enabled))], condition=Fork.status.is_in(*ALIVE))
    if fork.host_rpc_url and fork.status in SERVING:
        try:
            proxy.default_proxy()._forward(fork, "depu_setFollow", [bool(enabled)], 1)
        except (requests.RequestException, ValueError):
            pass  # the host learns it from the next provision or rebase task
    return fork


def follow_status(fork: Fork) -> dict[str, Any] | None:
    """What following has done on the fork's host (base block, steps, upstream calls per block, conflicts),
    or None when the host does not say."""
    if not fork.host_rpc_url or fork.status not in SERVING:
        return None
    try:
        answer = proxy.default_proxy()._forward(fork, "depu_followStatus", [], 1)
    except (requests.RequestException, ValueError):
        return None
    status = answer.get("result")
    return status if isinstance(status, dict) else None


@dataclass
class RecentTx:
    seq: int
    method: str
    tx_hash: str
    reverted: bool


@dataclass
class RevertExplained:
    tx_hash: str
    reverted: bool
    reason: str | None  # the decoded revert reason, None when the transaction succeeded
    tree: list[str]  # the compact call tree (depu.forks.debug.call_tree)


def recent_transactions(user_id: int, fork_id: str, limit: int = 5) -> list[RecentTx]:
    """The fork's latest journaled transactions, newest first, with whether each reverted."""
    fork = owned(user_id, fork_id)
    found = []
    for entry in reversed(journal.entries(fork.fork_id)):
        outcome = entry.outcome or {}
        if outcome.get("kind") == "tx" and outcome.get("hash"):
            found.append(RecentTx(int(entry.seq), entry.method, str(outcome["hash"]), outcome.get("status") == 0))
            if len(found) >= limit:
                break
    return found


def why_reverted(user_id: int, fork_id: str, tx_hash: str) -> RevertExplained:
    """Trace one of the fork's transactions (callTracer) and say why it reverted, with its call tree."""
    from depu.forks import debug

    fork = _serving_for_reads(user_id, fork_id)
    digits = str(tx_hash or "").strip().lower()
    if len(digits) != 66 or not digits.startswith("0x") or any(c not in "0123456789abcdef" for c in digits[2:]):
        raise UserError("That is not a transaction hash (0x and 64 hex digits).")
    answer = proxy.default_proxy().call(fork, {"jsonrpc": "2.0", "id": 1, "method": "debug_traceTransaction",
                                               "params": [digits, {"tracer": "callTracer"}]})
    frame = answer.get("result")
    if not isinstance(frame, dict):
        message = str((answer.get("error") or {}).get("message") or "no trace")
        raise UserError("This transaction is not on the fork now (a rebuild or a follow step replays the journal; a "
                        f"transaction sent with eth_sendTransaction gets a new hash then): {_short(message)}")
    found = debug.reason(frame)
    return RevertExplained(digits, found is not None, found.text if found else None, debug.call_tree(frame))


def _serving_for_reads(user_id: int, fork_id: str) -> Fork:
    fork = owned(user_id, fork_id)
    if fork.status not in SERVING:
        raise UserError(f"This fork is {fork.status} right now; try again when it is active.")
    return fork


def fund_erc20(user_id: int, fork_id: str, token: str, address: str, amount: str | int) -> dict[str, Any]:
    """Set ``address``'s balance of ``token`` to ``amount`` (in the token's smallest units) on the fork:
    ``depu_setErc20Balance`` through the proxy, journaled like any write."""
    fork = _serving(user_id, fork_id)
    account, contract = checksum_address(address), checksum_address(token)
    text = str(amount).strip()
    if not text.isdigit() or len(text) > 78:
        raise UserError("The amount is a whole number of the token's smallest units, e.g. <code>1000000</code> for 1 USDC.")
    answer = proxy.default_proxy().call(fork, {"jsonrpc": "2.0", "id": 1, "method": "depu_setErc20Balance",
                                               "params": [contract, account, hex(int(text))]})
    if "error" in answer:
        import html

        raise UserError(html.escape(str(answer["error"].get("message", ""))[:400]))
    return answer["result"]


def rotate_url(user_id: int, fork_id: str) -> str:
    """A new RPC URL for the fork; the old one stops answering. (Tokens are stored hashed: this is the only
    way to see a fork's URL again.)"""
    fork = owned(user_id, fork_id)
    if fork.status not in ALIVE:
        raise UserError("This fork is no longer running.")
    token, token_hash = tokens.issue(fork.fork_id, user_id, int(fork.expires_at) + 3600)
    old = fork.rpc_token_hash
    fork.update(actions=[Fork.rpc_token_hash.set(token_hash)], condition=Fork.status.is_in(*ALIVE))
    tokens.revoke(old)
    return tokens.rpc_url(token)


# ------------------------------------------------------------------------------------------------ reading
def list_forks(user_id: int) -> list[Fork]:
    """The user's forks, newest first (deleted ones included: the list view filters)."""
    return list(Fork.by_user.query(int(user_id), scan_index_forward=False))


def owned(user_id: int, fork_id: str) -> Fork:
    try:
        fork = Fork.get(str(fork_id)[:40], consistent_read=True)
    except Fork.DoesNotExist:
        fork = None
    if fork is None or int(fork.user_id) != int(user_id):
        raise UserError("No such shadow fork. Send /shadow_fork to see yours.")
    return fork


def info(user_id: int, fork_id: str) -> ForkInfo:
    fork = owned(user_id, fork_id)
    return ForkInfo(fork, journal.size(fork.fork_id), mainnet_head(), follow_status(fork))


def mainnet_head() -> int | None:
    """Mainnet's block number, or None when the chain RPC does not answer (info then omits 'behind')."""
    try:
        answer = requests.post(
            get_settings().chain_rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}, timeout=3
        ).json()
        return int(answer["result"], 16)
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return None


# ------------------------------------------------------------------------------------------------ writes
def checksum_address(text: str) -> str:
    """A checksummed address, or a clear error: mixed case must be a valid checksum (typo protection)."""
    from web3 import Web3

    candidate = (text or "").strip()
    digits = candidate[2:]
    mixed_case = digits != digits.lower() and digits != digits.upper()
    if not Web3.is_address(candidate) or (mixed_case and not Web3.is_checksum_address(candidate)):
        raise UserError(f"<code>{_short(candidate)}</code> is not an Ethereum address (0x followed by 40 hex digits, with a valid checksum if mixed-case).")
    return Web3.to_checksum_address(candidate)


def parse_eth(text: str) -> Decimal:
    try:
        amount = Decimal(str(text).strip())
    except InvalidOperation:
        raise UserError("The amount must be a number of ETH, e.g. <code>10</code> or <code>0.5</code>.") from None
    if not amount.is_finite() or amount <= 0 or amount > MAX_FUND_ETH:
        raise UserError(f"The amount must be more than 0 and at most {MAX_FUND_ETH} ETH.")
    return amount


def fund(user_id: int, fork_id: str, address: str, eth: str | Decimal) -> int:
    """Add ``eth`` to ``address``'s balance on the fork (gas-free); returns the new balance in wei."""
    fork = _serving(user_id, fork_id)
    account = checksum_address(address)
    amount = parse_eth(str(eth))
    balance = int(_rpc(fork, "eth_getBalance", [account, "latest"]), 16)
    new_balance = balance + int(amount * WEI_PER_ETH)
    _rpc(fork, "anvil_setBalance", [account, hex(new_balance)])
    return new_balance


def impersonate(user_id: int, fork_id: str, address: str, stop: bool = False) -> str:
    fork = _serving(user_id, fork_id)
    account = checksum_address(address)
    _rpc(fork, "anvil_stopImpersonatingAccount" if stop else "anvil_impersonateAccount", [account])
    return account


def snapshot(user_id: int, fork_id: str) -> str:
    return str(_rpc(_serving(user_id, fork_id), "evm_snapshot", []))


def revert(user_id: int, fork_id: str, snapshot_id: str) -> bool:
    return bool(_rpc(_serving(user_id, fork_id), "evm_revert", [snapshot_id]))


def _serving(user_id: int, fork_id: str) -> Fork:
    fork = owned(user_id, fork_id)
    if fork.status != ACTIVE:
        raise UserError(f"This fork is {fork.status} right now; try again when it is active.")
    return fork


def _rpc(fork: Fork, method: str, params: list[Any]) -> Any:
    answer = proxy.default_proxy().call(fork, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    if "error" in answer:
        raise UserError(f"The fork refused {method}: {_short(str(answer['error'].get('message', '')))}")
    return answer.get("result")


def _short(text: str, limit: int = 80) -> str:
    import html

    return html.escape(text[:limit] + ("…" if len(text) > limit else ""))
