"""A small client for DePU's public REST API: the key, the base URL, retries, and the one error shape.

Every POST carries an ``Idempotency-Key`` (one per logical call, the same on each retry), so a request
retried after a lost answer is done once. The key is sent only in the Authorization header, never in a URL.
"""
from __future__ import annotations

import json
import os
import re
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import requests

DEFAULT_URL = "http://127.0.0.1:3000"
USER_AGENT = "depu-cli/1.0"
RETRIES = 3
RETRY_STATUSES = frozenset({409, 429, 500, 502, 503, 504})
TIMEOUT_S = 35  # above the API's longest answer (a followed log page waits up to 20 s)
UPLOAD_READ_TIMEOUT_S = 300  # S3 answers a POST once it has stored the whole file


def config_dir() -> Path:
    """Where ``depu login`` keeps the key: $DEPU_CONFIG_DIR, else the platform's user config folder."""
    if os.environ.get("DEPU_CONFIG_DIR"):
        return Path(os.environ["DEPU_CONFIG_DIR"])
    import click

    return Path(click.get_app_dir("depu"))


def config_path() -> Path:
    return config_dir() / "config.json"


def save_config(api_url: str, key: str) -> Path:
    """Write the login, readable by this user only (the folder 700, the file 600, from its first byte)."""
    folder = config_dir()
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, stat.S_IRWXU)
    path = config_path()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.chmod(path, 0o600)  # an older file keeps its mode under O_CREAT
    with os.fdopen(descriptor, "w") as handle:
        json.dump({"api_url": api_url, "key": key}, handle)
    return path


def load_config() -> dict[str, str]:
    try:
        return json.loads(config_path().read_text())
    except (OSError, ValueError):
        return {}


class ApiError(Exception):
    """An answer in the API's error shape (or a transport failure, status 0)."""

    def __init__(self, status: int, code: str, message: str, request_id: Optional[str] = None,
                 details: Optional[list] = None):
        super().__init__(message)
        self.status, self.code, self.message, self.request_id, self.details = status, code, message, request_id, details

    def __str__(self) -> str:
        where = f", request {self.request_id}" if self.request_id else ""
        lines = [f"{self.message} ({self.code}, HTTP {self.status}{where})"]
        for detail in self.details or []:
            lines.append(f"  {'.'.join(str(p) for p in detail.get('loc', []))}: {detail.get('msg')}")
        return "\n".join(lines)


