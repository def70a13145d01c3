"""Telegram Stars top-up: pay-to-spendable latency, p50 and p95.

The whole path runs on this machine: the Telegram stand-in plays the user's Pay button (a pre_checkout_query
update, then the successful_payment message), the local runtime serves the template's webhook route to the
real TelegramWebhookFunction over moto. "Spendable": the available balance shows the credits (a hold of
them then succeeds; the hold itself is not timed).
The reference is the same loop's plain round trip for a command (`/help`: one update in, one reply out), the
cost of any update here, and Telegram's own 10 s deadline for the pre-checkout answer.
"""
from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _headline import headline  # noqa: E402

import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "layers" / "depu", ROOT / "tests"):
    sys.path.insert(0, str(extra))
for key, value in {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local", "AWS_DEFAULT_REGION": "us-east-1",
                   "AWS_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "ERROR"}.items():
    os.environ.setdefault(key, value)

import logging  # noqa: E402

logging.disable(logging.WARNING)

PAYMENTS = 20
TOKEN, SECRET = "1:bench-token", "bench-webhook-secret"
USER = 9300


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> int:
    from local.moto_server import MotoServer, free_port
    from local.provision import provision
    from local.runtime import LocalRuntime, RuntimeOptions
    from local.telegram_standin import TelegramStandIn
    from local.template import LocalTemplate

    moto = MotoServer().start()
    os.environ["AWS_ENDPOINT_URL"] = moto.endpoint
    standin = TelegramStandIn(TOKEN, port=free_port()).start()
    template = LocalTemplate(parameters={"TelegramApiBase": standin.api_base})
    os.environ.update(template.environment(moto.endpoint))
    provision(template, moto.endpoint, bot_token=TOKEN, webhook_secret=SECRET)
    runtime = LocalRuntime(template, moto.endpoint, RuntimeOptions(port=free_port()))
    for name in list(runtime.functions):
        if name != "TelegramWebhookFunction":
            del runtime.functions[name]
    runtime.start()
    try:
        from depu import credits
        from depu.telegram.client import BotApi

        BotApi(token=TOKEN, base_url=standin.api_base).set_webhook(f"{runtime.url}/telegram/webhook", SECRET)
        standin.send_user_message(USER, text="/start")
        round_trips, spendable, answers = [], [], []
        for index in range(PAYMENTS + 1):  # the first warms the process up (clients, service models) untimed
            began = time.perf_counter()
            standin.send_user_message(USER, text="/help")
            if index:
                round_trips.append(time.perf_counter() - began)

            standin.send_user_message(USER, text="/topup")
            menu = standin.messages(USER)[-1]
            standin.press_button(USER, menu.message_id, menu.button_data()[0])
            invoice = standin.messages(USER)[-1]
            before = credits.balance(USER).credits
            began = time.perf_counter()
            result = standin.pay(USER, invoice.message_id)
            while credits.balance(USER).credits == before and time.perf_counter() - began < 30:
                time.sleep(0.005)
            visible = time.perf_counter()
            credits.hold(USER, credits.balance(USER).credits - before, f"bench-{index}")  # it can be spent
            assert result["paid"], result
            if index:
                spendable.append(visible - began)
                answers.append(result["pre_checkout_seconds"])
    finally:
        runtime.stop()
        standin.stop()
        moto.stop()

    def row(name: str, values: list[float]) -> str:
        return f"| {name} | {len(values)} | {percentile(values, 0.5) * 1000:.0f} | {percentile(values, 0.95) * 1000:.0f} |"

    print(f"Stars top-up, {PAYMENTS} payments through the stand-in and the local webhook (ms)\n")
    print("| path | n | p50 | p95 |\n|---|---|---|---|")
    print(row("Pay pressed -> credits spendable (pre-checkout + successful_payment)", spendable))
    print(row("pre_checkout_query answered by the webhook", answers))
    print(row("reference: /help round trip in the same loop", round_trips))
    print("| reference: Telegram's deadline for the pre-checkout answer | - | 10000 | 10000 |")
    p50, p95 = percentile(spendable, 0.5) * 1000, percentile(spendable, 0.95) * 1000
    ref = percentile(round_trips, 0.5) * 1000
    headline("Stars pay-to-spendable latency", f"p50 {p50:.0f} ms, p95 {p95:.0f} ms", "/help round trip (same loop)",
             f"p50 {ref:.0f} ms", f"{p50 / ref:.1f}x one update (a payment is two updates)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
