"""HTTP client for the DePU agent API: bearer token, timeouts, retries with backoff and jitter.

Connection errors and 5xx answers are retried (the API being briefly down must not kill a provider's
agent); 4xx answers are returned at once because retrying cannot change them. The token lives only in the
session's headers and is never part of a log line or a repr.

The retries run on tenacity, the engine DePU's cloud side runs its own named policies on (depu.retry; the
agent is its own package and cannot import that layer), with the agent's policy named here:
``AGENT_API_RETRY``, ``AGENT_API_ATTEMPTS`` tries. A stop (the agent shutting down) cuts a wait short.
"""
from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass

import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

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

    def wait(self) -> wait_random_exponential:
        """The same waits as tenacity's wait strategy (retry n waits ``delay(n - 1)``)."""
        return wait_random_exponential(multiplier=self.initial, max=self.maximum)


AGENT_API_RETRY = Backoff(initial=1.0, maximum=30.0)
"""The agent API's retry policy: from 1 s doubling to 30 s, each wait a uniform draw below that (full jitter,
so a fleet of agents coming back after an outage does not knock in step)."""
AGENT_API_ATTEMPTS = 5


class _Retryable(Exception):
    """One attempt failed in a way another may not (a connection error, a retryable status)."""


class _Stopped(Exception):
    """The agent is stopping: no more waiting for the API."""


class ApiClient:
    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 15.0,
        attempts: int = AGENT_API_ATTEMPTS,
        backoff: Backoff | None = None,
        stop: threading.Event | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff or AGENT_API_RETRY
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
        attempts = max(1, self.attempts if attempts is None else attempts)
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        url = f"{self.base_url}{path}"
        tries = {"count": 0, "problem": "no attempt made"}

        def once() -> tuple[int, dict]:
            tries["count"] += 1
            try:
                response = self._session().post(url, json=json or {}, headers=headers, timeout=timeout or self.timeout)
            except requests.RequestException as exc:
                tries["problem"] = type(exc).__name__
                log.warning("POST %s failed (%s), attempt %d/%d", path, tries["problem"], tries["count"], attempts)
                raise _Retryable() from None
            if response.status_code in RETRYABLE_STATUS:
                tries["problem"] = f"HTTP {response.status_code}"
                log.warning("POST %s answered %s, attempt %d/%d", path, response.status_code, tries["count"], attempts)
                raise _Retryable()
            if response.status_code == 401:
                raise AgentRejected(f"POST {path}: the API rejected this agent's token (401)")
            return response.status_code, _body(response)

        def sleep(seconds: float) -> None:
            if self.stop.wait(seconds):
                raise _Stopped()

        retrying = Retrying(
            retry=retry_if_exception_type(_Retryable),
            stop=stop_after_attempt(attempts),
            wait=self.backoff.wait(),
            sleep=sleep,
            reraise=True,
        )
        try:
            return retrying(once)
        except (_Retryable, _Stopped):
            raise ApiUnavailable(f"POST {path}: {tries['problem']}") from None


def _body(response: requests.Response) -> dict:
    if not response.content:
        return {}
    try:
        body = response.json()
    except ValueError:
        return {"raw": response.text[:500]}
    return body if isinstance(body, dict) else {"value": body}
