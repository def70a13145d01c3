"""Buying credits with Telegram Stars, end to end: the stand-in plays Telegram (invoice, Pay, pre-checkout,
successful_payment, refunds, the Star transaction list) and posts to the real webhook handler over HTTP."""
from __future__ import annotations

import time

import pytest

from depu import credits
from depu.payments import reconcile as reconciliation
from depu.payments.models import get_order
from depu.telegram.client import bot_api
import payments_support
from payments_support import invoice_for, pay_over_control_api, start
from telegram_harness import FakeLambdaContext, load_function

stars = payments_support.stars  # the fixture
USER, OTHER, REFERRER = 81001, 81002, 81003
STARTER = 1000


def _topups(user_id: int) -> list[credits.LedgerEntry]:
    return [entry for entry in credits.history(user_id, 100) if entry.kind == "topup"]


def test_invoice_is_xtr_and_shows_in_control_api_updates(stars) -> None:
    start(stars, USER)
    invoice = invoice_for(stars, USER, 100)
    assert invoice.invoice == {"title": "1,000 DePU credits", "description": invoice.invoice["description"],
                               "currency": "XTR", "total_amount": 100}
    import requests

    events = requests.get(f"{stars.url}/_standin/updates", params={"chat": USER}, timeout=10).json()["events"]
    shown = [e["message"]["invoice"] for e in events if e["kind"] == "message" and e["message"].get("invoice")]
    assert shown and shown[-1]["currency"] == "XTR" and shown[-1]["total_amount"] == 100
    order = get_order(stars.stars.invoices[(USER, invoice.message_id)].payload)
    assert order.status == "open" and order.user_id == USER and order.stars == 100


def test_paid_invoice_is_credited_once_also_when_redelivered(stars) -> None:
    start(stars, USER)
    invoice = invoice_for(stars, USER, 100)
    result = pay_over_control_api(stars, USER, invoice.message_id)
    assert result["pre_checkout"]["ok"] is True and result["paid"] is True
    assert credits.balance(USER).credits == STARTER + 1000
    assert "Payment received" in stars.messages(USER)[-1].text

    charge_id = result["charge_id"]
    assert stars.redeliver_payment(charge_id) == 200  # the same update again (Telegram's retry)
    assert stars.redeliver_payment(charge_id, same_update_id=False) == 200  # the charge replayed in a new update
    assert credits.balance(USER).credits == STARTER + 1000
    [entry] = _topups(USER)
    assert entry.charge_id == charge_id and charge_id in entry.entry_id and charge_id in entry.reason
    assert get_order(stars.stars.invoices[(USER, invoice.message_id)].payload).status == "paid"


def test_pre_checkout_is_answered_by_the_webhook_within_ten_seconds(stars) -> None:
    start(stars, USER)
    invoice = invoice_for(stars, USER, 50)
    began = time.monotonic()
    result = stars.pay(USER, invoice.message_id)
    assert result["pre_checkout"]["ok"] is True
    assert time.monotonic() - began < 10


def test_attack_wrong_amount_is_declined_and_nothing_is_paid(stars) -> None:
    start(stars, USER)
    invoice = invoice_for(stars, USER, 500)
    stars.stars.invoices[(USER, invoice.message_id)].total_amount = 1  # a tampered client: 1 Star for 5,000 credits
    result = stars.pay(USER, invoice.message_id)
    assert result["pre_checkout"] == {"ok": False, "error_message": result["pre_checkout"]["error_message"]}
    assert "amount" in result["pre_checkout"]["error_message"]
    assert result["paid"] is False and stars.stars.transactions == []
    assert credits.balance(USER).credits == STARTER and _topups(USER) == []


def test_attack_someone_elses_order_is_declined(stars) -> None:
    start(stars, USER)
    start(stars, OTHER)
    invoice = invoice_for(stars, USER, 100)
    result = stars.pay(USER, invoice.message_id, user=OTHER)  # OTHER pays with USER's order id as payload
    assert result["pre_checkout"]["ok"] is False and result["paid"] is False
    assert credits.balance(OTHER).credits == STARTER and credits.balance(USER).credits == STARTER


