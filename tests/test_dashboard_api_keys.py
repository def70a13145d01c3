"""API keys from the Mini App (the dashboard's session): list without the keys, make one (shown once, usable
at once against /v1 within its scopes), revoke; another user's key id and a missing session change nothing."""
from __future__ import annotations

from depu.apikeys import keys
from depu.dashboard import initdata
from tests.conftest import TEST_BOT_TOKEN
from tests.dashboard_support import invoke, seed_profile, telegram_user
from tests.public_api_support import call

ALICE, BOB = 7101, 7202


def sign_in(user_id: int) -> str:
    seed_profile(user_id)
    response = invoke("POST", "/dashboard/session",
                      json_body={"init_data": initdata.build(telegram_user(user_id), TEST_BOT_TOKEN)})
    assert response["statusCode"] == 201, response["body"]
    return response["json"]["token"]


def test_make_list_use_and_revoke_a_key_from_the_dashboard(aws):
    session = sign_in(ALICE)
    assert invoke("GET", "/dashboard/api-keys", token=session)["json"] == {"keys": [], "max_keys": keys.MAX_KEYS_PER_USER}
    made = invoke("POST", "/dashboard/api-keys", token=session,
                  json_body={"name": "ci", "scopes": ["analytics", "read-only"], "days": 30})
    assert made["statusCode"] == 201, made["body"]
    key, info = made["json"]["key"], made["json"]["info"]
    assert key.startswith("dpk_") and info["scopes"] == ["analytics", "read-only"] and info["name"] == "ci"
    assert made["headers"]["Cache-Control"] == "no-store"
    assert call("GET", "/v1/analytics/chain", key=key)["statusCode"] == 200
    assert call("GET", "/v1/jobs", key=key)["statusCode"] == 403

    listed = invoke("GET", "/dashboard/api-keys", token=session)
    assert [k["key_id"] for k in listed["json"]["keys"]] == [info["key_id"]] and key not in listed["body"]
    assert listed["json"]["keys"][0]["last_used_at"] is not None

    # Bob's session cannot see or revoke Alice's key
    bob = sign_in(BOB)
    assert invoke("GET", "/dashboard/api-keys", token=bob)["json"]["keys"] == []
    refused = invoke("DELETE", f"/dashboard/api-keys/{info['key_id']}", token=bob)
    assert refused["statusCode"] == 400 and call("GET", "/v1/analytics/chain", key=key)["statusCode"] == 200

    revoked = invoke("DELETE", f"/dashboard/api-keys/{info['key_id']}", token=session)
    assert revoked["statusCode"] == 200 and revoked["json"]["key_id"] == info["key_id"]
    assert call("GET", "/v1/analytics/chain", key=key)["statusCode"] == 401


def test_bad_key_requests_and_no_session_are_refused(aws):
    session = sign_in(ALICE)
    for body in ({"scopes": ["admin"]}, {"scopes": []}, {"days": 0}, {"days": 400}, {"name": "x" * 41}):
        answer = invoke("POST", "/dashboard/api-keys", token=session, json_body=body)
        assert answer["statusCode"] == 400, (body, answer["body"])
    for method, path in (("GET", "/dashboard/api-keys"), ("POST", "/dashboard/api-keys"),
                         ("DELETE", "/dashboard/api-keys/k123")):
        answer = invoke(method, path, token="forged", json_body={} if method == "POST" else None)
        assert answer["statusCode"] == 401
    assert keys.list_keys(ALICE) == []
