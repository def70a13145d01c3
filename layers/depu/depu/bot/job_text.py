"""What the user reads about a GPU job: the progress message, the end summary, the retry notice and the
Cancel button. The bot's words, so they live in ``depu.bot``; the jobs domain (``depu.jobs.messages``, which
throttles and queues the notices) calls these formatters. This module imports only the domain's models and
storage, never the rest of the bot, so that one direction (domain -> these formatters) stays a leaf.
"""
from __future__ import annotations

import html
from typing import Any

from depu.agents.catalogue import describe
from depu.chat import Button
from depu.jobs import lifecycle, storage
from depu.jobs.leases import MAX_ATTEMPTS
from depu.jobs.models import Job

LOG_TAIL_LINES = 15
LIVE_LOG_LINES = 4  # the progress message's live log lines (edited at most every PROGRESS_EDIT_SECONDS)
CANCEL_PREFIX = "rj"  # the rental feature's job buttons (depu.bot.rental.JOBS)
MAX_REASON_CHARS = 800  # the agent keeps its reasons under this (exit status and the last stderr lines)

_ICONS = {
    lifecycle.QUEUED: "⏳",
    lifecycle.ASSIGNED: "📦",
    lifecycle.RUNNING: "⚙️",
    lifecycle.SUCCEEDED: "✅",
    lifecycle.FAILED: "❌",
    lifecycle.CANCELLED: "🛑",
    lifecycle.EXPIRED: "⌛",
}


def cancel_button(job_id: str) -> Button:
    from depu.conversation import encode

    return Button("Cancel job", data=encode(CANCEL_PREFIX, "c", job_id))


def _metrics_line(metrics: Any) -> str:
    if not isinstance(metrics, dict):
        return ""
    parts = []
    if "utilization_pct" in metrics:
        parts.append(f"GPU {float(metrics['utilization_pct']):.0f}%")
    if "memory_used_mb" in metrics and "memory_total_mb" in metrics:
        parts.append(f"mem {float(metrics['memory_used_mb']) / 1024:.1f}/{float(metrics['memory_total_mb']) / 1024:.1f} GB")
    if "temperature_c" in metrics:
        parts.append(f"{float(metrics['temperature_c']):.0f}°C")
    if "power_w" in metrics:
        parts.append(f"{float(metrics['power_w']):.0f} W")
    return " · ".join(parts)


def status_text(job: Job) -> str:
    """The progress message: state, progress bar, live GPU metrics."""
    lines = [
        f"{_ICONS.get(job.status, '')} <b>Job</b> <code>{job.job_id}</code> — {job.status}",
        f"{html.escape(describe(job.gpu_class))} · {html.escape(job.workload)} · limit {int(job.time_limit_s) // 60} min"
        f" · at most {int(job.max_cost)} credits",
    ]
    if job.status == lifecycle.RUNNING:
        done = max(0.0, min(1.0, float(job.progress or 0)))
        bar = "█" * round(done * 10) + "░" * (10 - round(done * 10))
        lines.append(f"{bar} {done * 100:.0f}%  (attempt {int(job.attempt)})")
        if job.message:
            lines.append(html.escape(job.message[:200]))
        if job.workload == "job" and job.started_at is None:
            lines.append("Setting up (packages, inputs): not billed.")
        metrics = _metrics_line(job.metrics)
        if metrics:
            lines.append(metrics)
        live = [line[:160] for line in (job.logs_tail or [])[-LIVE_LOG_LINES:] if line.strip()]
        if live:
            lines.append("<pre>" + html.escape("\n".join(live)) + "</pre>")
    elif job.status == lifecycle.QUEUED and int(job.attempt or 0) > 0:
        lines.append("Retrying on another provider.")
    elif job.status in lifecycle.TERMINAL and job.status != lifecycle.SUCCEEDED and job.error:
        lines.append(f"Reason: {html.escape(job.error[:MAX_REASON_CHARS])}")
    return "\n".join(lines)


def summary_text(job: Job) -> str:
    """The end of a job: outcome, result, logs tail, artifacts (presigned links) and the cost charged."""
    lines = [f"{_ICONS.get(job.status, '')} <b>Job</b> <code>{job.job_id}</code> {job.status}."]
    if job.error and job.status != lifecycle.SUCCEEDED:
        lines.append(f"Reason: {html.escape(job.error[:MAX_REASON_CHARS])}")
    if isinstance(job.result, dict) and job.result:
        shown = [f"• {html.escape(str(key))}: {html.escape(str(value))[:120]}" for key, value in list(job.result.items())[:12]]
        lines.append("<b>Result</b>\n" + "\n".join(shown))
    tail = (job.logs_tail or [])[-LOG_TAIL_LINES:]
    if tail:
        lines.append("<b>Last log lines</b>\n<pre>" + html.escape("\n".join(line[:200] for line in tail)) + "</pre>")
    links = _artifact_links(job)
    if links:
        # presigned with the function's role session, so a link can expire before its nominal 24 h
        lines.append(f"<b>Artifacts</b> (links work for up to {storage.DOWNLOAD_URL_SECONDS // 3600} h; "
                     f"<code>/jobs {job.job_id}</code> gives fresh ones; files are kept {storage.JOB_FILES_DAYS} days)\n"
                     + "\n".join(links))
    charged = int(job.charged or 0)
    lines.append(f"Charged: <b>{charged}</b> credits for {int(job.billed_seconds or 0)} s (held {int(job.max_cost)}).")
    return "\n\n".join(lines)


def _artifact_links(job: Job) -> list[str]:
    """Download links for the files the job completed with. Each file is offered only while it is what the
    job completed with (same ETag): upload links are write-once, so S3 itself refuses an overwrite, and this
    check makes sure a changed file is never handed to the user even where that refusal is missing."""
    prefix = storage.artifact_prefix(job.job_id)
    etags = list(job.artifact_etags or [])
    links = []
    for index, key in enumerate((job.artifacts or [])[:10]):
        if not key.startswith(prefix):
            continue
        name = html.escape(key[len(prefix):])
        if index < len(etags):
            found = storage.head(key)
            if found is None:
                links.append(f"• {name} (no longer stored)")
                continue
            if found[1] != etags[index]:
                links.append(f"• {name} (withheld: it changed after the job ended)")
                continue
        links.append(f'• <a href="{html.escape(storage.download_url(key, filename=key[len(prefix):]))}">{name}</a>')
    return links


def retry_text(job: Job) -> str:
    """The attempt was interrupted (provider silent, or a failure worth retrying): say so, and that it is free."""
    reason = "its provider went silent" if (job.error or "").startswith("agent lost") else (job.error or "a problem")
    return (f"🔁 Job <code>{job.job_id}</code> moves to another provider ({html.escape(reason[:200])}); "
            f"attempt {int(job.attempt) + 1} of {MAX_ATTEMPTS}. You are not charged for the interrupted attempt.")