def test_paid_order_cannot_be_paid_again_and_expired_orders_are_declined(stars, monkeypatch) -> None:
    start(stars, USER)
    invoice = invoice_for(stars, USER, 50)
    assert stars.pay(USER, invoice.message_id)["paid"] is True
    again = stars.pay(USER, invoice.message_id)
    assert again["pre_checkout"]["ok"] is False and "already paid" in again["pre_checkout"]["error_message"]

    late = invoice_for(stars, USER, 50)
    order = get_order(stars.stars.invoices[(USER, late.message_id)].payload)
    order.update(actions=[type(order).expires_at.set(int(time.time()) - 1)])
    declined = stars.pay(USER, late.message_id)
    assert declined["paid"] is False and "expired" in declined["pre_checkout"]["error_message"]
    assert len(_topups(USER)) == 1 and credits.balance(USER).credits == STARTER + 500


def _refund_via_chat(stars, user_id: int) -> str:
    start(stars, user_id, "/refund")
    menu = stars.messages(user_id)[-1]
    [data] = menu.button_data()
    assert stars.press_button(user_id, menu.message_id, data).status == 200
    return stars.messages(user_id)[-1].text


def test_refund_of_unused_topup_debits_first_and_returns_the_stars(stars) -> None:
    start(stars, USER)
    invoice = invoice_for(stars, USER, 100)
    charge_id = stars.pay(USER, invoice.message_id)["charge_id"]
    assert "Refunded" in _refund_via_chat(stars, USER)
    assert credits.balance(USER).credits == STARTER
    assert [t.incoming for t in stars.stars.transactions if t.id == charge_id] == [True, False]
    kinds = sorted(entry.kind for entry in credits.history(USER, 100))
    assert kinds.count("refund") == 1
    report = reconciliation.reconcile(bot_api())
    assert report.mismatches == [] and report.refunds == 1
    start(stars, USER, "/refund")
    assert "No top-up" in stars.messages(USER)[-1].text


def test_failed_refund_call_recredits(stars) -> None:
    start(stars, USER)
    invoice = invoice_for(stars, USER, 50)
    stars.pay(USER, invoice.message_id)
    stars.stars.refund_failures = 1
    assert "refused" in _refund_via_chat(stars, USER)
    assert credits.balance(USER).credits == STARTER + 500
    kinds = [entry.kind for entry in credits.history(USER, 100)]
    assert kinds.count("refund") == 1 and kinds.count("refund_reversal") == 1
    assert reconciliation.reconcile(bot_api()).mismatches == []
    assert "Refunded" in _refund_via_chat(stars, USER)  # a second attempt works and debits once more
    assert credits.balance(USER).credits == STARTER


def test_spent_topup_cannot_be_refunded(stars) -> None:
    start(stars, USER)
    invoice = invoice_for(stars, USER, 50)
    stars.pay(USER, invoice.message_id)
    credits.hold(USER, STARTER + 100, "job-spends-it")
    assert "already spent" in _refund_via_chat(stars, USER)
    assert [t.incoming for t in stars.stars.transactions] == [True]
    assert credits.balance(USER).credits == 400


def test_reconciliation_raises_the_alarm_metric_on_a_mismatch(stars, capsys) -> None:
    from local.telegram_standin.stars import StarTransaction

    start(stars, USER)
    stars.pay(USER, invoice_for(stars, USER, 50).message_id)
    reconciler = load_function("stars_reconciler")
    assert reconciler.lambda_handler({}, FakeLambdaContext())["mismatches"] == []
    # Stars Telegram took whose successful_payment never reached the ledger
    stars.stars.transactions.append(StarTransaction("stxLOST", 77, int(time.time()), USER, incoming=True))
    capsys.readouterr()
    report = reconciler.lambda_handler({}, FakeLambdaContext())
    assert report["mismatches"] == ["payment stxLOST of 77 Stars has no charge in the ledger"]
    assert '"StarsLedgerMismatches":[1' in capsys.readouterr().out.replace(" ", "")


def test_referrer_gets_a_share_of_the_first_topup_once(stars) -> None:
    start(stars, REFERRER)
    start(stars, USER, f"/start ref_{REFERRER}")
    for _ in range(2):
        stars.pay(USER, invoice_for(stars, USER, 100).message_id)
    assert credits.balance(USER).credits == STARTER + 2000
    assert credits.balance(REFERRER).credits == STARTER + 100  # 10% of 1,000 credits, the first top-up only
    [reward] = [e for e in credits.history(REFERRER, 100) if e.kind == "referral"]
    assert reward.user_id == USER


