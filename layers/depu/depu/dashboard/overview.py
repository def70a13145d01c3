"""Everything one user's dashboard shows, assembled from the features that own the data.

Why one module, defensive: the dashboard reads what other features write (credits, jobs, forks, watched
addresses, the chain index), each of which evolves on its own. Each section is read by its own small function;
a section whose feature is missing or failing shows as ``{"state": "none"}`` / ``{"state": "unavailable"}``
instead of breaking the page. Every query is keyed by the session's ``user_id`` (the partition or GSI key),
never by anything the page sends, so one user's dashboard cannot read another's data.

Metrics: the page keeps its own short history per job from what each poll returns (``samples``), so a job
that stores only its latest GPU sample still draws a live line; a job that stores a series sends it all.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

log = logging.getLogger(__name__)

MAX_JOBS = 8
MAX_SAMPLES = 120  # per job per response: two minutes at one sample a second
MAX_FORKS = 10
MAX_WATCHES = 10
MAX_BLOCKS = 30
ACTIVE_JOB_STATES = ("queued", "assigned", "starting", "running", "uploading")

Section = dict[str, Any]


def build_overview(user_id: int, *, now: float | None = None) -> dict[str, Any]:
    """The dashboard payload for ``user_id``: one JSON-able dict, each section with its own ``state``."""
    current = time.time() if now is None else now
    sections: dict[str, Callable[[int], Section]] = {
        "credits": credits_section,
        "jobs": jobs_section,
        "forks": forks_section,
        "watches": watches_section,
        "chain": chain_section,
    }
    payload: dict[str, Any] = {"user_id": int(user_id), "generated_at": int(current)}
    for name, read in sections.items():
        try:
            payload[name] = read(int(user_id))
        except Exception:  # one feature's failure must not blank the whole dashboard
            log.exception("dashboard section %s failed", name)
            payload[name] = {"state": "unavailable"}
    return _plain(payload)


# ------------------------------------------------------------------------------------------- credits
def credits_section(user_id: int) -> Section:
    from depu.profiles import get_profile

    profile = get_profile(user_id)
    if profile is None:
        return {"state": "none"}
    return {
        "state": "ok",
        "available": int(profile.credits or 0),
        "held": int(profile.held or 0),
        "earned": int(profile.earned or 0),
    }


# ------------------------------------------------------------------------------------------- jobs
def jobs_section(user_id: int) -> Section:
    items = _user_jobs(user_id)
    if items is None:
        return {"state": "none"}
    active = [job for job in items if job.get("status") in ACTIVE_JOB_STATES]
    recent = [job for job in items if job.get("status") not in ACTIVE_JOB_STATES]
    shown = (active + recent)[:MAX_JOBS]
    return {
        "state": "ok" if shown else "none",
        "items": [_job_view(job) for job in shown],
        "running": sum(1 for job in items if job.get("status") == "running"),
    }


def _user_jobs(user_id: int) -> list[dict[str, Any]] | None:
    """The user's newest jobs as plain dicts, through the jobs model (its ``by_user`` index)."""
    try:
        from depu.jobs.models import Job
    except ImportError:
        return None
    jobs = Job.by_user.query(int(user_id), scan_index_forward=False, limit=50)
    return [job.attribute_values for job in jobs if int(job.user_id) == int(user_id)]


def _job_view(job: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "job_id": str(job.get("job_id", "")),
        "status": str(job.get("status", "")),
        "gpu_class": job.get("gpu_class"),
        "workload": job.get("workload"),
        "progress": _number(job.get("progress")),
        "message": job.get("message"),
        "started_at": _number(job.get("started_at")),
        "samples": metric_samples(job.get("metrics"), gpu_index=job.get("gpu_index"), fallback_t=_number(job.get("updated_at"))),
    }


_UTIL_KEYS = ("utilization_pct", "gpu_util", "utilization", "util", "gpu_utilization", "utilization_gpu", "gpu_util_pct")
_MEM_PCT_KEYS = ("mem_util", "memory_util", "mem_pct", "memory_pct", "mem_percent", "memory_percent")
_MEM_USED_KEYS = ("mem_used_mb", "memory_used_mb", "mem_used", "memory_used", "mem_used_mib", "memory_used_mib")
_MEM_TOTAL_KEYS = ("mem_total_mb", "memory_total_mb", "mem_total", "memory_total", "mem_total_mib", "memory_total_mib")
_TEMP_KEYS = ("temperature_c", "temperature", "temp_c", "temp", "gpu_temp")
_POWER_KEYS = ("power_w", "power", "power_watts", "power_draw_w", "power_draw")
_TIME_KEYS = ("t", "ts", "time", "at", "timestamp", "sampled_at")


