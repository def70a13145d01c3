"""Per-key throttling: a token bucket stored on the key's own item in DynamoDB.

Why DynamoDB and not a bucket per Lambda container (as the fork proxy does): a key is used from code, often in
parallel (CI matrices), and every warm container would grant its own burst. Why on the key's item: the request
already read it to authenticate, so the bucket costs one conditional UpdateItem, which also records the
last-used time and fails if the key was revoked in between.

The write is conditional on the bucket being what was read (``bucket_at``), so two requests racing on one key
cannot both spend the same token; the loser re-reads and tries again, a few times at most.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from pynamodb.exceptions import DoesNotExist, UpdateError

from depu.apikeys.keys import ApiKey

RATE_PER_SECOND = 5.0
BURST = 30.0
ATTEMPTS = 4


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after_s: int = 0
    revoked: bool = False


def _level(record: ApiKey, now: float) -> float:
    if record.bucket_level is None or record.bucket_at is None:
        return BURST
    return min(BURST, float(record.bucket_level) + max(0.0, now - float(record.bucket_at)) * RATE_PER_SECOND)


def take(record: ApiKey, now: float | None = None, cost: float = 1.0) -> Verdict:
    """Spend ``cost`` from the key's bucket and note the key as used now; refuse when the bucket is empty."""
    for _ in range(ATTEMPTS):
        current = time.time() if now is None else now
        level = _level(record, current)
        if level < cost:
            return Verdict(False, retry_after_s=max(1, int((cost - level) / RATE_PER_SECOND + 0.999)))
        seen = ApiKey.bucket_at == record.bucket_at if record.bucket_at is not None else ApiKey.bucket_at.does_not_exist()
        try:
            record.update(
                actions=[ApiKey.bucket_level.set(round(level - cost, 4)), ApiKey.bucket_at.set(round(current, 4)),
                         ApiKey.last_used_at.set(int(current))],
                condition=ApiKey.token_hash.exists() & seen,
            )
            return Verdict(True)
        except UpdateError as error:
            if getattr(error, "cause_response_code", None) != "ConditionalCheckFailedException":
                raise
        try:
            record.refresh(consistent_read=True)
        except DoesNotExist:
            return Verdict(False, revoked=True)
    return Verdict(False, retry_after_s=1)
