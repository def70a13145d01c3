"""The provider agent's installable package and install.sh, as the agent API serves them.

Why: the command /provider shows pipes install.sh into bash on the provider's machine, where there is no
checkout of this repository, so the script downloads the agent package from the API too. The package travels
as base64 text (``package.b64``: a gzipped tarball holding ``depu-agent/`` with pyproject.toml,
requirements.txt, README.md and ``depu_agent/``), so API Gateway needs no binary media types. The tarball is
built deterministically (sorted entries, fixed times and owners, no gzip timestamp): the same sources give the
same bytes and so the same SHA-256 and signature.

Both are signed (depu.agents.signing): install.sh verifies the package's signature with the public key pinned
in the command /provider shows before it unpacks anything, and that command verifies install.sh itself before
running it. The SHA-256 the API announces only tells a download cut short or a publish caught half-way (try
again) from a forgery (refused).

Locally (and in tests) both are made from the repository's ``agent/`` directory and signed on the fly with the
local stack's own key (``DEPU_AGENT_SIGNING_KEY_FILE``, set only by the local stack and the tests); a deployed
function has only its own code and no key, so there they are read, with their signatures, from the artifacts
bucket under ``site/agent/``, where ``publish`` (scripts/publish_agent.py, run by the operator after
``sam deploy`` with the private key) puts them.
"""
from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from depu.config import get_settings, local_overrides

SITE_PREFIX = "site/agent/"
INSTALL_SCRIPT = "install.sh"
PACKAGE_B64 = "package.b64"
PACKAGE_SHA256 = "package.sha256"
INSTALL_SIGNATURE = "install.sh.sig"  # base64 of the Ed25519 signature over install.sh's bytes
PACKAGE_SIGNATURE = "package.sig"  # base64 of the Ed25519 signature over the tarball (the decoded package)
TOP_DIR = "depu-agent"  # the tarball's single top-level directory: install.sh pip-installs <dir>/depu-agent
TOP_FILES = ("pyproject.toml", "requirements.txt", "README.md")
PACKAGE_DIR = "depu_agent"
# any fixed time after 1980: wheels (zip) cannot hold earlier timestamps, and pip builds one from this tree
FIXED_MTIME = 1_700_000_000


class NotFound(Exception):
    """Neither the repository nor the artifacts bucket has it (locally: no agent/; deployed: not published)."""


class Unavailable(Exception):
    """The bucket holds a package whose recorded checksum is not its own (a publish in progress): retry later."""


@dataclass(frozen=True)
class AgentPackage:
    encoded: str  # base64 of the gzipped tarball, one line plus a newline
    sha256: str  # hex SHA-256 of the tarball (the decoded bytes): tells a torn download from a forgery
    signature: str | None = None  # base64 Ed25519 signature over the tarball; None: not signed (install refuses)


@dataclass(frozen=True)
class InstallScript:
    text: str
    signature: str | None = None  # base64 Ed25519 signature over text's UTF-8 bytes


def default_agent_dir() -> Path:
    """agent/ of the repository this package sits in (absent in a deployed Lambda)."""
    override = local_overrides().agent_dir
    if override:
        return override
    return Path(__file__).resolve().parents[4] / "agent"


def _in_repository(agent_dir: Path) -> bool:
    return (agent_dir / "pyproject.toml").is_file() and (agent_dir / PACKAGE_DIR).is_dir()


def package_files(agent_dir: Path) -> list[tuple[str, Path]]:
    """(name in the tarball, source path) for every file of the package, sorted; caches and build leftovers
    (``__pycache__``, ``*.pyc``, ``*.egg-info``, ``build``) and links are left out."""
    files = [(f"{TOP_DIR}/{name}", agent_dir / name) for name in TOP_FILES if (agent_dir / name).is_file()]
    root = agent_dir / PACKAGE_DIR
    for path in root.rglob("*"):
        relative = path.relative_to(agent_dir)
        if any(part == "__pycache__" or part.endswith(".egg-info") for part in relative.parts):
            continue
        if path.is_symlink() or not path.is_file() or path.suffix in (".pyc", ".pyo"):
            continue
        files.append((f"{TOP_DIR}/{relative.as_posix()}", path))
    return sorted(files)


def build_tarball(agent_dir: Path) -> bytes:
    """The gzipped tarball of ``agent_dir``: identical bytes for identical sources."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories: set[str] = set()
        for name, path in package_files(agent_dir):
            parents = name.split("/")[:-1]
            for depth in range(1, len(parents) + 1):
                directory = "/".join(parents[:depth])
                if directory not in directories:
                    directories.add(directory)
                    tar.addfile(_entry(directory, tarfile.DIRTYPE, 0o755))
            data = path.read_bytes()
            tar.addfile(_entry(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, compresslevel=9, mtime=0) as zipped:
        zipped.write(raw.getvalue())
    return packed.getvalue()


def _entry(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, FIXED_MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def encode(tarball: bytes) -> AgentPackage:
    return AgentPackage(base64.b64encode(tarball).decode("ascii") + "\n", hashlib.sha256(tarball).hexdigest())


def signed(tarball: bytes, private_key) -> AgentPackage:
    from depu.agents import signing

    package = encode(tarball)
    return AgentPackage(package.encoded, package.sha256, signing.sign(private_key, tarball))


def _local_signing_key():
    """The local stack's key (a deployed function has none: it serves what the operator signed)."""
    path = local_overrides().agent_signing_key_file
    if not path:
        return None
    from depu.agents import signing

    return signing.read_key_file(path)


