"""DePU's local "mainnet": an anvil chain (chain id 1) with DePU's own test contracts and known activity.

The analytics indexer, the shadow-fork feature and their tests need a chain whose every transfer is known in
advance. ``DevChain`` starts anvil on 127.0.0.1, deploys the contracts compiled into ``contracts/build/``
(a standard 18-decimal ERC-20, a 6-decimal one, an ERC-721-shaped collectible and a token that emits
Transfer logs in shapes the standard forbids) and generates activity from a seed, returning the ground truth
(``Transfer`` records) that tests compare the indexer against. ``snapshot()``/``revert()`` let a test force
a reorg: revert to an earlier block and mine different transactions on top.

    with DevChain() as chain:
        tokens = chain.deploy_defaults()
        truth = chain.activity(rounds=20)

``python -m local.devchain`` runs one for manual use and prints its URL, contracts and accounts.
"""
from __future__ import annotations

import argparse
import atexit
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from local.lifetime import ends_with_this_process

if TYPE_CHECKING:
    from web3 import Web3

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "contracts" / "build"
ANVIL_CANDIDATES = (
    ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil",
    ROOT / "node_modules" / ".bin" / "anvil",
)
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
TX_GAS = 300_000  # explicit, so txs queued before a manual mine never depend on estimates of pending state

# What each OddToken ``kind`` emits (see contracts/src/OddToken.sol) and how a correct decoder classifies it.
ODD_SHAPES: dict[int, str] = {
    1: "missing_data",  # 3 topics, no data
    2: "extra_topics",  # 4 topics and a data word
    3: "short_data",  # 3 topics, 16 bytes of data
    4: "unindexed",  # 2 topics, to and value in data: decodable, all three words present
    5: "unindexed",  # 1 topic, from, to and value in data: decodable
}


def anvil_binary() -> str:
    """The anvil executable from the repo's node tools (or PATH), or a clear error."""
    for candidate in ANVIL_CANDIDATES:
        if candidate.exists():
            return str(candidate)
    found = shutil.which("anvil")
    if found:
        return found
    raise FileNotFoundError("anvil not found: run `npm ci` in the repository root")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as anvil binds: a TIME_WAIT port is free
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def load_artifact(name: str) -> dict[str, Any]:
    """A compiled contract (``abi`` and ``bytecode``) from contracts/build/, built by contracts/build.sh."""
    return json.loads((ARTIFACTS / f"{name}.json").read_text())


@dataclass(frozen=True)
class Token:
    """A deployed test contract. ``kind`` is erc20, nft or odd."""

    address: str
    kind: str
    symbol: str | None = None
    decimals: int | None = None


@dataclass
class Transfer:
    """One value movement as the chain recorded it: the ground truth tests compare the indexer against.

    ``kind``: native (ETH in a tx's value), erc20, nft (``token_id`` set, no amount) or odd (``shape`` says
    which non-standard log; ``amount`` is what a correct decoder can recover, or None).
    ``log_index`` is the block-wide log index (None for native transfers)."""

    kind: str
    sender: str
    recipient: str
    amount: int | None
    token: str | None = None
    token_id: int | None = None
    shape: str = "standard"
    block_number: int | None = None
    block_hash: str | None = None
    tx_hash: str | None = None
    tx_index: int | None = None
    log_index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Pending:
    tx_hash: str
    transfers: list[Transfer] = field(default_factory=list)


