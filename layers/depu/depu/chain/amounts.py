"""ERC-20 amounts (a log's one data word, a uint256) as the decimal strings the raw Parquet parts hold.

The row path writes ``str(int(word[2:], 16))``: one Python call per log, the last per-log Python left in a
backfill's decode. Here every word of plain hex digits whose value fits 64 bits (its first 48 digits zero:
stablecoins' amounts up to 18 trillion units, 18-decimal tokens' up to 18.4 whole tokens) is converted by
numpy and Arrow's uint64 → string cast, both exact. Every other word (larger values, or text that is not
64 plain hex digits, which ``int()`` may still read its own way: ``_`` separators, spaces) goes through
that very Python call, so the answers are the row path's, word for word; tests compare the two.

Needs numpy and pyarrow (the parquet-deps layer).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

_WORD_DIGITS = 64
_SMALL_FROM = _WORD_DIGITS - 16  # a value below 2**64 has only its last 16 hex digits set


def _nibbles() -> "np.ndarray":
    import numpy as np

    table = np.full(256, 0xFF, np.uint8)
    for offset, first in ((0, b"0"), (10, b"a"), (10, b"A")):
        span = 10 if first == b"0" else 6
        table[first[0]:first[0] + span] = np.arange(offset, offset + span, dtype=np.uint8)
    return table


def amounts(words: "pa.StringArray") -> tuple["pa.Array", list[int]]:
    """(each word's amount as a decimal string, null where ``int(word[2:], 16)`` refuses it; the indexes of
    those). ``words`` are data words as a node sends them: "0x" and 64 hex digits."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    count = len(words)
    if count == 0:
        return pa.array([], pa.string()), []
    words = words.cast(pa.string())
    lengths = pc.binary_length(words).to_numpy(zero_copy_only=False)
    if words.null_count or not (lengths == _WORD_DIGITS + 2).all():
        return _slowly(words.to_pylist(), range(count), count)
    offsets = np.frombuffer(words.buffers()[1], np.int32, count=count + 1, offset=words.offset * 4)
    text = np.frombuffer(words.buffers()[2], np.uint8)
    width = _WORD_DIGITS + 2
    if (np.diff(offsets) == width).all():  # one word after the other: a view, no gather
        rows = text[offsets[0]:offsets[0] + count * width].reshape(count, width)[:, 2:]
    else:
        rows = text[offsets[:-1, None] + 2 + np.arange(_WORD_DIGITS)]
    low = _nibbles()[rows[:, _SMALL_FROM:]]
    small = (rows[:, :_SMALL_FROM] == ord("0")).all(axis=1) & (low != 0xFF).all(axis=1)
    shifts = np.arange(60, -1, -4, dtype=np.uint64)
    values = (low[small].astype(np.uint64) << shifts).sum(axis=1, dtype=np.uint64)
    decimal = pc.cast(pa.array(values, pa.uint64()), pa.string())
    if small.all():
        return decimal, []
    others = np.flatnonzero(~small)
    slow, refused = _slowly(words.take(pa.array(others)).to_pylist(), others.tolist(), len(others))
    # the small words' strings, then the others'; each word's place picks its own
    place = np.empty(count, np.int64)
    place[small] = np.arange(len(values))
    place[others] = len(values) + np.arange(len(others))
    return pa.concat_arrays([decimal, slow]).take(pa.array(place)), refused


def _slowly(words: list[str], indexes: "range | list[int]", count: int) -> tuple["pa.Array", list[int]]:
    """Word by word, by the row path's own call; the refused words' indexes (from ``indexes``)."""
    import pyarrow as pa

    found: list[str | None] = []
    refused: list[int] = []
    for index, word in zip(indexes, words):
        try:
            found.append(str(int(word[2:], 16)))
        except (ValueError, TypeError):
            found.append(None)
            refused.append(index)
    return pa.array(found, pa.string()), refused