def agent_package(agent_dir: Path | None = None) -> AgentPackage:
    """The package install.sh downloads: built from the repository (signed with the local key), or the one
    the operator published to the bucket, with its signature."""
    directory = agent_dir or default_agent_dir()
    if _in_repository(directory):
        key = _local_signing_key()
        tarball = build_tarball(directory)
        return signed(tarball, key) if key else encode(tarball)
    return _package_from_bucket()


def install_script(agent_dir: Path | None = None) -> InstallScript:
    """install.sh from the repository (signed with the local key), or the published one from the bucket."""
    directory = agent_dir or default_agent_dir()
    path = directory / INSTALL_SCRIPT
    if _in_repository(directory) and path.is_file():
        text = path.read_text(encoding="utf-8")
        key = _local_signing_key()
        if key is None:
            return InstallScript(text)
        from depu.agents import signing

        return InstallScript(text, signing.sign(key, text.encode("utf-8")))
    return _install_script_from_bucket()


@lru_cache(maxsize=1)
def _package_from_bucket() -> AgentPackage:
    encoded = _read_bucket(PACKAGE_B64)
    try:
        tarball = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Unavailable("the published package is not base64") from None
    sha256 = hashlib.sha256(tarball).hexdigest()
    try:
        recorded = _read_bucket(PACKAGE_SHA256).split()[0]
    except (NotFound, IndexError):
        recorded = sha256  # published without the checksum file: what we serve is still self-consistent
    if recorded != sha256:  # a publish in progress; lru_cache keeps no result of a raise
        raise Unavailable("the published package and its checksum disagree")
    return AgentPackage(encoded, sha256, _optional_bucket(PACKAGE_SIGNATURE))


@lru_cache(maxsize=1)
def _install_script_from_bucket() -> InstallScript:
    return InstallScript(_read_bucket(INSTALL_SCRIPT), _optional_bucket(INSTALL_SIGNATURE))


def _optional_bucket(name: str) -> str | None:
    """A signature file, or None when it was never published (the installer then refuses, fail-closed)."""
    try:
        return _read_bucket(name).strip() or None
    except NotFound:
        return None


def _read_bucket(name: str) -> str:
    import boto3

    s3 = boto3.client("s3")
    try:
        body = s3.get_object(Bucket=get_settings().artifacts_bucket, Key=SITE_PREFIX + name)["Body"].read()
    except s3.exceptions.NoSuchKey:
        raise NotFound(name) from None
    return body.decode("utf-8")


def clear_cache() -> None:
    """Forget what was read from the bucket (a warm function otherwise keeps serving it)."""
    _package_from_bucket.cache_clear()
    _install_script_from_bucket.cache_clear()


def publish(bucket: str, private_key, agent_dir: Path | None = None) -> tuple[list[str], str]:
    """Sign install.sh and the package with the operator's ``private_key`` and upload them with their
    signatures and package.sha256 under site/agent/ of ``bucket``; returns the keys written and the package's
    SHA-256. Each signature follows its file, and the checksum goes last: until it is written the function
    sees a mismatch and answers 503 rather than serving a package under another package's checksum."""
    import boto3

    from depu.agents import signing

    directory = agent_dir or default_agent_dir()
    if not _in_repository(directory):
        raise NotFound(f"{directory} is not the agent's source directory")
    tarball = build_tarball(directory)
    package = signed(tarball, private_key)
    script = (directory / INSTALL_SCRIPT).read_bytes()
    script_signature = signing.sign(private_key, script)
    public_key = signing.public_key_of(private_key)
    if not (signing.verify(public_key, tarball, package.signature or "")
            and signing.verify(public_key, script, script_signature)):
        raise signing.SigningKeyError("the signatures just made do not verify")  # never upload those
    text = "text/plain; charset=us-ascii"
    s3 = boto3.client("s3")
    uploads = (
        (INSTALL_SCRIPT, script, "text/x-shellscript; charset=utf-8"),
        (INSTALL_SIGNATURE, f"{script_signature}\n".encode("ascii"), text),
        (PACKAGE_B64, package.encoded.encode("ascii"), text),
        (PACKAGE_SIGNATURE, f"{package.signature}\n".encode("ascii"), text),
        (PACKAGE_SHA256, f"{package.sha256}  {TOP_DIR}.tar.gz\n".encode("ascii"), text),
    )
    for name, body, content_type in uploads:
        s3.put_object(Bucket=bucket, Key=SITE_PREFIX + name, Body=body, ContentType=content_type)
    clear_cache()
    return [SITE_PREFIX + name for name, _, _ in uploads], package.sha256
