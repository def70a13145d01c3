"""Where a job's files live in the artifacts bucket, and short-lived presigned links to them.

jobs/<job_id>/script.py            the user's script (read by the agent through a presigned GET)
jobs/<job_id>/logs/<seq>.log       every log chunk, as sent (the full log; the job item keeps a tail)
jobs/<job_id>/artifacts/<name>     files the agent uploaded through a presigned PUT
uploads/<user_id>/<draft_id>/<name> a job draft's input file over Telegram's 20 MB, posted by the user through
                                   a presigned POST (depu.jobs.uploads; expired by the bucket after 1 day)

The bucket's lifecycle rule (template.yaml) deletes everything under jobs/ after JOB_FILES_DAYS.
An upload link is write-once: its signature covers ``If-None-Match: *``, so S3 refuses any PUT to a key that
already holds an object, and it expires after UPLOAD_URL_SECONDS (S3 checks expiry when a request starts, so
a slow upload begun in time still finishes).
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import boto3
from botocore.config import Config

from depu.config import get_settings

UPLOAD_URL_SECONDS = 15 * 60
JOB_FILES_DAYS = 30  # template.yaml's expire-job-files rule; the summary's links say so
WRITE_ONCE_HEADERS = {"If-None-Match": "*"}
SCRIPT_URL_SECONDS = 3600
DOWNLOAD_URL_SECONDS = 24 * 3600
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@lru_cache(maxsize=1)
def _s3() -> Any:
    return boto3.client("s3", config=Config(signature_version="s3v4"))


def script_key(job_id: str) -> str:
    return f"jobs/{job_id}/script.py"


def input_key(job_id: str, name: str) -> str:
    """One of a job spec's input files (placed in the job's inputs/ by the agent)."""
    return f"jobs/{job_id}/inputs/{safe_name(name)}"


def log_key(job_id: str, seq: int) -> str:
    return f"jobs/{job_id}/logs/{seq:08d}.log"


def artifact_prefix(job_id: str) -> str:
    return f"jobs/{job_id}/artifacts/"


def safe_name(name: str) -> str:
    cleaned = _SAFE_NAME.sub("_", name).strip("._")[:100]
    return cleaned or "artifact"


def put(key: str, body: bytes, content_type: str = "application/octet-stream") -> str:
    """Store ``body`` at ``key``; its ETag (what the agent's download link is pinned to)."""
    answer = _s3().put_object(Bucket=get_settings().artifacts_bucket, Key=key, Body=body, ContentType=content_type)
    return str(answer["ETag"])


def get(key: str) -> bytes:
    return _s3().get_object(Bucket=get_settings().artifacts_bucket, Key=key)["Body"].read()


def exists(key: str) -> bool:
    try:
        _s3().head_object(Bucket=get_settings().artifacts_bucket, Key=key)
    except _s3().exceptions.ClientError:
        return False
    return True


def head(key: str) -> tuple[int, str] | None:
    """(size, ETag) of the object at ``key``, or None if there is none."""
    try:
        answer = _s3().head_object(Bucket=get_settings().artifacts_bucket, Key=key)
    except _s3().exceptions.ClientError:
        return None
    return int(answer["ContentLength"]), str(answer["ETag"])


def upload_url(key: str, size: int) -> str:
    """A presigned PUT that accepts exactly ``size`` bytes, once: Content-Length and ``If-None-Match: *`` are
    part of the signature, so the uploader must send both (WRITE_ONCE_HEADERS) and S3 answers 412 to any
    PUT on a key that already holds an object, the first upload included. It dies after UPLOAD_URL_SECONDS."""
    return _s3().generate_presigned_url(
        "put_object",
        Params={"Bucket": get_settings().artifacts_bucket, "Key": key, "ContentLength": size, "IfNoneMatch": "*"},
        ExpiresIn=UPLOAD_URL_SECONDS,
    )


def download_url(key: str, seconds: int = DOWNLOAD_URL_SECONDS, filename: str | None = None,
                 if_match: str | None = None) -> str:
    """A presigned GET of one key. With ``if_match`` the ETag is a signed header: the fetcher must send
    ``If-Match: <etag>``, and S3 answers 412 once the object is no longer that version."""
    params: dict[str, Any] = {"Bucket": get_settings().artifacts_bucket, "Key": key}
    if filename:
        params["ResponseContentDisposition"] = f'attachment; filename="{safe_name(filename)}"'
    if if_match:
        params["IfMatch"] = if_match
    return _s3().generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)


def post_form(key: str, max_bytes: int, seconds: int) -> tuple[str, dict[str, str]]:
    """A presigned POST (an HTML form's action and hidden fields) that writes exactly ``key`` with 1 to
    ``max_bytes`` bytes, for ``seconds``: S3 checks the signed policy (bucket, key, content-length-range,
    expiration) before it stores a byte, so the form's holder can neither pick another key nor send more."""
    answer = _s3().generate_presigned_post(
        Bucket=get_settings().artifacts_bucket, Key=key,
        Conditions=[["content-length-range", 1, int(max_bytes)]], ExpiresIn=seconds)
    return str(answer["url"]), {str(name): str(value) for name, value in answer["fields"].items()}


def post_origin() -> str:
    """The origin (scheme://host[:port]) that upload forms are posted to: the page's CSP must allow it."""
    from urllib.parse import urlsplit

    url, _fields = post_form("uploads/origin", 1, 60)
    split = urlsplit(url)
    return f"{split.scheme}://{split.netloc}"


def list_after(prefix: str, start_after: str | None, max_keys: int) -> tuple[list[str], bool]:
    """Keys under ``prefix`` after ``start_after`` in key order (at most ``max_keys``), and whether more follow."""
    params: dict[str, Any] = {"Bucket": get_settings().artifacts_bucket, "Prefix": prefix, "MaxKeys": max_keys}
    if start_after:
        params["StartAfter"] = start_after
    answer = _s3().list_objects_v2(**params)
    return [item["Key"] for item in answer.get("Contents", [])], bool(answer.get("IsTruncated"))
