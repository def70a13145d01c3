"""Address labels against moto: the address book in the repository (as data) and users' own labels, which
only their owner sees and which win over the book's."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parent.parent / "layers" / "depu" / "depu" / "analytics" / "address_book.json"


def test_the_address_book_is_well_formed_data():
    entries = json.loads(BOOK.read_text())["entries"]
    kinds = {entry["kind"] for entry in entries}
    assert {"exchange", "bridge", "depu"} <= kinds
    for entry in entries:
        assert entry["address"] == entry["address"].lower() and len(entry["address"]) == 42
        assert set(entry["chains"]) <= {"mainnet", "local"} and entry["label"]
    assert len({entry["address"] for entry in entries}) == len(entries)


def test_book_labels_follow_the_stage(aws, production):
    from depu.analytics import labels

    labels.book.cache_clear()
    try:
        assert labels.Names().label("0x28C6c06298d514Db089934071355E5743bf21d60") == "Binance 14"
        assert labels.Names().label("0x5fbdb2315678afecb367f032d93f642f64180aa3") is None, "local-chain only"
    finally:
        labels.book.cache_clear()


def test_a_users_label_is_theirs_and_wins_over_the_book(aws, local_stage):
    from depu.analytics import labels

    labels.book.cache_clear()
    dusd = "0x5fbdb2315678afecb367f032d93f642f64180aa3"
    assert labels.Names(1).label(dusd) == "DePU Dollar (DUSD)"
    assert labels.set_label(1, dusd, "  my   dollars ")
    assert labels.Names(1).label(dusd) == "my dollars"
    assert labels.Names(2).label(dusd) == "DePU Dollar (DUSD)", "another user sees the book, not my label"
    assert labels.Names(1).show(dusd) == f"<code>{dusd}</code> (my dollars)"
    assert labels.remove_label(1, dusd) and not labels.remove_label(1, dusd)
    assert labels.Names(1).label(dusd) == "DePU Dollar (DUSD)"
    labels.book.cache_clear()


@pytest.mark.parametrize("text", ["", "x" * 33, "<b>bold</b>", "a\u202eb"])
def test_bad_labels_get_a_clear_message(text):
    from depu.analytics import labels

    with pytest.raises(labels.LabelError):
        labels.parse_label(text)


def test_labels_are_capped_per_user(aws):
    from depu.analytics import labels

    for n in range(labels.MAX_LABELS_PER_USER):
        assert labels.set_label(3, f"0x{n:040x}", f"label {n}")
    assert not labels.set_label(3, "0x" + "f" * 40, "one too many")
    assert labels.set_label(3, f"0x{0:040x}", "renaming is fine")
