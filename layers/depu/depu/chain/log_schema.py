"""The Arrow type of an ``eth_getLogs`` log, shared by the answer's two readers (``depu.chain.log_scan`` and
``depu.chain.transfer_table``) so that both give arrays of one type. Imports pyarrow only when called."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

STRING_FIELDS = ("address", "data", "blockHash", "blockNumber", "blockTimestamp", "transactionHash",
                 "transactionIndex", "logIndex")


def log_type() -> "pa.StructType":
    """The Arrow type of one log as eth_getLogs gives it (fields a node leaves out read as null)."""
    import pyarrow as pa

    fields = [pa.field(name, pa.string()) for name in STRING_FIELDS]
    fields.insert(1, pa.field("topics", pa.list_(pa.string())))
    return pa.struct(fields + [pa.field("removed", pa.bool_())])


def empty_logs() -> "pa.StructArray":
    import pyarrow as pa

    return pa.array([], type=log_type())
