"""A recording stand-in for the cloud's side of one job, for agent tests that run ``JobRun`` directly: the
artifact route answers with a presigned-PUT URL on the same server, the log route keeps each line, and the
PUT keeps every uploaded body (in order, with its name). Shared by the sandbox-abuse and container tests."""
from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

from depu_agent.api import ApiClient, Backoff


class JobApiRecorder(BaseHTTPRequestHandler):
    """Class-level records, reset by ``serve``: tests read them after the job ran."""

    uploads: list[tuple[str, bytes]] = []
    lines: list[str] = []
    lock = threading.Lock()

    def _answer(self, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self):  # noqa: N802 - stdlib name
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path.endswith("/artifacts"):
            port = self.server.server_address[1]
            return self._answer({"upload_url": f"http://127.0.0.1:{port}/upload/{body['name']}",
                                 "key": f"jobs/x/artifacts/{body['name']}"})
        if self.path.endswith("/logs"):
            with JobApiRecorder.lock:
                JobApiRecorder.lines.extend(str(line) for line in body.get("lines") or [])
        self._answer({"ok": True})

    def do_PUT(self):  # noqa: N802 - stdlib name
        data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with JobApiRecorder.lock:
            JobApiRecorder.uploads.append((self.path.rsplit("/", 1)[-1], data))
        self._answer({})

    def log_message(self, *args):
        pass

    @classmethod
    def bodies(cls) -> list[bytes]:
        with cls.lock:
            return [data for _name, data in cls.uploads]


@contextmanager
def serve() -> Iterator[ApiClient]:
    """The recorder on 127.0.0.1 (records reset), and an agent API client pointed at it."""
    JobApiRecorder.uploads, JobApiRecorder.lines = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), JobApiRecorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield ApiClient(f"http://127.0.0.1:{server.server_address[1]}", token="t", attempts=2, backoff=Backoff(0.01, 0.02))
    finally:
        server.shutdown()
        server.server_close()
