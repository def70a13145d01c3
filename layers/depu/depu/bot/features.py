"""Feature modules whose handlers register in ``depu.bot.registry``. Each helper adds its module here."""
FEATURES: tuple[str, ...] = (
    "depu.bot.basics",
    "depu.bot.dashboard_link",
    "depu.bot.rental",
    "depu.bot.forks",
    "depu.bot.analytics",
    "depu.bot.money",
)
