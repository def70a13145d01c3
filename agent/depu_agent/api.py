"""HTTP client for the DePU agent API: bearer token, timeouts, retries with backoff and jitter.

Connection errors and 5xx answers are retried (the API being briefly down must not kill a provider's
agent); 4xx answers are returned at once because retrying cannot change them. The token lives only in the
session's headers and is never part of a log line or a repr.
"""
from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass

import requests

from . import __version__

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class ApiUnavailable(RuntimeError):
    """Every attempt failed with a connection error or a retryable status."""


class AgentRejected(RuntimeError):
    """The API answered 401: the agent token is wrong or revoked. Retrying cannot help."""


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**n))."""

    initial: float = 1.0
    maximum: float = 30.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.maximum, self.initial * (2 ** attempt)))


class ApiClient:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 15.0,
        attempts: int = 5,
        backoff: Backoff | None = None,
        stop: threading.Event | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff or Backoff()
        self.stop = stop or threading.Event()
        self._local = threading.local()
        self._token = token

    def __repr__(self) -> str:
        return f"ApiClient({self.base_url!r}, token={'set' if self._token else 'unset'})"

    @property
    def has_token(self) -> bool:
        return bool(self._token)

    def set_token(self, token: str) -> None:
        self._token = token

    def _session(self) -> requests.Session:
        # One Session per thread: requests.Session is not documented as thread-safe.
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = f"depu-agent/{__version__}"
            self._local.session = session
        return session

    def post(
        self, path: str, json: dict | None = None, timeout: float | None = None, attempts: int | None = None
    ) -> tuple[int, dict]:
        """POST ``json`` to ``path``; returns (status, body) of the first non-retryable answer.

        Raises ApiUnavailable after ``attempts`` failures, AgentRejected on 401.
        """
        attempts = self.attempts if attempts is None else attempts
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        url = f"{self.base_url}{path}"
        last_problem = "no attempt made"
        for attempt in range(max(1, attempts)):
            if attempt:
                if self.stop.wait(self.backoff.delay(attempt - 1)):
                    break
            try:
                response = self._session().post(url, json=json or {}, headers=headers, timeout=timeout or self.timeout)
            except requests.RequestException as exc:
                last_problem = type(exc).__name__
                log.warning("POST %s failed (%s), attempt %d/%d", path, last_problem, attempt + 1, attempts)
                continue
            if response.status_code in RETRYABLE_STATUS:
                last_problem = f"HTTP {response.status_code}"
                log.warning("POST %s answered %s, attempt %d/%d", path, response.status_code, attempt + 1, attempts)
                continue
            if response.status_code == 401:
                raise AgentRejected(f"POST {path}: the API rejected this agent's token (401)")
            return response.status_code, _body(response)
        raise ApiUnavailable(f"POST {path}: {last_problem}")


def _body(response: requests.Response) -> dict:
    if not response.content:
        return {}
    try:
        body = response.json()
    except ValueError:
        return {"raw": response.text[:500]}
    return body if isinstance(body, dict) else {"value": body}
