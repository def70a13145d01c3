"""Make moto's S3 check a presigned GET's query-string signature (SigV4), as S3 does.

moto serves a presigned GET whatever its query says: an edited key, a dropped signed header or a link past
its expiry all read the object. DePU's claims about its links rest on S3's check (the agent's input link is
signed for one key and with ``If-Match: <etag>``; outputs links die after their expiry), so the local AWS
needs S3's documented check of a request authenticated by query parameters:

- ``X-Amz-Algorithm`` is ``AWS4-HMAC-SHA256``; ``X-Amz-Credential`` is ``<key id>/<yyyymmdd>/<region>/s3/
  aws4_request`` with a known key id and the date of ``X-Amz-Date``; ``X-Amz-Expires`` is 1..604800 s;
- past ``X-Amz-Date`` + ``X-Amz-Expires`` it is 403 AccessDenied ("Request has expired");
- the signature is recomputed from the request as received: the canonical request (method, the path URI-encoded
  once as S3 does, every query parameter but ``X-Amz-Signature`` encoded and sorted, each header named in
  ``X-Amz-SignedHeaders`` with its trimmed value, ``UNSIGNED-PAYLOAD``), the string to sign over its SHA-256
  and the credential scope, and the HMAC chain from ``AWS4`` + secret over date, region, ``s3``,
  ``aws4_request``; any difference (a path, a parameter or a signed header changed or dropped) is 403
  SignatureDoesNotMatch.

Only GET and HEAD requests that carry ``X-Amz-Signature`` are checked: requests signed in the Authorization
header (the SDK's own) and anonymous ones are moto's as before. Installed by ``local.moto_server`` before the
server starts; the secret is this process's own (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, the local
stack's fixed test credentials), read where moto runs, not by the domain.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping
from urllib.parse import quote, unquote, urlsplit

from local.s3_post_policy import Refused, _error_xml, _signing_key

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_EXPIRES = 7 * 24 * 3600
CHECKED_METHODS = ("GET", "HEAD")
_installed = False


def clock() -> datetime:
    """Now, as a link's expiry is compared with it (one place, so a test can move it)."""
    return datetime.now(timezone.utc)


def _query_pairs(raw_query: str) -> list[tuple[str, str]]:
    """The query's (name, value) pairs decoded once: ``+`` is a plus sign, as S3 reads SigV4 queries."""
    pairs = []
    for part in raw_query.split("&"):
        if part:
            name, _sep, value = part.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return pairs


def _encode(text: str, keep_slash: bool) -> str:
    """SigV4's URI encoding: every byte but A-Z a-z 0-9 - . _ ~ as %XY (upper hex); '/' kept in a path."""
    return quote(text, safe="/~" if keep_slash else "~")


def canonical_request(method: str, raw_path: str, raw_query: str, headers: Mapping[str, str],
                      signed_headers: list[str]) -> str:
    path = _encode(unquote(raw_path or "/"), keep_slash=True)  # S3: the path is encoded once, not twice
    pairs = sorted((_encode(name, False), _encode(value, False)) for name, value in _query_pairs(raw_query)
                   if name != "X-Amz-Signature")
    query = "&".join(f"{name}={value}" for name, value in pairs)
    lowered = {name.lower(): value for name, value in headers.items()}
    canonical_headers = "".join(f"{name}:{re.sub(r' +', ' ', str(lowered.get(name, '')).strip())}\n"
                                for name in signed_headers)
    payload = dict(_query_pairs(raw_query)).get("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
    return "\n".join([method.upper(), path, query, canonical_headers, ";".join(signed_headers), payload])


def check(method: str, raw_path: str, raw_query: str, headers: Mapping[str, str], secrets_by_key: dict[str, str],
          now: datetime | None = None) -> None:
    """Raise ``Refused`` where S3 would refuse this query-string-signed request."""
    params = dict(_query_pairs(raw_query))
    if params.get("X-Amz-Algorithm") != ALGORITHM:
        raise Refused(400, "AuthorizationQueryParametersError", "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"")
    credential = params.get("X-Amz-Credential", "").split("/")
    stamp = params.get("X-Amz-Date", "")
    try:
        signed_at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        expires = int(params.get("X-Amz-Expires", ""))
    except ValueError as error:
        raise Refused(400, "AuthorizationQueryParametersError", "X-Amz-Date or X-Amz-Expires is malformed") from error
    if len(credential) != 5 or credential[3:] != ["s3", "aws4_request"] or credential[1] != stamp[:8]:
        raise Refused(400, "AuthorizationQueryParametersError", "X-Amz-Credential is malformed")
    if not 0 < expires <= MAX_EXPIRES:
        raise Refused(400, "AuthorizationQueryParametersError", "X-Amz-Expires must be 1 to 604800 seconds")
    secret = secrets_by_key.get(credential[0])
    if secret is None:
        raise Refused(403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
    if (now or clock()) > signed_at + timedelta(seconds=expires):
        raise Refused(403, "AccessDenied", "Request has expired")
    signed_headers = params.get("X-Amz-SignedHeaders", "").split(";")
    if "host" not in signed_headers or signed_headers != sorted(signed_headers):
        raise Refused(400, "AuthorizationQueryParametersError", "X-Amz-SignedHeaders must name host, sorted")
    scope = "/".join(credential[1:])
    digest = hashlib.sha256(canonical_request(method, raw_path, raw_query, headers, signed_headers).encode()).hexdigest()
    to_sign = "\n".join([ALGORITHM, stamp, scope, digest])
    wanted = hmac.new(_signing_key(secret, credential[1], credential[2]), to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(wanted, params.get("X-Amz-Signature", "")):
        raise Refused(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the "
                                                    "signature you provided. Check your key and signing method.")


def _raw_target(request: Any, full_url: str) -> tuple[str, str]:
    """The path and query exactly as the client sent them (the server's raw request line where it has one)."""
    environ = getattr(request, "environ", None) or {}
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        path, _sep, query = str(raw).partition("?")
        if "://" in path:  # an absolute request-target
            path = urlsplit(path).path
        return path, query
    split = urlsplit(full_url)
    return split.path, split.query


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.s3.responses import S3Response

    original = S3Response.key_response

    def key_response(self: S3Response, request: Any, full_url: str, headers: Any) -> Any:
        path, query = _raw_target(request, full_url)
        if request.method in CHECKED_METHODS and "X-Amz-Signature=" in query:
            secrets_by_key = {os.environ.get("AWS_ACCESS_KEY_ID", ""): os.environ.get("AWS_SECRET_ACCESS_KEY", "")}
            try:
                check(request.method, path, query, dict(request.headers.items()), secrets_by_key)
            except Refused as refused:
                return refused.status, {"content-type": "application/xml"}, (
                    "" if request.method == "HEAD" else _error_xml(refused))
        return original(self, request, full_url, headers)

    S3Response.key_response = key_response
    _installed = True
