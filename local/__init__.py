"""DePU's local stack: the cloud of template.yaml, run on this machine (moto, anvil, a local agent,
a Telegram Bot API stand-in and a terminal chat)."""
