"""DePU's retry policies, each a named object: how many tries, how far apart, and within what time.

Why one module: the Bot API client, the chain RPC client and the ledger's transactions each retried in a
hand-written loop with its own numbers inline. Here each policy is a value a reader can find and compare,
and one engine (tenacity) runs them all. What counts as worth retrying stays with the caller, who knows its
errors; how to wait between tries is the policy's.

The provider agent is its own package and cannot import this layer; its API client runs the same engine with
its own named policy (``depu_agent.api.AGENT_API_RETRY``).

    for attempt in CHAIN_RPC.retrying(retry_on=is_transient):
        with attempt:
            answer = post()
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from tenacity import RetryCallState, Retrying, retry_if_exception


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all; the n-th retry waits ``min(maximum, initial * 2**(n-1))`` seconds (a uniform
    draw below that with ``jitter``); with ``budget``, no retry starts whose wait would end more than
    ``budget`` seconds after the first try."""

    name: str
    attempts: int
    initial: float
    maximum: float
    jitter: bool = False
    budget: float | None = None

    def delay(self, retry: int) -> float:
        """The wait before retry number ``retry`` (1 for the first retry)."""
        cap = min(self.maximum, self.initial * 2 ** (retry - 1))
        return random.uniform(0, cap) if self.jitter else cap

    def but(self, **changes: object) -> "RetryPolicy":
        """This policy with some numbers changed (a client constructed with its own limits)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def retrying(
        self,
        retry_on: Callable[[BaseException], bool],
        *,
        wait: Callable[[BaseException, int], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_retry: Callable[[BaseException, int, float], None] | None = None,
    ) -> Retrying:
        """A tenacity ``Retrying`` that runs this policy. ``retry_on`` says which exceptions are worth another
        try (anything else is raised at once); ``wait`` may replace the policy's wait for a given error (a
        server's own ``retry_after``); ``on_retry(error, retry, wait)`` runs before each wait. When the tries
        or the budget run out, the last error is raised as itself."""
        started = clock()

        def next_wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            if wait is not None and error is not None:
                return wait(error, state.attempt_number)
            return self.delay(state.attempt_number)

        def give_up(state: RetryCallState) -> bool:
            if state.attempt_number >= self.attempts:
                return True
            return self.budget is not None and clock() - started + state.upcoming_sleep > self.budget

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            if on_retry is not None and error is not None:
                on_retry(error, state.attempt_number, state.upcoming_sleep)

        return Retrying(
            retry=retry_if_exception(retry_on),
            wait=next_wait,
            stop=give_up,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )


TELEGRAM_CALL = RetryPolicy("telegram_call", attempts=4, initial=0.25, maximum=10.0, budget=20.0)
"""A Bot API call: network errors and 5xx back off from 0.25 s, 429 waits Telegram's ``retry_after``; all
within 20 s of the first try, most of a 30 s Lambda (waiting longer is better done by the queue's retry)."""

CHAIN_RPC = RetryPolicy("chain_rpc", attempts=5, initial=0.2, maximum=5.0)
"""A JSON-RPC request to a chain node: connection errors, 429/5xx, transient error objects and incomplete
batch answers, from 0.2 s doubling to 5 s."""

LEDGER_TRANSACTION = RetryPolicy("ledger_transaction", attempts=4, initial=0.05, maximum=0.4)
"""A ledger TransactWrite that DynamoDB cancelled for a conflict or throttling (never a failed condition):
0.05, 0.1, 0.2 s, short because the colliding writer is another request of the same user."""
