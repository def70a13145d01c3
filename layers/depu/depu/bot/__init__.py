"""The bot's conversation layer: commands and callbacks, each a small function registered in one table."""
