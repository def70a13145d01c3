"""Token metadata (symbol, name, decimals), fetched once per token with eth_call and cached in ChainTable.

Non-standard tokens answer these calls with a revert, nothing, or a bytes32 instead of a string; each field
is then stored as unknown (None) rather than failing the run, and amounts stay in base units."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

from depu.chain import store

if TYPE_CHECKING:
    from depu.chain.rpc import RpcClient

SELECTORS = {"name": "0x06fdde03", "symbol": "0x95d89b41", "decimals": "0x313ce567"}


@dataclass(frozen=True)
class TokenMeta:
    token: str
    symbol: str | None
    name: str | None
    decimals: int | None

    @property
    def label(self) -> str:
        return self.symbol or (self.token[:8] + "…" + self.token[-4:])


NATIVE_META = TokenMeta(store.NATIVE, "ETH", "Ether", 18)


def decode_string(result: Any) -> str | None:
    """An ABI ``string`` return, or a right-padded bytes32 (old tokens); None if neither."""
    if not isinstance(result, str) or not result.startswith("0x") or len(result) < 66:
        return None
    body = result[2:]
    try:
        if len(body) >= 128:
            offset = int(body[:64], 16) * 2
            length = int(body[offset : offset + 64], 16)
            if length <= 256 and offset + 64 + length * 2 <= len(body):
                raw = bytes.fromhex(body[offset + 64 : offset + 64 + length * 2])
                return raw.decode("utf-8", "replace").strip("\x00").strip() or None
        raw = bytes.fromhex(body[:64]).rstrip(b"\x00")
        text = raw.decode("utf-8")
        return text if text.isprintable() and text else None
    except (ValueError, UnicodeDecodeError):
        return None


def decode_decimals(result: Any) -> int | None:
    if not isinstance(result, str) or len(result) != 66:
        return None
    try:
        value = int(result, 16)
    except ValueError:
        return None
    return value if value <= 255 else None


def _from_item(item: dict[str, Any]) -> TokenMeta:
    decimals = item.get("decimals")
    return TokenMeta(item["pk"][4:], item.get("symbol"), item.get("name"),
                     int(decimals) if decimals is not None else None)


def cached(token: str) -> TokenMeta | None:
    if token == store.NATIVE:
        return NATIVE_META
    item = store.get(f"TOK#{token}", "META")
    return _from_item(item) if item else None


def ensure(rpc: "RpcClient", tokens: Iterable[str], memo: dict[str, TokenMeta] | None = None) -> dict[str, TokenMeta]:
    """Metadata for every token, fetching (one batch for all misses) and caching only those never seen."""
    memo = memo if memo is not None else {}
    wanted = [t for t in dict.fromkeys(tokens) if t not in memo]
    missing = []
    for token in wanted:
        meta = cached(token)
        if meta:
            memo[token] = meta
        else:
            missing.append(token)
    if not missing:
        return memo
    calls = [("eth_call", [{"to": token, "data": SELECTORS[field]}, "latest"])
             for token in missing for field in ("name", "symbol", "decimals")]
    results = rpc.batch(calls, allow_errors=True)
    with store.table().batch_writer(overwrite_by_pkeys=["pk", "sk"]) as batch:
        for i, token in enumerate(missing):
            name, symbol, decimals = results[3 * i : 3 * i + 3]
            meta = TokenMeta(token, decode_string(symbol), decode_string(name), decode_decimals(decimals))
            memo[token] = meta
            item: dict[str, Any] = {"pk": f"TOK#{token}", "sk": "META"}
            for key, value in (("symbol", meta.symbol), ("name", meta.name), ("decimals", meta.decimals)):
                if value is not None:
                    item[key] = value
            batch.put_item(Item=item)
    return memo
