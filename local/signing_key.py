"""The local stack's agent signing key: an Ed25519 key generated once per checkout, like its bot token.

Deployed, the operator keeps the key and scripts/publish_agent.py signs with it. Locally there is no operator,
so the stack makes one key on first start (``.local/agent-signing-key.pem``, gitignored, mode 600 from the
first byte, never printed), its public half becomes the template's ``AgentSigningPublicKey`` parameter (the
key /provider pins), and the local agent API signs install.sh and the package with it on the fly
(``DEPU_AGENT_SIGNING_KEY_FILE``). The tests point that variable at a key of their own.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from local.template import ROOT

KEY_PATH = ROOT / ".local" / "agent-signing-key.pem"
KEY_FILE_ENV = "DEPU_AGENT_SIGNING_KEY_FILE"


@dataclass(frozen=True)
class LocalSigningKey:
    path: Path
    public_key: str  # the pinned form (depu.agents.signing)


def key_path() -> Path:
    return Path(os.environ.get(KEY_FILE_ENV) or KEY_PATH)


def load_or_create(path: Path | None = None) -> LocalSigningKey:
    """The checkout's key, created at first use; a file readable by other users is refused."""
    layer = str(ROOT / "layers" / "depu")  # the same code publish_agent.py signs with
    if layer not in sys.path:
        sys.path.append(layer)
    from depu.agents import signing

    path = path or key_path()
    try:
        key = signing.generate_key_file(path)
    except FileExistsError:
        key = signing.read_key_file(path)
    return LocalSigningKey(path, signing.public_key_of(key))
