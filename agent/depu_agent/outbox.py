"""Reports that must reach the API even if it is down when the job ends: complete, fail, release.

Each report is a JSON file written atomically before the first attempt to send it, so an API outage or an agent
restart cannot lose a finished job's result. Artifacts are uploaded first (their keys recorded in the file as
they land) and the completion is sent last. A report leaves the outbox when the API answers 2xx, or 404/409,
which mean the cloud has already decided this job (e.g. its lease ran out and another agent has it).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import stat
import threading
from pathlib import Path

import requests

from .api import AgentRejected, ApiClient, ApiUnavailable

log = logging.getLogger(__name__)
FINAL_STATUSES = frozenset({404, 409, 410})


class ArtifactRefused(Exception):
    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


def open_artifact(path: str):
    """An artifact file for reading, never through a symlink, and only a regular file (OSError otherwise)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    handle = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        raise OSError(errno.EINVAL, "not a regular file")
    return handle


class Outbox:
    def __init__(self, directory: str | Path, api: ApiClient, upload_timeout_s: float = 300.0):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.api = api
        self.upload_timeout_s = upload_timeout_s
        self._lock = threading.Lock()
        self.wakeup = threading.Event()
        self.delivered: list[dict] = []  # (kept for tests and the shutdown summary)

    # ------------------------------------------------------------------ queueing
    def put(self, job_id: str, action: str, body: dict, uploads: list[dict] | None = None) -> None:
        entry = {"job_id": job_id, "action": action, "body": body, "uploads": uploads or [], "keys": []}
        self._write(entry)
        self.wakeup.set()

    def pending_job_ids(self) -> list[str]:
        """Jobs finished here whose report is not delivered yet: heartbeats keep their leases alive."""
        return [entry["job_id"] for entry in self._entries() if entry["action"] != "release"]

    def _path(self, job_id: str) -> Path:
        return self.directory / f"{job_id}.json"

    def _write(self, entry: dict) -> None:
        path = self._path(entry["job_id"])
        temporary = path.with_suffix(".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(entry, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)

    def _entries(self) -> list[dict]:
        entries = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                entries.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                log.error("unreadable outbox entry %s left in place", path.name)
        return entries

    # ------------------------------------------------------------------ sending
    def flush(self) -> bool:
        """Try every pending report once (with the client's retries); True when none is left."""
        with self._lock:
            for entry in self._entries():
                try:
                    self._deliver(entry)
                except ApiUnavailable as exc:
                    log.warning("report for job %s not delivered yet (%s); kept for retry", entry["job_id"], exc)
                    return False
            return not self._entries()

    def _deliver(self, entry: dict) -> None:
        job_id = entry["job_id"]
        entry.setdefault("skipped", [])
        while len(entry["keys"]) + len(entry["skipped"]) < len(entry["uploads"]):
            upload = entry["uploads"][len(entry["keys"]) + len(entry["skipped"])]
            try:
                key = self._upload(job_id, upload)
            except ArtifactRefused as refused:
                if refused.status in FINAL_STATUSES:  # the cloud no longer takes reports for this job
                    self._drop(entry, f"artifact refused (HTTP {refused.status})")
                    return
                entry["skipped"].append(upload["name"])  # a bad artifact must not cost the result
            else:
                entry["keys"].append(key)
            self._write(entry)
        body = dict(entry["body"])
        if entry["action"] == "complete":
            body["artifacts"] = list(entry["keys"])
            if entry["skipped"]:
                body.setdefault("result", {})["artifacts_refused"] = entry["skipped"]
        path = "/agent/release" if entry["action"] == "release" else f"/agent/jobs/{job_id}/{entry['action']}"
        status, answer = self.api.post(path, body)
        if status < 300 or status in FINAL_STATUSES:
            if status >= 300:
                log.warning("job %s %s answered %s (%s): the cloud already decided", job_id, entry["action"],
                            status, answer.get("error") or answer.get("message"))
            self._drop(entry, f"HTTP {status}")
            return
        raise ApiUnavailable(f"{path} answered {status}")

    def _upload(self, job_id: str, upload: dict) -> str:
        """Upload the bytes of the agent's own copy: opened without following a link (were the copy ever
        swapped for a symlink to the token file, the upload is refused, not made), regular files only, its
        size taken from the very descriptor that is sent."""
        try:
            handle = open_artifact(upload["path"])
        except OSError as exc:
            log.warning("artifact %s for job %s not uploaded: %s", upload["name"], job_id, exc.strerror or exc)
            raise ArtifactRefused(0) from exc
        with handle:
            size = os.fstat(handle.fileno()).st_size
            status, answer = self.api.post(f"/agent/jobs/{job_id}/artifacts", {"name": upload["name"], "size": size})
            if status in FINAL_STATUSES or 400 <= status < 500:
                log.warning("artifact %s for job %s refused (HTTP %s: %s)", upload["name"], job_id, status,
                            answer.get("error"))
                raise ArtifactRefused(status)
            if status >= 300:
                raise ApiUnavailable(f"artifact URL answered {status}")
            headers = {str(k): str(v) for k, v in (answer.get("upload_headers") or {}).items()}
            try:
                response = requests.put(answer["upload_url"], data=handle, headers=headers,
                                        timeout=self.upload_timeout_s)
            except requests.RequestException as exc:
                raise ApiUnavailable(f"artifact upload failed ({type(exc).__name__})") from exc
        if response.status_code == 412:  # write-once link: our earlier upload of this file landed
            return answer["key"]
        if response.status_code >= 300:
            raise ApiUnavailable(f"artifact upload answered {response.status_code}")
        return answer["key"]

    def _drop(self, entry: dict, why: str) -> None:
        self._path(entry["job_id"]).unlink(missing_ok=True)
        self.delivered.append({"job_id": entry["job_id"], "action": entry["action"], "outcome": why})

    def run(self, stop: threading.Event, retry_seconds: float = 2.0, fatal: threading.Event | None = None) -> None:
        """Sender thread: deliver whenever woken, and retry on a timer while anything is pending."""
        while not stop.is_set():
            self.wakeup.wait(retry_seconds)
            self.wakeup.clear()
            try:
                self.flush()
            except AgentRejected:
                log.error("the API rejected this agent's token while sending reports")
                if fatal is not None:
                    fatal.set()
                return
