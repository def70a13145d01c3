"""Sign the provider agent's install.sh and package (agent/) and upload them to the artifacts bucket.

Run after ``sam deploy``: the deployed AgentApiFunction serves ``/agent/install.sh``, ``/agent/package.b64``
and their signatures from site/agent/ (its package holds only its own code), and the command /provider shows
verifies them against the stack's AgentSigningPublicKey before anything runs as root. Usage:

  python scripts/publish_agent.py <ArtifactsBucketName output> --signing-key-file KEY.pem [--public-key K]
  python scripts/publish_agent.py <ArtifactsBucketName output> --signing-key-secret SECRET-ID [--public-key K]

The Ed25519 private key is the operator's (``openssl genpkey -algorithm ed25519``): a file only you can read,
or the PEM text of a Secrets Manager secret no function of the stack can read. It is never printed. With
``--public-key`` (the stack's AgentSigningPublicKey) nothing is uploaded unless the key matches it.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "layers" / "depu"))

from depu.agents import package, signing  # noqa: E402

OPTIONS = ("--signing-key-file", "--signing-key-secret", "--public-key")


def _usage() -> int:
    print(__doc__.strip(), file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-") or len(argv) % 2 != 1:
        return _usage()
    bucket, pairs = argv[0], dict(zip(argv[1::2], argv[2::2]))
    if any(name not in OPTIONS for name in pairs) or len(pairs) != len(argv[1:]) // 2:
        return _usage()
    if ("--signing-key-file" in pairs) == ("--signing-key-secret" in pairs):
        print("publish_agent: give exactly one of --signing-key-file or --signing-key-secret", file=sys.stderr)
        return 2
    try:
        if "--signing-key-file" in pairs:
            key = signing.read_key_file(Path(pairs["--signing-key-file"]))
        else:
            key = signing.read_key_secret(pairs["--signing-key-secret"])
    except signing.SigningKeyError as error:
        print(f"publish_agent: {error}", file=sys.stderr)
        return 1
    public_key = signing.public_key_of(key)
    expected = pairs.get("--public-key")
    if expected is not None and expected != public_key:
        print(f"publish_agent: this key's public half is {public_key}, not the --public-key given: "
              "installs would refuse everything it signs; nothing uploaded", file=sys.stderr)
        return 1
    keys, sha256 = package.publish(bucket, key, ROOT / "agent")
    print(f"uploaded {len(keys)} files to s3://{bucket}/{package.SITE_PREFIX} (package sha256 {sha256}, signed by "
          f"{public_key}: the stack's AgentSigningPublicKey must be this key): "
          + ", ".join(name.removeprefix(package.SITE_PREFIX) for name in keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