def metric_samples(metrics: Any, *, gpu_index: Any = None, fallback_t: float | None = None) -> list[dict[str, float | None]]:
    """Normalise whatever GPU metrics a job carries into ``[{t, util, mem, temp, power}]`` (oldest first).

    Accepted shapes: a list of samples; a dict holding such a list under ``samples``/``series``/``history``;
    or one sample. A sample may hold per-GPU readings under ``gpus`` (the job's ``gpu_index`` is used).
    ``mem`` is a percentage of the GPU's memory; units otherwise are %, degrees Celsius and watts.
    """
    raw: Iterable[Any]
    if isinstance(metrics, Mapping):
        listed = next((metrics[key] for key in ("samples", "series", "history") if isinstance(metrics.get(key), list)), None)
        raw = listed if listed is not None else [metrics]
    elif isinstance(metrics, list):
        raw = metrics
    else:
        return []
    samples = []
    for entry in list(raw)[-MAX_SAMPLES:]:
        sample = _one_sample(entry, gpu_index, fallback_t)
        if sample is not None:
            samples.append(sample)
    samples.sort(key=lambda sample: sample["t"] or 0)
    return samples


def _one_sample(entry: Any, gpu_index: Any, fallback_t: float | None) -> dict[str, float | None] | None:
    if not isinstance(entry, Mapping):
        return None
    reading: Mapping[str, Any] = entry
    gpus = entry.get("gpus")
    if isinstance(gpus, list) and gpus:
        index = int(gpu_index) if isinstance(gpu_index, (int, float, Decimal)) and 0 <= int(gpu_index) < len(gpus) else 0
        if isinstance(gpus[index], Mapping):
            reading = {**entry, **gpus[index]}
    mem = _first(reading, _MEM_PCT_KEYS)
    if mem is None:
        used, total = _first(reading, _MEM_USED_KEYS), _first(reading, _MEM_TOTAL_KEYS)
        mem = round(100.0 * used / total, 1) if used is not None and total else None
    sample = {
        "t": _first(reading, _TIME_KEYS) or fallback_t,
        "util": _first(reading, _UTIL_KEYS),
        "mem": mem,
        "temp": _first(reading, _TEMP_KEYS),
        "power": _first(reading, _POWER_KEYS),
    }
    if all(sample[key] is None for key in ("util", "mem", "temp", "power")):
        return None
    return sample


# ------------------------------------------------------------------------------------------- forks
def forks_section(user_id: int) -> Section:
    """The user's live forks and how far each lags behind mainnet: the indexed chain head minus the block
    the fork was last built or synced at (``base_block``), plus the time since its last sync, and its chain id."""
    try:
        from depu.forks.models import ALIVE, Fork
    except ImportError:
        return {"state": "none"}
    head = _chain_head()
    items = []
    for fork in Fork.by_user.query(int(user_id), scan_index_forward=False, limit=MAX_FORKS * 3):
        if int(fork.user_id) != int(user_id) or fork.status not in ALIVE:
            continue
        base = _number(fork.base_block)
        synced = _iso_seconds(fork.last_synced_at) or _iso_seconds(fork.created_at)
        items.append({
            "fork_id": str(fork.fork_id),
            "name": str(fork.fork_id) if len(str(fork.fork_id)) <= 16 else str(fork.fork_id)[:10] + "…",
            "status": fork.status,
            "block": base,
            "mainnet_block": head,
            "lag_blocks": max(0, head - base) if head is not None and base is not None else None,
            "synced_at": synced,
            "auto_sync": bool(fork.auto_sync),
            "chain_id": _number(fork.chain_id),  # wallets need it; 1 means the user kept mainnet's (warned)
        })
        _live_fork(items[-1], fork, head)
        if len(items) >= MAX_FORKS:
            break
    return {"state": "ok" if items else "none", "items": items, "mainnet_block": head}


