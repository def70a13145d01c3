"""`make chat` pays an invoice when its Pay button is pressed; a declined pre-checkout pays nothing."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import payments_support
from depu import credits

stars = payments_support.stars  # the fixture
ROOT = Path(__file__).resolve().parent.parent
USER = 84001


def _chat(standin, lines: str, tmp_path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "local", "chat", "--standin", standin.url, "--user-id", str(USER),
         "--downloads", str(tmp_path), "--quiet-seconds", "0.7", "--reply-timeout", "15"],
        input=lines, capture_output=True, text=True, cwd=ROOT, timeout=90)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_pay_button_in_the_terminal_chat_pays_and_credits(stars, tmp_path) -> None:
    out = _chat(stars, "/start\n/topup\n1\n1\n", tmp_path)
    assert "[invoice: 50 XTR]" in out and "Pay ⭐50" in out
    assert "(paid with Telegram Stars)" in out and "Payment received" in out
    assert credits.balance(USER).credits == 1000 + 500


def test_declined_pre_checkout_in_the_terminal_chat_pays_nothing(stars, tmp_path) -> None:
    _chat(stars, "/start\n/topup\n1\n", tmp_path)
    [invoice] = list(stars.stars.invoices.values())
    invoice.total_amount = 2  # what the bot never offered
    out = _chat(stars, "1\n", tmp_path)  # a new session shows the invoice again; 1 presses Pay
    assert "(payment declined: The amount does not match" in out
    assert stars.stars.transactions == [] and credits.balance(USER).credits == 1000
