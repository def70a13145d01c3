"""Names for addresses: DePU's small address book (exchanges, bridges, DePU's own contracts) and the labels
users give addresses themselves, plus transaction links to a block explorer.

The book is data in the repository (``address_book.json``), read once per process. A user's label is theirs
alone (``LABEL#<user>/<address>`` in ChainTable) and wins over the book's in what that user sees; other users
never see it. Labels are plain text: escaped wherever they are shown.
"""
from __future__ import annotations

import html
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from depu.chain import store

MAX_LABEL_CHARS = 32
MAX_LABELS_PER_USER = 200
LABEL_TEXT = re.compile(r"^[\w .,:()/&+\-#'@]+$")


class LabelError(ValueError):
    """Input the user can fix; the message is shown to them."""


@lru_cache(maxsize=1)
def book() -> dict[str, str]:
    """The address book's labels that hold on this deployment's chain (``local`` stage: the local chain)."""
    from depu.config import get_settings

    chain = "local" if get_settings().stage == "local" else "mainnet"
    data = json.loads((Path(__file__).with_name("address_book.json")).read_text())
    return {entry["address"].lower(): entry["label"] for entry in data["entries"] if chain in entry["chains"]}


def parse_label(text: str) -> str:
    label = " ".join(text.split())
    if not label:
        raise LabelError("Give the label after the address, like <code>/label 0x… my cold wallet</code>.")
    if len(label) > MAX_LABEL_CHARS:
        raise LabelError(f"A label is at most {MAX_LABEL_CHARS} characters.")
    if not LABEL_TEXT.match(label):
        raise LabelError("A label may hold letters, digits, spaces and . , : ( ) / & + - # ' @ only.")
    return label


def set_label(user_id: int, address: str, label: str) -> bool:
    """Label ``address`` for this user; False when they already have the maximum number of labels."""
    mine = user_labels(user_id)
    if len(mine) >= MAX_LABELS_PER_USER and address not in mine:
        return False
    store.table().put_item(Item={"pk": f"LABEL#{user_id}", "sk": address, "label": parse_label(label)})
    return True


def remove_label(user_id: int, address: str) -> bool:
    answer = store.table().delete_item(Key={"pk": f"LABEL#{user_id}", "sk": address}, ReturnValues="ALL_OLD")
    return "Attributes" in answer


def user_labels(user_id: int) -> dict[str, str]:
    return {item["sk"]: item["label"] for item in store.query_all(f"LABEL#{user_id}")}


class Names:
    """What one user sees an address called: their label, else the book's, else nothing."""

    def __init__(self, user_id: int | None = None, own: dict[str, str] | None = None):
        self.own = own if own is not None else (user_labels(user_id) if user_id is not None else {})

    def label(self, address: str | None) -> str | None:
        if not address:
            return None
        return self.own.get(address.lower()) or book().get(address.lower())

    def show(self, address: str | None) -> str:
        """HTML: the address in code, followed by its label when it has one."""
        if not address:
            return "<code>?</code>"
        name = self.label(address)
        return f"<code>{address}</code>" + (f" ({html.escape(name)})" if name else "")


def names_for(user_ids: Iterable[int]) -> dict[int, Names]:
    """One ``Names`` per user (one Query each): for a block's alerts, which go to several watchers."""
    return {user_id: Names(user_id) for user_id in set(user_ids)}


def tx_link(tx_hash: str) -> str:
    """HTML: a link to the transaction on the configured explorer (``EXPLORER_URL``)."""
    from depu.config import get_settings

    return f'<a href="{html.escape(get_settings().explorer_url)}/tx/{tx_hash}">explorer</a>'
