"""Turning indexed transfers into answers: token metadata, flows and aggregates, charts, exports, watches.

Heavy libraries (matplotlib, pyarrow) are imported inside the functions that need them, so the webhook's
cold start never pays for them."""