class DevChain:
    """An anvil process on 127.0.0.1 posing as mainnet (chain id 1), with helpers to make known activity.

    ``block_time=None`` means automine (a block per transaction) unless a batch is open; activity() opens
    one per round so several transfers share a block, like mainnet."""

    def __init__(
        self,
        port: int | None = None,
        *,
        chain_id: int = 1,
        block_time: float | None = None,
        accounts: int = 10,
        log_path: Path | None = None,
        extra_args: list[str] | None = None,
    ):
        self.port = port or free_port()
        self.chain_id = chain_id
        self.block_time = block_time
        self.account_count = accounts
        self.log_path = log_path
        self.extra_args = list(extra_args or [])
        self.rpc_url = f"http://127.0.0.1:{self.port}"
        self.tokens: dict[str, Token] = {}
        self.pair: str | None = None  # the DepuPair of deploy_market()
        self.history: list[Transfer] = []  # every transfer made through this object, mints included
        self._process: subprocess.Popen | None = None
        self._log_file = None
        self._w3: Web3 | None = None
        self._session = requests.Session()
        self._pending: list[_Pending] = []
        self._batching = False

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 30.0) -> "DevChain":
        if not _port_free(self.port):  # else the readiness probe could be answered by whoever holds the port
            raise RuntimeError(f"port {self.port} on 127.0.0.1 is taken")
        command = [
            anvil_binary(),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--chain-id", str(self.chain_id),
            "--accounts", str(self.account_count),
            "--balance", "100000",
        ]
        if self.block_time:
            command += ["--block-time", str(self.block_time)]
        command += self.extra_args
        self._log_file = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._process = subprocess.Popen(
            command, stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=ends_with_this_process(),
        )
        atexit.register(self.stop)  # anvil runs in its own session: never leave it behind
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"anvil exited with {self._process.returncode} (port {self.port} taken?)")
            try:
                self.rpc("eth_chainId")
                return self
            except requests.RequestException:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"anvil did not answer on {self.rpc_url} within {timeout}s")

    def stop(self) -> None:
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._log_file not in (None, subprocess.DEVNULL):
            self._log_file.close()
        self._log_file = None
        self._session.close()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> "DevChain":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ raw access
    def rpc(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call; raises RuntimeError with the node's message on an error answer."""
        response = self._session.post(
            self.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}, timeout=30
        )
        response.raise_for_status()
        body = response.json()
        if "error" in body:
            raise RuntimeError(f"{method}: {body['error'].get('message', body['error'])}")
        return body["result"]

    @property
    def w3(self) -> "Web3":
        if self._w3 is None:
            from web3 import Web3

            self._w3 = Web3(Web3.HTTPProvider(self.rpc_url, request_kwargs={"timeout": 30}))
        return self._w3

    @property
    def accounts(self) -> list[str]:
        """anvil's unlocked dev accounts (checksummed); account 0 deploys and funds."""
        return [self.w3.to_checksum_address(a) for a in self.rpc("eth_accounts")]

    def block_number(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def block(self, number: int | str = "latest") -> dict[str, Any]:
        tag = hex(number) if isinstance(number, int) else number
        return self.rpc("eth_getBlockByNumber", tag, False)

    # ------------------------------------------------------------------ mining and reorgs
    def mine(self, blocks: int = 1) -> int:
        """Mine ``blocks`` blocks (including any queued txs); returns the new head number."""
        self.rpc("anvil_mine", hex(blocks))
        return self.block_number()

    def snapshot(self) -> str:
        """Remember the current state; ``revert(id)`` returns to it (a reorg when different blocks follow)."""
        return self.rpc("evm_snapshot")

    def revert(self, snapshot_id: str) -> None:
        """Return to a snapshot; transfers in blocks above the new head leave ``history``."""
        if not self.rpc("evm_revert", snapshot_id):
            raise RuntimeError(f"anvil refused to revert to snapshot {snapshot_id}")
        head = self.block_number()
        self.history = [t for t in self.history if t.block_number is None or t.block_number <= head]

    def begin_block(self) -> None:
        """Queue the following transactions into one block (automine off until ``end_block``)."""
        self.rpc("evm_setAutomine", False)
        self._batching = True

    def end_block(self) -> list[Transfer]:
        """Mine the queued transactions into one block and return their transfers with positions filled."""
        self.rpc("evm_mine")
        self.rpc("evm_setAutomine", True)
        self._batching = False
        return self._settle()

    # ------------------------------------------------------------------ contracts
    def deploy(self, artifact: str, *args: Any, sender: str | None = None) -> str:
        """Deploy contracts/build/<artifact>.json with constructor ``args``; returns its checksummed address."""
        return self._deploy(artifact, *args, sender=sender)["contractAddress"]

    def _deploy(self, artifact: str, *args: Any, sender: str | None = None) -> dict[str, Any]:
        compiled = load_artifact(artifact)
        contract = self.w3.eth.contract(abi=compiled["abi"], bytecode=compiled["bytecode"])
        tx_hash = contract.constructor(*args).transact({"from": sender or self.accounts[0], "gas": 3_000_000})
        if self._batching:
            raise RuntimeError("deploy outside a begin_block()/end_block() batch")
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        if receipt["status"] != 1:
            raise RuntimeError(f"deploying {artifact} failed")
        return dict(receipt)

    def deploy_token(self, name: str, symbol: str, decimals: int, supply: int, key: str | None = None) -> Token:
        """A standard ERC-20 with ``supply`` base units minted to account 0 (a Transfer from 0x0)."""
        receipt = self._deploy("DepuToken", name, symbol, decimals, supply)
        address = receipt["contractAddress"]
        token = Token(address, "erc20", symbol, decimals)
        mint_log = receipt["logs"][0]
        self.history.append(Transfer(
            "erc20", ZERO_ADDRESS, self.accounts[0], supply, token=address, block_number=receipt["blockNumber"],
            block_hash="0x" + bytes(receipt["blockHash"]).hex(), tx_hash="0x" + bytes(receipt["transactionHash"]).hex(),
            tx_index=receipt["transactionIndex"], log_index=mint_log["logIndex"]))
        self.tokens[key or symbol] = token
        return token

    def deploy_collectible(self, key: str = "DEPUC") -> Token:
        token = Token(self.deploy("DepuCollectible"), "nft", "DEPUC", None)
        self.tokens[key] = token
        return token

    def deploy_odd(self, key: str = "ODD") -> Token:
        token = Token(self.deploy("OddToken"), "odd", None, None)
        self.tokens[key] = token
        return token

    def deploy_defaults(self) -> dict[str, Token]:
        """DePU's standard test set: DUSD (18 decimals), USDD (6 decimals), the collectible and OddToken.

        The minting Transfers (from 0x0) happen here: they are in ``history`` but not in what
        ``activity()`` returns."""
        self.deploy_token("DePU Dollar", "DUSD", 18, 10**9 * 10**18)
        self.deploy_token("USD DePU", "USDD", 6, 10**9 * 10**6)
        self.deploy_collectible()
        self.deploy_odd()
        return dict(self.tokens)

    # ------------------------------------------------------------------ a market: DePU's constant-product pair
    def deploy_market(self, eth_price: int = 3000, depth_eth: int = 1000) -> str:
        """DETH ("DePU Ether", the local chain's wrapped ETH) and a DepuPair of DETH against USDD holding
        ``depth_eth`` DETH at ``eth_price`` USDD each, funded by account 0; returns the pair's address.
        Right after ``deploy_defaults`` the addresses are always the same (account 0's nonces 4 and 5), which
        DePU's price pools list for the local chain."""
        deth = self.deploy_token("DePU Ether", "DETH", 18, 10**9 * 10**18, key="DETH")
        usdd = self.tokens["USDD"]
        pair = self.deploy("DepuPair", deth.address, usdd.address)
        self.pair = pair
        amounts = {deth.address: depth_eth * 10**18, usdd.address: depth_eth * eth_price * 10**6}
        funder = self.accounts[0]
        for token in (deth, usdd):
            self._approve(token, funder, pair)
        token0, token1 = sorted((deth.address, usdd.address), key=lambda a: int(a, 16))
        data = self._pair().encode_abi("addLiquidity", args=[amounts[token0], amounts[token1]])
        facts = [Transfer("erc20", funder, pair, amounts[t], token=t) for t in (token0, token1)]
        self._send({"from": funder, "to": pair, "data": data, "gas": 300_000, **self._fees(None)}, facts)
        return pair

    def _pair(self):
        return self.w3.eth.contract(address=self.pair, abi=load_artifact("DepuPair")["abi"])

    def _approve(self, token: Token, owner: str, spender: str) -> None:
        data = self._contract(token).encode_abi("approve", args=[spender, 2**256 - 1])
        self._send({"from": owner, "to": token.address, "data": data, **self._fees(None)}, [])

    def swap(self, sender: str, token_in: str, amount_in: int) -> str:
        """Sell ``amount_in`` of ``token_in`` (a key: "DETH" or "USDD") to the pair for the other token."""
        tokens = {key: self.tokens[key] for key in ("DETH", "USDD")}
        sold = tokens[token_in]
        bought = tokens["USDD" if token_in == "DETH" else "DETH"]
        if self._contract(sold).functions.allowance(sender, self.pair).call() < amount_in:
            self._approve(sold, sender, self.pair)
        token0 = self._pair().functions.token0().call()
        reserve0, reserve1, _ = self._pair().functions.getReserves().call()
        zero_for_one = sold.address == token0
        r_in, r_out = (reserve0, reserve1) if zero_for_one else (reserve1, reserve0)
        out = amount_in * 997 * r_out // (r_in * 1000 + amount_in * 997)
        data = self._pair().encode_abi("swap", args=[amount_in, zero_for_one, 0])
        facts = [Transfer("erc20", sender, self.pair, amount_in, token=sold.address),
                 Transfer("erc20", self.pair, sender, out, token=bought.address)]
        return self._send({"from": sender, "to": self.pair, "data": data, "gas": 200_000, **self._fees(None)}, facts)

    def _contract(self, token: Token):
        artifact = {"erc20": "DepuToken", "nft": "DepuCollectible", "odd": "OddToken"}[token.kind]
        return self.w3.eth.contract(address=token.address, abi=load_artifact(artifact)["abi"])

    def balance_of(self, token: Token, holder: str) -> int:
        return self._contract(token).functions.balanceOf(holder).call()

    # ------------------------------------------------------------------ activity
    def _send(self, tx: dict[str, Any], transfers: list[Transfer]) -> str:
        tx.setdefault("gas", TX_GAS)
        tx_hash = self.w3.eth.send_transaction(tx).hex()
        if not tx_hash.startswith("0x"):
            tx_hash = "0x" + tx_hash
        self._pending.append(_Pending(tx_hash, transfers))
        if not self._batching:
            self._settle()
        return tx_hash

    def _fees(self, rng: random.Random | None) -> dict[str, int]:
        """Varied priority fees so gas statistics have something to show."""
        tip = (rng.randint(1, 5) if rng else 1) * 10**9
        return {"maxPriorityFeePerGas": tip, "maxFeePerGas": 100 * 10**9}

    def transfer(self, token: Token, sender: str, recipient: str, amount: int, rng: random.Random | None = None) -> str:
        """An ERC-20 transfer of ``amount`` base units."""
        data = self._contract(token).encode_abi("transfer", args=[recipient, amount])
        fact = Transfer("erc20", sender, recipient, amount, token=token.address)
        return self._send({"from": sender, "to": token.address, "data": data, **self._fees(rng)}, [fact])

    def batch_transfer(self, token: Token, sender: str, recipients: list[str], amounts: list[int]) -> str:
        """Many ERC-20 transfers in one transaction (one Transfer log each): a busy block in one call."""
        data = self._contract(token).encode_abi("batchTransfer", args=[recipients, amounts])
        facts = [Transfer("erc20", sender, to, amount, token=token.address) for to, amount in zip(recipients, amounts)]
        gas = 60_000 + 40_000 * len(recipients)
        return self._send({"from": sender, "to": token.address, "data": data, "gas": gas, **self._fees(None)}, facts)

    def send_eth(self, sender: str, recipient: str, wei: int, rng: random.Random | None = None) -> str:
        fact = Transfer("native", sender, recipient, wei)
        return self._send({"from": sender, "to": recipient, "value": wei, **self._fees(rng)}, [fact])

    def mint_nft(self, token: Token, sender: str, recipient: str, token_id: int, rng: random.Random | None = None) -> str:
        data = self._contract(token).encode_abi("mint", args=[recipient, token_id])
        fact = Transfer("nft", ZERO_ADDRESS, recipient, None, token=token.address, token_id=token_id, shape="nft")
        return self._send({"from": sender, "to": token.address, "data": data, **self._fees(rng)}, [fact])

    def move_nft(self, token: Token, owner: str, recipient: str, token_id: int, rng: random.Random | None = None) -> str:
        data = self._contract(token).encode_abi("transferFrom", args=[owner, recipient, token_id])
        fact = Transfer("nft", owner, recipient, None, token=token.address, token_id=token_id, shape="nft")
        return self._send({"from": owner, "to": token.address, "data": data, **self._fees(rng)}, [fact])

    def emit_odd(self, token: Token, kind: int, sender: str, recipient: str, value: int, rng: random.Random | None = None) -> str:
        """One non-standard Transfer log. The truth's amount is what the log really carries, or None."""
        data = self._contract(token).encode_abi("emitOdd", args=[kind, recipient, value])
        shape = ODD_SHAPES[kind]
        amount: int | None
        if kind in (4, 5):
            amount = value
        else:
            amount = None
        fact = Transfer("odd", sender, recipient, amount, token=token.address, shape=shape)
        return self._send({"from": sender, "to": token.address, "data": data, **self._fees(rng)}, [fact])

    def _settle(self) -> list[Transfer]:
        """Fill block/tx/log positions of queued transfers from their receipts."""
        settled: list[Transfer] = []
        pending, self._pending = self._pending, []
        for item in pending:
            receipt = self.rpc("eth_getTransactionReceipt", item.tx_hash)
            waited = 0.0
            while receipt is None and waited < 10:  # a loaded machine: the block may still be in the making
                time.sleep(0.05)
                waited += 0.05
                receipt = self.rpc("eth_getTransactionReceipt", item.tx_hash)
            if receipt is None:
                raise RuntimeError(f"transaction {item.tx_hash} was not mined")
            if int(receipt["status"], 16) != 1:
                raise RuntimeError(f"transaction {item.tx_hash} reverted (gas used {int(receipt['gasUsed'], 16)})")
            logs = [log for log in receipt["logs"] if log["topics"] and log["topics"][0] == TRANSFER_TOPIC]
            log_positions = iter(int(log["logIndex"], 16) for log in logs)
            for fact in item.transfers:
                fact.block_number = int(receipt["blockNumber"], 16)
                fact.block_hash = receipt["blockHash"]
                fact.tx_hash = item.tx_hash
                fact.tx_index = int(receipt["transactionIndex"], 16)
                fact.log_index = None if fact.kind == "native" else next(log_positions)
                settled.append(fact)
        self.history.extend(settled)
        return settled

    def activity(self, rounds: int = 10, seed: int = 7, per_block: int = 6) -> list[Transfer]:
        """Generate ``rounds`` blocks of mixed, known transfers between the dev accounts and return them.

        Each block holds ``per_block`` transactions drawn from: DUSD and USDD transfers, ETH sends, collectible
        mints and moves, and one OddToken shape per block (cycling through all five). Deploys the default
        contracts first if they are missing. Deterministic for a given seed and chain state."""
        if not {"DUSD", "USDD", "DEPUC", "ODD"} <= self.tokens.keys():
            self.deploy_defaults()
        rng = random.Random(seed)
        accounts = self.accounts
        funder = accounts[0]
        dusd, usdd, nft, odd = (self.tokens[k] for k in ("DUSD", "USDD", "DEPUC", "ODD"))
        # Accounts 1..n hold tokens so transfers between them are possible; funding is part of the truth.
        truth: list[Transfer] = []
        if self.balance_of(dusd, accounts[1]) == 0:
            self.begin_block()
            for holder in accounts[1:]:
                self.transfer(dusd, funder, holder, 1_000_000 * 10**18, rng)
                self.transfer(usdd, funder, holder, 1_000_000 * 10**6, rng)
            truth += self.end_block()
        owners: dict[int, str] = {}
        next_id = rng.randint(1, 1000) * 1000
        for round_no in range(rounds):
            self.begin_block()
            owned_at_start = dict(owners)  # miners may reorder a block's txs: only move what was owned before
            senders = rng.sample(accounts[1:], k=min(per_block, len(accounts) - 1))
            for slot, sender in enumerate(senders):
                recipient = rng.choice([a for a in accounts if a != sender])
                choice = rng.random()
                if slot == 0:
                    kind = round_no % 5 + 1
                    self.emit_odd(odd, kind, sender, recipient, rng.randint(1, 10**24), rng)
                elif choice < 0.35:
                    # odd-looking amounts, up to 18 significant digits, to catch any float rounding
                    self.transfer(dusd, sender, recipient, rng.randint(1, 5_000 * 10**18), rng)
                elif choice < 0.6:
                    self.transfer(usdd, sender, recipient, rng.randint(1, 5_000 * 10**6), rng)
                elif choice < 0.85:
                    self.send_eth(sender, recipient, rng.randint(1, 3 * 10**18), rng)
                else:
                    held = [tid for tid, owner in owned_at_start.items() if owner == sender and owners[tid] == sender]
                    if held:
                        token_id = held[0]
                        self.move_nft(nft, sender, recipient, token_id, rng)
                    else:
                        token_id, next_id = next_id, next_id + 1
                        self.mint_nft(nft, sender, recipient, token_id, rng)
                    owners[token_id] = recipient
            truth += self.end_block()
        return truth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run DePU's local mainnet (anvil, chain id 1) with known activity.")
    parser.add_argument("--port", type=int, default=8545)
    parser.add_argument("--block-time", type=float, default=None, help="seconds per block (default: automine)")
    parser.add_argument("--rounds", type=int, default=10, help="blocks of generated activity (0 for none)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--truth", type=Path, default=None, help="write the ground-truth transfers here (JSON)")
    args = parser.parse_args(argv)

    def stop_on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # leave through the with-block, so anvil (its own session) is stopped too

    signal.signal(signal.SIGTERM, stop_on_sigterm)
    with DevChain(args.port, block_time=args.block_time) as chain:
        chain.deploy_defaults()
        truth = chain.activity(args.rounds, seed=args.seed) if args.rounds else []
        if args.truth:
            args.truth.write_text(json.dumps([t.to_dict() for t in truth], indent=1))
        print(f"DePU devchain on {chain.rpc_url} (chain id {chain.chain_id}), head {chain.block_number()}")
        for key, token in chain.tokens.items():
            print(f"  {key:6} {token.kind:5} {token.address} decimals={token.decimals}")
        for account in chain.accounts[:4]:
            print(f"  account {account}")
        print(f"  {len(truth)} transfers generated; Ctrl-C to stop")
        sys.stdout.flush()
        try:
            while chain.running:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
