"""What a key may do: the areas it reaches (jobs, forks, analytics) and whether it is read-only.

Every route names its area and whether it writes; ``allows`` is the only decision. The profile and the credit
ledger are readable with any key (a key always belongs to one user, and that is the user's own account).
"""
from __future__ import annotations

JOBS = "jobs"
FORKS = "forks"
ANALYTICS = "analytics"
READ_ONLY = "read-only"
PROFILE = "profile"  # not a scope a key carries: the area of /v1/profile and /v1/credits

AREAS = (JOBS, FORKS, ANALYTICS)
ALL = (*AREAS, READ_ONLY)


class BadScopes(ValueError):
    """The requested scopes are not a valid set; the message says why."""


def normalise(requested: list[str] | tuple[str, ...] | None) -> list[str]:
    """The scopes a new key gets: known names only, at least one area; order fixed for display."""
    wanted = {str(s).strip().lower() for s in (AREAS if requested is None else requested)}
    unknown = wanted - set(ALL)
    if unknown:
        raise BadScopes(f"unknown scope(s): {', '.join(sorted(unknown))}; choose from {', '.join(ALL)}")
    if not wanted & set(AREAS):
        raise BadScopes(f"a key needs at least one of {', '.join(AREAS)}")
    return [s for s in ALL if s in wanted]


def allows(scopes: list[str], area: str, write: bool) -> bool:
    if write and READ_ONLY in scopes:
        return False
    if area == PROFILE:
        return not write
    return area in scopes
