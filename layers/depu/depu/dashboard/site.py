"""The dashboard's static files (web/dashboard/), served by the dashboard API itself.

Why through the API rather than a separate website: the page and its API then share one origin, so the
Content-Security-Policy can be ``default-src 'self'`` with no CORS, and the same URL works locally and in the
cloud. Locally (and in tests) the files are read from the repository; a deployed function has only its own
code, so there the files are read from the artifacts bucket under ``site/dashboard/``, where ``publish``
(scripts/publish_dashboard.py, run after ``sam deploy``) puts them.

Only plain file names with known extensions are served: no paths, so nothing outside the site can be read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from depu.config import get_settings, local_overrides

SITE_PREFIX = "site/dashboard/"
INDEX = "index.html"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}
# The page loads nothing from elsewhere: scripts, styles and API calls all come from this origin. Telegram's
# web clients show a Mini App in an iframe, so they (and only they) may frame it.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'self' https://web.telegram.org https://*.telegram.org"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def page_headers(upload_origin: str) -> dict[str, str]:
    """The security headers of the page itself: as SECURITY_HEADERS, except that the page may also post to
    ``upload_origin``, the artifacts bucket's (a large input file goes there by upload link, depu.jobs.uploads)."""
    policy = CONTENT_SECURITY_POLICY.replace("connect-src 'self';", f"connect-src 'self' {upload_origin};")
    return {**SECURITY_HEADERS, "Content-Security-Policy": policy}


class NotFound(Exception):
    pass


@dataclass(frozen=True)
class StaticFile:
    name: str
    body: str
    content_type: str


def default_site_dir() -> Path:
    """web/dashboard/ of the repository this package sits in (absent in a deployed Lambda)."""
    override = local_overrides().dashboard_site_dir
    if override:
        return override
    return Path(__file__).resolve().parents[4] / "web" / "dashboard"


def static_file(name: str | None, site_dir: Path | None = None) -> StaticFile:
    """The SPA file ``name`` ("" or None means the index page), or ``NotFound``."""
    name = name or INDEX
    suffix = Path(name).suffix
    if not _NAME.fullmatch(name) or ".." in name or suffix not in CONTENT_TYPES:
        raise NotFound(name)
    directory = site_dir or default_site_dir()
    if directory.is_dir():
        path = directory / name
        if not path.is_file():
            raise NotFound(name)
        return StaticFile(name, path.read_text(encoding="utf-8"), CONTENT_TYPES[suffix])
    return StaticFile(name, _from_bucket(name), CONTENT_TYPES[suffix])


@lru_cache(maxsize=32)
def _from_bucket(name: str) -> str:
    import boto3

    s3 = boto3.client("s3")
    try:
        body = s3.get_object(Bucket=get_settings().artifacts_bucket, Key=SITE_PREFIX + name)["Body"].read()
    except s3.exceptions.NoSuchKey:
        raise NotFound(name) from None
    return body.decode("utf-8")


def publish(site_dir: Path | None = None, bucket: str | None = None) -> list[str]:
    """Upload the SPA's files to the artifacts bucket (the deployed function serves them from there)."""
    import boto3

    directory = site_dir or default_site_dir()
    s3 = boto3.client("s3")
    uploaded = []
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix in CONTENT_TYPES and _NAME.fullmatch(path.name):
            s3.put_object(
                Bucket=bucket or get_settings().artifacts_bucket,
                Key=SITE_PREFIX + path.name,
                Body=path.read_bytes(),
                ContentType=CONTENT_TYPES[path.suffix],
            )
            uploaded.append(path.name)
    _from_bucket.cache_clear()
    return uploaded
