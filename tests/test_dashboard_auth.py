"""The dashboard's sign-in: Telegram initData verification, sessions and one-time login codes."""
from __future__ import annotations

import json
import time
from urllib.parse import parse_qsl, urlencode

import boto3
import pytest

from depu.dashboard import initdata, sessions
from tests.conftest import TEST_BOT_TOKEN

NOW = 1_790_000_000
USER = {"id": 4242, "first_name": "Ada", "username": "ada", "language_code": "en"}


def signed(**overrides) -> str:
    return initdata.build(USER, TEST_BOT_TOKEN, auth_date=overrides.pop("auth_date", NOW - 10), **overrides)


def with_field(init_data: str, key: str, value: str | None) -> str:
    fields = dict(parse_qsl(init_data, keep_blank_values=True))
    if value is None:
        fields.pop(key, None)
    else:
        fields[key] = value
    return urlencode(fields)


def test_signature_matches_telegrams_published_algorithm():
    """Recompute Telegram's hash independently of initdata.sign: HMAC("WebAppData", token) as the key
    over the sorted key=value lines."""
    import hashlib
    import hmac

    fields = dict(parse_qsl(signed(), keep_blank_values=True))
    check = "\n".join(f"{key}={fields[key]}" for key in sorted(fields) if key != "hash")
    secret = hmac.new(b"WebAppData", TEST_BOT_TOKEN.encode(), hashlib.sha256).digest()
    assert fields["hash"] == hmac.new(secret, check.encode(), hashlib.sha256).hexdigest()


def test_valid_init_data_names_the_user():
    user = initdata.verify(signed(), TEST_BOT_TOKEN, now=NOW)
    assert (user.id, user.first_name, user.username, user.auth_date) == (4242, "Ada", "ada", NOW - 10)


def test_extra_fields_are_part_of_the_signature():
    data = signed(chat_type="private", signature="abc")
    assert initdata.verify(data, TEST_BOT_TOKEN, now=NOW).id == 4242
    with pytest.raises(initdata.InitDataError, match="bad signature"):
        initdata.verify(with_field(data, "chat_type", "group"), TEST_BOT_TOKEN, now=NOW)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda data: with_field(data, "user", json.dumps({**USER, "id": 4243})),  # someone else's id
        lambda data: with_field(data, "auth_date", str(NOW)),  # refreshed date
        lambda data: with_field(data, "hash", "0" * 64),  # wrong hash
        lambda data: with_field(data, "hash", dict(parse_qsl(data))["hash"][:-1] + "0"),  # one digit off
        lambda data: with_field(data, "query_id", None),  # a signed field dropped
    ],
    ids=["user-id", "auth-date", "zero-hash", "one-digit", "dropped-field"],
)
def test_tampered_init_data_is_refused(tamper):
    with pytest.raises(initdata.InitDataError, match="bad signature"):
        initdata.verify(tamper(signed()), TEST_BOT_TOKEN, now=NOW)


def test_another_bots_token_is_refused():
    with pytest.raises(initdata.InitDataError, match="bad signature"):
        initdata.verify(signed(), "999999:another-bot", now=NOW)


def test_missing_hash_is_refused():
    with pytest.raises(initdata.InitDataError, match="not signed"):
        initdata.verify(with_field(signed(), "hash", None), TEST_BOT_TOKEN, now=NOW)


def test_expired_init_data_is_refused_even_with_a_good_signature():
    data = signed(auth_date=NOW - initdata.DEFAULT_MAX_AGE - 1)
    with pytest.raises(initdata.InitDataError, match="expired"):
        initdata.verify(data, TEST_BOT_TOKEN, now=NOW)
    assert initdata.verify(signed(auth_date=NOW - initdata.DEFAULT_MAX_AGE + 5), TEST_BOT_TOKEN, now=NOW).id == 4242


def test_future_auth_date_is_refused():
    with pytest.raises(initdata.InitDataError, match="future"):
        initdata.verify(signed(auth_date=NOW + 3600), TEST_BOT_TOKEN, now=NOW)


@pytest.mark.parametrize("bad", ["", "   ", "hash=abc&hash=def", "x" * 9000])
def test_malformed_init_data_is_refused(bad):
    with pytest.raises(initdata.InitDataError):
        initdata.verify(bad, TEST_BOT_TOKEN, now=NOW)


def test_signed_data_without_a_user_is_refused():
    fields = {"auth_date": str(NOW), "query_id": "q"}
    fields["hash"] = initdata.sign(fields, TEST_BOT_TOKEN)
    with pytest.raises(initdata.InitDataError, match="no user"):
        initdata.verify(urlencode(fields), TEST_BOT_TOKEN, now=NOW)


# ------------------------------------------------------------------------------------------- sessions
def _stored_items(aws) -> list[dict]:
    from depu.config import get_settings

    table = boto3.resource("dynamodb").Table(get_settings().tokens_table)
    return table.scan()["Items"]


def test_session_is_stored_only_as_a_hash_and_expires(aws):
    token, session = sessions.open_session(7, now=NOW)
    assert session == sessions.Session(7, NOW + sessions.SESSION_TTL)
    items = _stored_items(aws)
    assert [item["token_hash"] for item in items] == [sessions.hash_token(token)]
    assert token not in json.dumps(items, default=str)
    assert items[0]["kind"] == "dashboard_session"

    assert sessions.session_for(token, now=NOW + sessions.SESSION_TTL - 1).user_id == 7
    with pytest.raises(sessions.SessionError, match="expired"):
        sessions.session_for(token, now=NOW + sessions.SESSION_TTL)


def test_unknown_and_closed_sessions_are_refused(aws):
    with pytest.raises(sessions.SessionError):
        sessions.session_for("not-a-session")
    with pytest.raises(sessions.SessionError):
        sessions.session_for(None)
    token, _ = sessions.open_session(7)
    sessions.close_session(token)
    with pytest.raises(sessions.SessionError):
        sessions.session_for(token)
    sessions.close_session(token)  # closing twice is harmless


def test_login_code_is_not_a_session(aws):
    code = sessions.issue_login_code(7)
    with pytest.raises(sessions.SessionError):
        sessions.session_for(code)


def test_login_code_works_once(aws):
    code = sessions.issue_login_code(7)
    token, session = sessions.redeem_login_code(code)
    assert session.user_id == 7 and sessions.session_for(token).user_id == 7
    with pytest.raises(sessions.SessionError, match="already used or has expired"):
        sessions.redeem_login_code(code)


def test_login_code_expires(aws):
    code = sessions.issue_login_code(7, now=NOW)
    with pytest.raises(sessions.SessionError, match="already used or has expired"):
        sessions.redeem_login_code(code, now=NOW + sessions.LOGIN_TTL)
    assert sessions.redeem_login_code(sessions.issue_login_code(7, now=NOW), now=NOW + 60)[1].user_id == 7


def test_a_session_token_cannot_be_redeemed_as_a_login_code(aws):
    token, _ = sessions.open_session(7)
    with pytest.raises(sessions.SessionError):
        sessions.redeem_login_code(token)
    with pytest.raises(sessions.SessionError):
        sessions.redeem_login_code("unknown-code")


def test_real_clock_session_roundtrip(aws):
    token, session = sessions.open_session(11)
    assert session.expires_at > time.time()
    assert sessions.session_for(token).user_id == 11
