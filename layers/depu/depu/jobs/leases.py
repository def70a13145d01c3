"""The lease protocol's timings, as named settings in one place.

An agent proves it is alive by heartbeating every ``HEARTBEAT_SECONDS``; each heartbeat renews the lease of
every job it lists for ``LEASE_SECONDS``. A job whose lease runs out is taken back by the lease reaper (which
runs every ``REAPER_PERIOD_SECONDS``) and offered to another agent, up to ``MAX_ATTEMPTS`` times.

Compared with the reference systems (see docs/scheduling.md): GitHub Actions marks a silent runner's job
abandoned after about 10 minutes and Buildkite reassigns a lost agent's job after about 4 minutes; DePU takes a
silent agent's job back within LEASE_SECONDS + REAPER_PERIOD_SECONDS = 2 minutes at worst, while tolerating five
lost heartbeats in a row (a brief network blip does not cost the user a restart).
"""
from __future__ import annotations

HEARTBEAT_SECONDS = 10
"""How often an agent heartbeats (RunPod's workers use the same 10 s)."""

LEASE_SECONDS = 60
"""How long a heartbeat keeps a running job's lease; six heartbeats fit in one lease."""

OFFER_SECONDS = 30
"""How long a job assigned to an agent waits for that agent's claim before it goes back to the queue
(GitHub Actions gives an offered job 60 s)."""

CLAIM_WAIT_SECONDS = 20
"""Longest claim long-poll; API Gateway's 29 s integration limit caps it."""

CLAIM_POLL_INTERVAL_SECONDS = 1.0
"""How often a waiting claim looks for a newly assigned job."""

MAX_ATTEMPTS = 3
"""Attempts per job; after the last lost or failed attempt the job fails and the user is told."""

ONLINE_SECONDS = 3 * HEARTBEAT_SECONDS
"""An agent not heard from for this long is not offered new work."""

MAX_QUEUE_SECONDS = 30 * 60
"""A job no agent took within this long expires and its credits are released."""

REAPER_PERIOD_SECONDS = 60
"""The lease reaper's schedule in template.yaml (rate(1 minute))."""

TIME_LIMIT_GRACE_SECONDS = 30
"""A job still running this long after its time limit is cancelled by the cloud (the agent should have
stopped it already)."""

MATCH_BACKOFF_SECONDS = (5, 10, 20, 40, 60)
"""Visibility timeouts for a queued job nobody can take yet, by receive count (the last one repeats)."""


def match_backoff(receive_count: int) -> int:
    """Seconds before SQS offers an unmatched job to the matcher again."""
    index = min(max(receive_count, 1), len(MATCH_BACKOFF_SECONDS)) - 1
    return MATCH_BACKOFF_SECONDS[index]

# A job spec's setup (installing its requirements, fetching its inputs) is not billed and has its own bound:
# a job still setting up this long after its claim fails, unbilled, saying so.
SETUP_LIMIT_SECONDS = 15 * 60
