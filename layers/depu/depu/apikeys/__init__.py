"""API keys: how a user's own programs (the ``depu`` CLI, CI jobs, scripts) reach DePU's public REST API.

A key is created from the chat (or the Mini App), shown once, and stored only as a hash; it carries scopes
(which areas it may touch, and whether it may change anything), an expiry and a last-used time
(``depu.apikeys.keys``). Each call is throttled per key by a token bucket kept on the key's own item
(``depu.apikeys.throttle``), so the check and the last-used time are one conditional write.
"""
