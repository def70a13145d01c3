"""Copy the egress host-list rule from the agent (its source) to the cloud layer, byte for byte.

Why a copy: the agent is installed alone on a provider's machine and the Lambda layer holds only
layers/depu, so neither can import the other; one rule must still decide both a job's and a provider's
``egress_hosts``. Run after editing agent/depu_agent/hostlist.py; tests/test_hostlist.py fails while the copy
differs."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "agent" / "depu_agent" / "hostlist.py"
COPY = ROOT / "layers" / "depu" / "depu" / "jobs" / "hostlist.py"

if __name__ == "__main__":
    COPY.write_bytes(SOURCE.read_bytes())
    print(f"wrote {COPY.relative_to(ROOT)}")
