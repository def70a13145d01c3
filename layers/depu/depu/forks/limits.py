"""How much chain a single write may make the fork's host produce: blocks mined and seconds jumped.

``anvil_mine`` with a large count pins a host for minutes (2,000 blocks take about 11 s), and a fork whose
clock is pushed decades ahead is of no use to anyone. So every mining or time-jump write is costed before it is
forwarded, and refused with a clear JSON-RPC error when it is over the per-call cap or over the fork's budget for
the current minute. The budget lives on the fork item (``Fork.budget_*``) and is charged under the fork's write
lease (``journal.charge``): the proxy runs in many stateless Lambda containers, so a per-container counter
would not bound anything.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

MAX_BLOCKS_PER_CALL = 1_000
MAX_BLOCKS_PER_MINUTE = 3_000
DAY_S = 86_400
MAX_JUMP_PER_CALL_S = 366 * DAY_S
MAX_JUMP_PER_MINUTE_S = 4 * 366 * DAY_S


class LimitRefused(ValueError):
    """The write asks for more than a fork allows; ``invalid`` marks malformed parameters."""

    def __init__(self, message: str, invalid: bool = False):
        super().__init__(message)
        self.invalid = invalid


@dataclass(frozen=True)
class Cost:
    blocks: int = 0
    seconds: int = 0

    @property
    def free(self) -> bool:
        return not self.blocks and not self.seconds


def quantity(value: Any, name: str) -> int:
    """A JSON-RPC quantity as clients send it: an integer, a 0x-hex string or a decimal string."""
    if isinstance(value, bool):
        raise LimitRefused(f"{name} must be a number", invalid=True)
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            number = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
        except ValueError:
            raise LimitRefused(f"{name} must be a number", invalid=True) from None
    else:
        raise LimitRefused(f"{name} must be a number", invalid=True)
    if number < 0:
        raise LimitRefused(f"{name} may not be negative", invalid=True)
    return number


def cost(method: str, params: list[Any], latest_timestamp: Callable[[], int]) -> Cost:
    """What ``method(params)`` costs; LimitRefused when one call asks for more than the per-call caps.
    ``latest_timestamp`` reads the fork's latest block time (only asked for absolute timestamps)."""
    if method == "anvil_mine":
        blocks = quantity(params[0], "the block count") if params and params[0] is not None else 1
        interval = quantity(params[1], "the interval") if len(params) > 1 and params[1] is not None else 0
        found = Cost(blocks, blocks * interval)
    elif method == "evm_mine":
        found = _evm_mine(params[0] if params else None, latest_timestamp)
    elif method == "evm_increaseTime":
        if not params:
            raise LimitRefused("evm_increaseTime takes a number of seconds", invalid=True)
        found = Cost(0, quantity(params[0], "the number of seconds"))
    elif method == "evm_setNextBlockTimestamp":
        if not params:
            raise LimitRefused("evm_setNextBlockTimestamp takes a timestamp", invalid=True)
        found = Cost(0, max(0, quantity(params[0], "the timestamp") - latest_timestamp()))
    else:
        return Cost()
    if found.blocks > MAX_BLOCKS_PER_CALL:
        raise LimitRefused(f"{method} may mine at most {MAX_BLOCKS_PER_CALL} blocks per call on a DePU fork (asked {found.blocks})")
    if found.seconds > MAX_JUMP_PER_CALL_S:
        raise LimitRefused(
            f"{method} may move the fork's clock at most {MAX_JUMP_PER_CALL_S // DAY_S} days per call on a DePU fork "
            f"(asked {found.seconds // DAY_S} days)"
        )
    return found


def _evm_mine(option: Any, latest_timestamp: Callable[[], int]) -> Cost:
    if option is None:
        return Cost(1, 0)
    if isinstance(option, dict):
        blocks = quantity(option["blocks"], "blocks") if option.get("blocks") is not None else 1
        stamp = option.get("timestamp")
    else:
        blocks, stamp = 1, option
    seconds = max(0, quantity(stamp, "the timestamp") - latest_timestamp()) if stamp is not None else 0
    return Cost(blocks, seconds)


def current_minute() -> int:
    """The budget window: a fixed calendar minute (epoch seconds // 60)."""
    return int(time.time() // 60)


def over_budget(cost_: Cost, used_blocks: int, used_seconds: int) -> str | None:
    """Why ``cost_`` does not fit this minute's budget after ``used_*``, or None."""
    if used_blocks + cost_.blocks > MAX_BLOCKS_PER_MINUTE:
        return f"this fork may mine at most {MAX_BLOCKS_PER_MINUTE} blocks per minute; wait a minute"
    if used_seconds + cost_.seconds > MAX_JUMP_PER_MINUTE_S:
        return f"this fork's clock may move at most {MAX_JUMP_PER_MINUTE_S // DAY_S} days per minute; wait a minute"
    return None