@pytest.mark.parametrize("update", [
    {"update_id": 5, "pre_checkout_query": {"id": 3, "from": {"id": "x"}}},
    {"update_id": 6, "message": {"message_id": 1, "from": {"id": USER}, "chat": {"id": USER, "type": "private"},
                                 "successful_payment": {"currency": "XTR", "total_amount": -5}}},
])
def test_malformed_payment_updates_are_accepted_and_ignored(stars, update) -> None:
    webhook = load_function("telegram_webhook")
    assert webhook.handle_update(update) == "ignored"


def test_webhook_without_pre_checkout_in_allowed_updates_gets_no_query_and_nothing_is_paid(stars) -> None:
    from conftest import TEST_BOT_TOKEN, TEST_WEBHOOK_SECRET
    from depu.telegram.client import BotApi

    start(stars, USER)
    invoice = invoice_for(stars, USER, 50)
    BotApi(token=TEST_BOT_TOKEN, base_url=stars.api_base).set_webhook(
        stars.webhook_url, TEST_WEBHOOK_SECRET, ["message", "callback_query"])  # as before payments existed
    result = stars.pay(USER, invoice.message_id)
    assert result["pre_checkout"].get("timed_out") is True and result["paid"] is False
    assert credits.balance(USER).credits == STARTER


def test_mini_app_top_up_button_sends_the_invoice_to_the_chat(stars) -> None:
    from dashboard_support import invoke
    from depu.dashboard import sessions

    start(stars, USER)
    token, _ = sessions.open_session(USER)
    assert invoke("POST", "/dashboard/topup", json_body={"stars": 50})["statusCode"] == 401  # no session
    assert invoke("POST", "/dashboard/topup", token=token, json_body={"stars": 7})["statusCode"] == 400  # no such pack
    answer = invoke("POST", "/dashboard/topup", token=token, json_body={"stars": 50})
    assert answer["statusCode"] == 201 and answer["json"] == {"sent": True, "stars": 50, "credits": 500}
    invoice = stars.messages(USER)[-1]
    assert invoice.invoice["total_amount"] == 50
    assert stars.pay(USER, invoice.message_id)["paid"] is True
    assert credits.balance(USER).credits == STARTER + 500


def test_refund_whose_answer_was_lost_is_finished_by_the_retry(stars) -> None:
    start(stars, USER)
    charge_id = stars.pay(USER, invoice_for(stars, USER, 50).message_id)["charge_id"]
    stars.stars.refund_lost_answers = 1  # Telegram refunds, the answer never arrives; the retry is "already refunded"
    assert "Refunded" in _refund_via_chat(stars, USER)
    assert credits.balance(USER).credits == STARTER
    assert [t.incoming for t in stars.stars.transactions if t.id == charge_id] == [True, False]
    assert reconciliation.reconcile(bot_api()).mismatches == []


def test_refund_with_unknown_outcome_is_settled_by_reconciliation(stars) -> None:
    from datetime import timedelta

    from depu.payments.models import Charge, get_charge
    from depu.profiles import utcnow

    start(stars, USER)
    charge_id = stars.pay(USER, invoice_for(stars, USER, 50).message_id)["charge_id"]
    stars.stars.refund_outages = 10  # Telegram unreachable: did it refund? unknown
    assert "being processed" in _refund_via_chat(stars, USER)
    assert credits.balance(USER).credits == STARTER and get_charge(charge_id).status == "refunding"
    assert reconciliation.reconcile(bot_api()).settled == []  # too early to decide
    get_charge(charge_id).update(actions=[Charge.refund_started_at.set(utcnow() - timedelta(minutes=11))])
    report = reconciliation.reconcile(bot_api())
    assert report.settled == [f"{charge_id}: refund never happened, credits returned"] and report.mismatches == []
    assert credits.balance(USER).credits == STARTER + 500 and get_charge(charge_id).status == "paid"


def test_profile_has_a_top_up_button_that_offers_the_packs(stars) -> None:
    start(stars, USER)
    start(stars, USER, "/profile")
    profile = stars.messages(USER)[-1]
    [data] = [d for d in profile.button_data() if d.startswith("money:")]
    assert stars.press_button(USER, profile.message_id, data).status == 200
    menu = stars.messages(USER)[-1]
    assert "Pick a pack" in menu.text and len(menu.button_data()) == 3
    assert stars.press_button(USER, menu.message_id, menu.button_data()[0]).status == 200
    assert stars.messages(USER)[-1].invoice["total_amount"] == 50