def _live_fork(item: dict[str, Any], fork: Any, head: int | None) -> None:
    """What only the fork's host knows: where a following fork is now, and why its latest transaction
    reverted (decoded reason and compact call tree), when it did. Best effort: the section stands without."""
    try:
        from depu.forks import service
        from depu.forks.models import SERVING

        if fork.status not in SERVING:
            return
        if fork.follow:
            live = (service.follow_status(fork) or {}).get("base_block")
            if isinstance(live, int) and (item["block"] is None or live >= item["block"]):
                item["block"], item["following"] = live, True
                item["lag_blocks"] = max(0, head - live) if head is not None else None
        recent = service.recent_transactions(int(fork.user_id), str(fork.fork_id), limit=1)
        if recent and recent[0].reverted:
            explained = service.why_reverted(int(fork.user_id), str(fork.fork_id), recent[0].tx_hash)
            item["last_revert"] = {"tx_hash": explained.tx_hash, "reason": explained.reason, "tree": explained.tree}
    except Exception:  # noqa: BLE001 - a host that does not answer leaves the recorded figures
        log.info("fork %s: live details unavailable", getattr(fork, "fork_id", "?"))


def _iso_seconds(value: Any) -> float | None:
    if not value:
        return None
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------- watches
WEI_PER_ETH = 10**18
FLOW_WINDOW_HOURS = 24


def watches_section(user_id: int, *, now: float | None = None) -> Section:
    """The user's watched addresses with their ETH flows over the last day, from the indexer's hourly
    ``ADR#<address> FLOW#eth#<hour>`` aggregates."""
    try:
        from depu.analytics import watches
        from depu.chain import store
    except ImportError:
        return {"state": "none"}
    current = int(time.time() if now is None else now)
    since = current - current % 3600 - (FLOW_WINDOW_HOURS - 1) * 3600
    items = []
    for watch in watches.of_user(int(user_id))[:MAX_WATCHES]:
        address = str(watch["sk"]).lower()
        inflow = outflow = transfers = 0
        for flow in store.prefix(f"ADR#{address}", f"FLOW#{store.NATIVE}#"):
            hour = int(str(flow["sk"]).rsplit("#", 1)[-1])
            if hour < since:
                continue
            inflow += int(flow.get("in", 0))
            outflow += int(flow.get("out", 0))
            transfers += int(flow.get("n_in", 0)) + int(flow.get("n_out", 0))
        items.append({
            "address": address,
            "label": address[:6] + "…" + address[-4:],
            "inflow": round(inflow / WEI_PER_ETH, 6),
            "outflow": round(outflow / WEI_PER_ETH, 6),
            "transfers": transfers,
            "unit": "ETH",
        })
    return {"state": "ok" if items else "none", "items": items, "window_hours": FLOW_WINDOW_HOURS}


# ------------------------------------------------------------------------------------------- chain
def chain_section(_user_id: int) -> Section:
    """The newest indexed blocks (public chain data, the same for every user)."""
    try:
        from depu.chain import store
    except ImportError:
        return {"state": "none"}
    blocks = []
    for block in store.query_all(store.BLOCKS, reverse=True, limit=MAX_BLOCKS + 5):
        if block.get("status", "done") != "done":
            continue  # being applied or rolled back right now
        blocks.append({
            "number": int(block["number"]),
            "t": _number(block.get("timestamp")),
            "tx_count": int(block.get("tx_count", 0)),
            "transfers": int(block.get("transfer_count", 0)) + int(block.get("native_count", 0)),
            "gas_used": int(block.get("gas_used", 0)),
            "gas_limit": int(block.get("gas_limit", 0)),
        })
        if len(blocks) >= MAX_BLOCKS:
            break
    blocks.sort(key=lambda block: block["number"])
    return {"state": "ok" if blocks else "none", "blocks": blocks, "head": _chain_head()}


def _chain_head() -> int | None:
    """Mainnet's head as far as the indexer has followed it (its checkpoint)."""
    try:
        from depu.chain import store
    except ImportError:
        return None
    checkpoint = store.get(store.CHAIN, store.CHECKPOINT)
    return int(checkpoint["number"]) if checkpoint else None


# ------------------------------------------------------------------------------------------- helpers
def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float, Decimal)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    return None


def _first(mapping: Mapping[str, Any], keys: Iterable[str]) -> float | None:
    for key in keys:
        if key in mapping:
            number = _number(mapping[key])
            if number is not None:
                return number
    return None


def _plain(value: Any) -> Any:
    """JSON-able copy: Decimals become ints/floats, datetimes epoch seconds."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return value
    if hasattr(value, "timestamp") and not isinstance(value, (int, float, str)):
        return value.timestamp()
    return value
