"""The one line a provider pastes on the GPU machine: download install.sh, verify it, run it as root.

Why this shape: ``curl … | sudo bash`` runs whatever the server (or anyone who can write ``site/agent/`` in the
artifacts bucket, or sits in between) sends, as root, on every new provider's machine. So the line carries the
operator's Ed25519 public key itself (the pin: it comes from Telegram, not from the API), saves install.sh and
its signature in a fresh private directory, checks the signature with ``openssl pkeyutl -verify`` (OpenSSL is
on every provider machine) and runs install.sh only if that succeeds; install.sh then gets the same key with
``--signing-key`` and refuses an agent package that key did not sign. Nothing runs before the check.

Only https is used, except towards a loopback address (the local stack and the tests), where nothing leaves the
machine. The provider token stays in the environment (``export`` is a shell builtin), never in an argv that
other users could read in ``ps``.
"""
from __future__ import annotations

import re
import shlex
from urllib.parse import urlsplit

from depu.agents import signing

SUDO_WITH_TOKEN = "sudo --preserve-env=DEPU_PROVIDER_TOKEN bash"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_BASE = re.compile(r"^https?://[A-Za-z0-9.:\[\]_-]+(/[A-Za-z0-9._~/-]*)?$")
LOOPBACK_HOSTS = re.compile(r"^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|localhost|::1)$")


class NotConfigured(Exception):
    """This deployment cannot give a safe install command (no pinned key, or a plain-http public URL)."""


def is_loopback_http(url: str) -> bool:
    """http to this machine itself: the only place plain http is accepted."""
    parts = urlsplit(url)
    return parts.scheme == "http" and bool(LOOPBACK_HOSTS.match(parts.hostname or ""))


def install_command(base_url: str, public_key: str, token: str) -> str:
    """The single paste /provider shows (one line; ``&&`` stops at the first failure)."""
    base = base_url.rstrip("/")
    if not signing.is_public_key(public_key):
        raise NotConfigured("the agent signing key (parameter AgentSigningPublicKey) is not set")
    if not _BASE.match(base) or not (base.startswith("https://") or is_loopback_http(base)):
        raise NotConfigured("the public API URL must be https (plain http only to a loopback address)")
    if not _TOKEN.match(token):
        raise ValueError("an enrolment token is URL-safe base64")
    proto = "=https" if base.startswith("https://") else "=http"
    get = f"curl -fsSL --proto {proto}"
    pem = " ".join(shlex.quote(line) for line in signing.public_key_pem(public_key).splitlines())
    return (
        f"export DEPU_PROVIDER_TOKEN={token}; d=$(mktemp -d)"
        f" && {get} -o \"$d/install.sh\" {base}/agent/install.sh"
        f" && {get} {base}/agent/install.sh.sig | base64 -d > \"$d/sig\""
        f" && printf '%s\\n' {pem} > \"$d/key.pem\""
        ' && openssl pkeyutl -verify -pubin -inkey "$d/key.pem" -rawin -in "$d/install.sh" -sigfile "$d/sig"'
        f" && {SUDO_WITH_TOKEN} \"$d/install.sh\" --api {base} --signing-key {public_key}"
    )
