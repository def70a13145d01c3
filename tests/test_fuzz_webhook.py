"""Fuzzing the whole Telegram webhook handler (API Gateway event in, proxy response out) with the real
feature set against moto: arbitrary bodies, headers, base64 flags and update shapes. The only answers are
200, 400, 401 and 413, always JSON, never a 5xx or an exception; without the secret nothing is stored.
(test_telegram_updates.py fuzzes the parser alone; this goes through the handler, idempotency and dispatch.)
"""
from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TEST_WEBHOOK_SECRET
from proof_support import diff, invoke, snapshot, webhook_event, webhook  # noqa: F401 - fixtures

ALLOWED = {200, 400, 401, 413}
COMMANDS = ["/start", "/help", "/profile", "/jobs", "/cancel", "/rent_gpu", "/provider", "/shadow_fork", "/analytics",
            "/watch", "/unwatch", "/export", "/dashboard", "/webapp", "/nothing"]
# every flow's prefix, bare and with this release's version (so the data reaches the flow tables' entries)
CALLBACK_PREFIXES = ["rg", "rj", "pv", "sf", "an", "menu", "pf", "x", "", "rg:1", "rg:1:c", "rj:1:c", "pv:1:rv", "sf:1:i",
                     "sf:1:auto", "an:1:t", "menu:1"]

scalars = st.none() | st.booleans() | st.integers(-2**63, 2**64) | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                           max_leaves=10)
ids = st.integers(-2**40, 2**40) | st.just(0) | st.integers(1, 10**6)
user = st.fixed_dictionaries({"id": ids, "is_bot": st.booleans(), "first_name": st.text(max_size=20)},
                             optional={"username": st.text(max_size=20), "language_code": st.text(max_size=5)})
chat = st.fixed_dictionaries({"id": ids, "type": st.sampled_from(["private", "group", "supergroup", "channel", "x"])})
text = st.one_of(st.text(max_size=60),
                 st.builds(lambda c, a: f"{c} {a}", st.sampled_from(COMMANDS), st.text(max_size=40)),
                 st.builds(lambda c: f"{c}@DePUDevBot", st.sampled_from(COMMANDS)))
message = st.fixed_dictionaries(
    {"message_id": ids, "date": st.integers(0, 2**32), "chat": chat | json_values},
    optional={"from": user | json_values, "text": text | json_values, "caption": st.text(max_size=20),
              "document": st.fixed_dictionaries({"file_id": st.text(max_size=10)},
                                                optional={"file_name": st.text(max_size=20),
                                                          "file_size": st.integers(-1, 2**40)}) | json_values,
              "entities": json_values})
callback = st.fixed_dictionaries(
    {"id": st.text(max_size=10), "from": user | json_values},
    optional={"data": st.builds(lambda p, rest: f"{p}:{rest}", st.sampled_from(CALLBACK_PREFIXES), st.text(max_size=70))
              | json_values, "message": message | json_values})
update_ids = st.integers(1, 2**31)
updates = st.one_of(
    st.builds(lambda i, m: {"update_id": i, "message": m}, update_ids, message),
    st.builds(lambda i, m: {"update_id": i, "edited_message": m}, update_ids, message),
    st.builds(lambda i, q: {"update_id": i, "callback_query": q}, update_ids, callback),
    st.dictionaries(st.text(max_size=12), json_values, max_size=4).map(lambda d: {**d, "update_id": d.get("update_id", 1)}),
    json_values,
)


def call(webhook, body, secret, extra_headers=None, base64_flag=False):
    event = webhook_event(body, secret=secret, headers=extra_headers)
    event["isBase64Encoded"] = base64_flag
    status, answer = invoke(webhook, event)
    assert status in ALLOWED, (status, answer, body if body is None else body[:300])
    assert isinstance(answer, dict) and isinstance(answer.get("message"), str), answer
    return status


SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@SETTINGS
@given(update=updates)
def test_any_update_shape_with_the_secret_is_answered_without_a_server_error(webhook, caplog, update):
    caplog.clear()
    status = call(webhook, json.dumps(update), TEST_WEBHOOK_SECRET)
    crashed = [record for record in caplog.records if record.getMessage() == "handler failed"]
    assert not crashed, (update, crashed[0].exc_text if crashed else None)  # a feature raised on this input
    valid_envelope = isinstance(update, dict) and type(update.get("update_id")) is int
    assert (status == 200) == valid_envelope, (status, update)


@SETTINGS
@given(body=st.binary(max_size=300) | st.text(max_size=300).map(str.encode), as_base64=st.booleans(),
       headers=st.dictionaries(st.sampled_from(["Content-Type", "X-Telegram-Bot-Api-Secret-Token", "content-length",
                                                "X-Forwarded-For", "Authorization", "x-telegram-bot-api-secret-token"]),
                               st.text(max_size=40), max_size=3),
       secret=st.sampled_from([TEST_WEBHOOK_SECRET, None, "wrong"]))
def test_arbitrary_bytes_and_headers_only_get_allowed_statuses(webhook, body, as_base64, headers, secret):
    if as_base64:
        raw = base64.b64encode(body).decode()
    else:
        raw = body.decode("utf-8", "surrogateescape")
    before = snapshot() if secret != TEST_WEBHOOK_SECRET else None
    status = call(webhook, raw, secret, headers, as_base64)
    if before is not None:
        authorised = any(k.lower() == "x-telegram-bot-api-secret-token" and v == TEST_WEBHOOK_SECRET
                         for k, v in headers.items())
        if not authorised:
            assert status == 401 and diff(before, snapshot()) == {}
