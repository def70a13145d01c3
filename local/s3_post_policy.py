"""Make moto's S3 check a browser-based POST upload's signed policy, as S3 does.

moto stores whatever a POST form sends: it checks neither the policy's signature, nor its expiration, nor
its conditions. DePU's upload links for large input files (depu.jobs.uploads) are presigned POSTs whose whole
point is that policy (the key, the size range, the expiry), so the local AWS needs S3's documented check:

- the policy (base64 JSON) is signed with SigV4: HMAC chain from the secret of ``x-amz-credential``'s key,
  date, region and ``s3``, over the base64 text; a different signature is 403 SignatureDoesNotMatch;
- past its ``expiration`` it is 403 AccessDenied ("Policy expired");
- every condition holds: ``{"field": value}`` and ``["eq", "$field", value]`` exactly,
  ``["starts-with", "$field", prefix]``, ``["content-length-range", min, max]`` against the file's size
  (400 EntityTooSmall / EntityTooLarge), ``bucket`` against the bucket posted to;
- every form field but ``policy``, ``x-amz-signature``, ``file`` and ``x-ignore-*`` is covered by a
  condition (an extra field is 403);
- a form without a policy is an anonymous write to a private bucket: 403.

Installed by ``local.moto_server`` before the server starts. The secret is this process's own
(``AWS_SECRET_ACCESS_KEY``: the local stack signs with it), read where moto runs, not by the domain.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from datetime import datetime, timezone
from typing import Any
from xml.sax.saxutils import escape

_installed = False
UNCHECKED_FIELDS = {"policy", "x-amz-signature", "file"}


def clock() -> datetime:
    """Now, as the policy's expiration is compared with it (one place, so a test can move it)."""
    return datetime.now(timezone.utc)


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _signing_key(secret: str, date: str, region: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _policy(form: dict[str, str], secrets_by_key: dict[str, str]) -> dict[str, Any]:
    encoded = form.get("policy")
    if not encoded:
        raise Refused(403, "AccessDenied", "Access Denied")
    if form.get("x-amz-algorithm") != "AWS4-HMAC-SHA256":
        raise Refused(400, "InvalidRequest", "Only AWS4-HMAC-SHA256 is supported")
    credential = form.get("x-amz-credential", "").split("/")
    if len(credential) != 5 or credential[3:] != ["s3", "aws4_request"]:
        raise Refused(400, "InvalidArgument", "x-amz-credential is malformed")
    secret = secrets_by_key.get(credential[0])
    if secret is None:
        raise Refused(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
    wanted = hmac.new(_signing_key(secret, credential[1], credential[2]), encoded.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(wanted, form.get("x-amz-signature", "")):
        raise Refused(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the "
                                                    "signature you provided.")
    try:
        return json.loads(base64.b64decode(encoded, validate=True))
    except (ValueError, TypeError) as error:
        raise Refused(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.") from error


def check(form: dict[str, str], bucket: str, size: int, secrets_by_key: dict[str, str],
          now: datetime | None = None) -> None:
    """Raise ``Refused`` where S3 would refuse this POST upload; field names as S3 reads them (any case)."""
    form = {name.lower(): value for name, value in form.items()}
    policy = _policy(form, secrets_by_key)
    expiration = datetime.fromisoformat(str(policy.get("expiration", "")).replace("Z", "+00:00"))
    if (now or clock()) >= expiration:
        raise Refused(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
    values = {**form, "bucket": bucket}
    covered: set[str] = set()
    for condition in policy.get("conditions", []):
        if isinstance(condition, dict):
            for name, value in condition.items():
                _must(values.get(name.lower()) == str(value), condition)
                covered.add(name.lower())
        elif condition and condition[0] == "content-length-range":
            low, high = int(condition[1]), int(condition[2])
            if size < low:
                raise Refused(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size")
            if size > high:
                raise Refused(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size")
        elif condition and condition[0] in ("eq", "starts-with") and str(condition[1]).startswith("$"):
            name = str(condition[1])[1:].lower()
            value = values.get(name, "")
            _must(value == condition[2] if condition[0] == "eq" else value.startswith(condition[2]), condition)
            covered.add(name)
        else:
            raise Refused(400, "InvalidPolicyDocument", "Invalid Policy: Invalid Condition.")
    extra = sorted(name for name in form if name not in covered and name not in UNCHECKED_FIELDS
                   and not name.startswith("x-ignore-"))
    if extra:
        raise Refused(403, "AccessDenied", f"Invalid according to Policy: Extra input fields: {extra[0]}")


def _must(holds: bool, condition: Any) -> None:
    if not holds:
        raise Refused(403, "AccessDenied", f"Invalid according to Policy: Policy Condition failed: {json.dumps(condition)}")


def _error_xml(refused: Refused) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(refused.code)}</Code>'
            f"<Message>{escape(refused.message)}</Message></Error>")


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.s3.responses import S3Response

    original = S3Response._bucket_response_post

    def bucket_post(self: S3Response, request: Any, bucket_name: str) -> Any:
        self.path = self._get_path(request)
        if request.headers.get("Content-Length") and not self.is_delete_keys():
            body = self.raw_body if isinstance(self.raw_body, bytes) else str(self.raw_body or "").encode()
            secrets_by_key = {os.environ.get("AWS_ACCESS_KEY_ID", ""): os.environ.get("AWS_SECRET_ACCESS_KEY", "")}
            try:
                check(dict(self.form_data.items()), bucket_name, len(body), secrets_by_key)
            except Refused as refused:
                return refused.status, {"content-type": "application/xml"}, _error_xml(refused)
        return original(self, request, bucket_name)

    S3Response._bucket_response_post = bucket_post
    _installed = True
