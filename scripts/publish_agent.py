"""Upload the provider agent's install.sh and package (agent/) to the artifacts bucket, under site/agent/.

Run after ``sam deploy``: the deployed AgentApiFunction serves ``/agent/install.sh``, ``/agent/package.b64``
and ``/agent/package.sha256`` from there (its package holds only its own code), and the command /provider
shows downloads them. Usage: ``python scripts/publish_agent.py <ArtifactsBucketName output>``.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "layers" / "depu"))

from depu.agents import package  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    keys, sha256 = package.publish(argv[0], ROOT / "agent")
    print(f"uploaded {len(keys)} files to s3://{argv[0]}/{package.SITE_PREFIX} (package sha256 {sha256}): "
          + ", ".join(key.removeprefix(package.SITE_PREFIX) for key in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
