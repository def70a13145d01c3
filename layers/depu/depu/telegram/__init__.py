"""Telegram plumbing: the Bot API client, update parsing, message text helpers and notice delivery.

Kept free of heavy imports: the webhook function imports this package on every cold start.
"""