@dataclass
class Client:
    api_url: str
    key: Optional[str]
    session: requests.Session = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.api_url = self.api_url.rstrip("/")
        if self.session is None:
            self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT

    @classmethod
    def from_config(cls, api_url: Optional[str] = None, key: Optional[str] = None) -> "Client":
        """Explicit arguments, then DEPU_API_URL / DEPU_API_KEY, then the stored login."""
        stored = load_config()
        return cls(api_url or os.environ.get("DEPU_API_URL") or stored.get("api_url") or DEFAULT_URL,
                   key or os.environ.get("DEPU_API_KEY") or stored.get("key"))

    def _headers(self, extra: Optional[dict[str, str]] = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        return headers

    def request(self, method: str, path: str, *, params: Optional[dict[str, Any]] = None, body: Any = None,
                data: Optional[Callable[[], Iterator[bytes]]] = None, timeout: float = TIMEOUT_S) -> Any:
        """One call, retried on transport errors and on 409/429/5xx with backoff; POSTs with one
        Idempotency-Key across the retries. ``data`` makes a fresh body stream per attempt (upload progress)."""
        extra: dict[str, str] = {}
        if method.upper() == "POST":
            extra["Idempotency-Key"] = uuid.uuid4().hex
        if body is not None or data is not None:
            extra["Content-Type"] = "application/json"
        payload = json.dumps(body).encode() if body is not None else None
        for attempt in range(RETRIES + 1):
            try:
                answer = self.session.request(method, self.api_url + path, params=params,
                                              data=data() if data is not None else payload,
                                              headers=self._headers(extra), timeout=timeout)
            except requests.RequestException as error:
                if attempt == RETRIES:
                    raise ApiError(0, "unreachable", f"could not reach {self.api_url}: {error}") from None
                time.sleep(0.5 * 2**attempt)
                continue
            if answer.status_code in RETRY_STATUSES and attempt < RETRIES:
                time.sleep(_retry_after(answer, 0.5 * 2**attempt))
                continue
            return _decode(answer)
        raise AssertionError("unreachable")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body=body if body is not None else {})

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def download(self, url: str, target: Path, progress: Optional[Callable[[int, Optional[int]], None]] = None) -> int:
        """Fetch a presigned link (no Authorization header: the link is its own credential) into ``target``."""
        with requests.get(url, stream=True, timeout=TIMEOUT_S) as answer:
            if answer.status_code != 200:
                raise ApiError(answer.status_code, "download_failed", f"the download link answered {answer.status_code}")
            total = int(answer.headers["Content-Length"]) if answer.headers.get("Content-Length") else None
            written = 0
            with open(target, "wb") as handle:
                for chunk in answer.iter_content(64 * 1024):
                    handle.write(chunk)
                    written += len(chunk)
                    if progress:
                        progress(len(chunk), total)
        return written


    def upload(self, url: str, fields: dict[str, str], path: Path,
               progress: Optional[Callable[[int], None]] = None) -> None:
        """Post ``path`` with an upload form (``POST /v1/uploads``): no Authorization header, the signed form is
        its own credential. The file is streamed from disk; a transport failure is retried from the start (the
        form writes one fixed key, so a second post only replaces the first)."""
        for attempt in range(RETRIES + 1):
            body = MultipartFile(fields, path, progress)
            try:
                answer = requests.post(url, data=body, headers={"Content-Type": body.content_type},
                                       timeout=(TIMEOUT_S, UPLOAD_READ_TIMEOUT_S))
            except requests.RequestException as error:
                if attempt == RETRIES:
                    raise ApiError(0, "upload_failed", f"could not post {path.name}: {error}") from None
                time.sleep(0.5 * 2**attempt)
                continue
            if answer.status_code in (200, 201, 204):
                return
            if answer.status_code >= 500 and attempt < RETRIES:
                time.sleep(0.5 * 2**attempt)
                continue
            raise ApiError(answer.status_code, "upload_refused",
                           f"the upload of {path.name} was refused: {_s3_reason(answer.text)}")
        raise AssertionError("unreachable")


class MultipartFile:
    """A multipart/form-data body of an upload form: its fields, then one file read from disk a chunk at a time
    (S3 wants the file as the last part and the whole length up front, so ``len`` is exact and nothing is
    chunk-encoded). Each iteration starts over: a retry sends the same bytes again."""

    CHUNK = 1024 * 1024

    def __init__(self, fields: dict[str, str], path: Path, progress: Optional[Callable[[int], None]] = None):
        self.path, self.progress = path, progress
        boundary = uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={boundary}"
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"\r\n\r\n{value}\r\n'
                 for name, value in fields.items()]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{_quoted(path.name)}"'
                     f"\r\nContent-Type: application/octet-stream\r\n\r\n")
        self.head = "".join(parts).encode()
        self.tail = f"\r\n--{boundary}--\r\n".encode()
        self.size = path.stat().st_size

    def __len__(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        with open(self.path, "rb") as handle:
            sent = 0
            while sent < self.size:
                chunk = handle.read(min(self.CHUNK, self.size - sent))
                if not chunk:
                    raise OSError(f"{self.path} shrank while it was being uploaded")
                sent += len(chunk)
                if self.progress:
                    self.progress(len(chunk))
                yield chunk
        yield self.tail


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


def _s3_reason(text: str) -> str:
    """The <Code> and <Message> of an S3 error document, or its start."""
    code, message = re.search(r"<Code>([^<]*)</Code>", text), re.search(r"<Message>([^<]*)</Message>", text)
    if code:
        return code.group(1) + (f": {message.group(1)}" if message else "")
    return text[:200] or "no reason given"


def _retry_after(answer: requests.Response, default: float) -> float:
    try:
        return min(30.0, float(answer.headers.get("Retry-After", default)))
    except ValueError:
        return default


def _decode(answer: requests.Response) -> Any:
    try:
        body = answer.json()
    except ValueError:
        body = None
    if answer.status_code >= 400:
        error = (body or {}).get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            raise ApiError(answer.status_code, str(error.get("code")), str(error.get("message")),
                           error.get("request_id"), error.get("details"))
        raise ApiError(answer.status_code, "http_error", f"HTTP {answer.status_code}: {answer.text[:200]}")
    return body
