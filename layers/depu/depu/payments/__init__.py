"""Money in: credits bought with Telegram Stars (XTR).

An order is opened per invoice; Telegram asks us to confirm it (``pre_checkout_query``, answered by the webhook
itself within 10 s); credits are granted only when ``successful_payment`` arrives, once per
``telegram_payment_charge_id``. Unused top-ups can be refunded within a window, and a schedule reconciles
Telegram's own list of Star transactions with what the ledger says.
"""
