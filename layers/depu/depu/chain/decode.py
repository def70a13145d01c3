"""Transfer log decoding by slicing hex words: exact integers, lower-case addresses, no ABI machinery.

``Transfer(address,address,uint256)`` has one topic0 for ERC-20 and ERC-721 alike; only which arguments are
indexed differs. The standard shapes are:

* ERC-20: 3 topics (sig, from, to) + 1 data word (value) -> an amount;
* ERC-721: 4 topics (sig, from, to, tokenId), no data -> a token id, never an amount.

Logs that carry all three words but split differently between topics and data (1 or 2 topics) are decoded as
the event's ABI types say (``unindexed``). Anything else (missing data, extra topics, short data, malformed hex)
is kept and classified, with no amount, so one odd contract never stops the indexer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
WORD = 64  # hex characters in a 32-byte word

# shapes
STANDARD = "standard"
NFT = "nft"
UNINDEXED = "unindexed"
MISSING_DATA = "missing_data"
EXTRA_TOPICS = "extra_topics"
SHORT_DATA = "short_data"
EXTRA_DATA = "extra_data"
MALFORMED = "malformed"
DECODED_SHAPES = {STANDARD, NFT, UNINDEXED}


@dataclass(frozen=True, slots=True)
class DecodedTransfer:
    token: str
    sender: str | None
    recipient: str | None
    amount: int | None  # ERC-20 value in base units; None for NFTs and undecodable logs
    token_id: int | None
    shape: str
    block_number: int
    block_hash: str
    tx_hash: str
    tx_index: int
    log_index: int

    @property
    def is_nft(self) -> bool:
        return self.shape == NFT


def _address(word: str) -> str:
    return "0x" + word[-40:].lower()


def _words(hex_data: str) -> list[str] | None:
    """Split ``0x...`` into 64-hex-char words; None if it is not whole words."""
    body = hex_data[2:] if hex_data.startswith("0x") else hex_data
    if len(body) % WORD:
        return None
    return [body[i : i + WORD] for i in range(0, len(body), WORD)]


def classify(topics: list[str], data: str) -> tuple[str, list[str]]:
    """The log's shape and, when decodable, its three argument words (from, to, value/tokenId)."""
    words = _words(data or "0x")
    if words is None:
        return SHORT_DATA, []
    topic_words = [t[2:] if t.startswith("0x") else t for t in topics[1:]]
    if len(topics) == 3 and len(words) == 1:
        return STANDARD, topic_words + words
    if len(topics) == 4 and not words:
        return NFT, topic_words
    if len(topics) == 4:
        return EXTRA_TOPICS, []
    if len(topics) == 3 and not words:
        return MISSING_DATA, []
    if len(topics) in (1, 2) and len(topic_words) + len(words) == 3:
        return UNINDEXED, topic_words + words
    if len(topics) > 4:
        return EXTRA_TOPICS, []
    if len(topic_words) + len(words) < 3:
        return MISSING_DATA, []
    return EXTRA_DATA, []


def decode_transfer(log: dict[str, Any]) -> DecodedTransfer | None:
    """A Transfer-signature log as a DecodedTransfer (None if topic0 is not Transfer). Never raises on
    odd logs: their shape says what was wrong, sender/recipient are filled when the topics carry them."""
    topics = log.get("topics") or []
    if not topics or topics[0].lower() != TRANSFER_TOPIC:
        return None
    shape, words = classify(topics, log.get("data") or "0x")
    sender = recipient = None
    amount = token_id = None
    try:
        if shape in DECODED_SHAPES:
            sender, recipient = _address(words[0]), _address(words[1])
            value = int(words[2], 16)
            if shape == NFT:
                token_id = value
            else:
                amount = value
        else:
            if len(topics) >= 2:
                sender = _address(topics[1])
            if len(topics) >= 3:
                recipient = _address(topics[2])
    except ValueError:  # non-hex characters
        shape, sender, recipient, amount, token_id = MALFORMED, None, None, None, None
    return DecodedTransfer(
        token=log["address"].lower(),
        sender=sender,
        recipient=recipient,
        amount=amount,
        token_id=token_id,
        shape=shape,
        block_number=int(log["blockNumber"], 16),
        block_hash=log["blockHash"],
        tx_hash=log["transactionHash"],
        tx_index=int(log["transactionIndex"], 16),
        log_index=int(log["logIndex"], 16),
    )
