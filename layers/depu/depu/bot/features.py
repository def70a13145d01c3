"""Every feature of the bot, imported by name so go-to-definition leads from here to each one.

The imports are inside ``load`` so the webhook's cold start does not pay for what the features import
(web3 for forks, say) before the first update needs them (bench/cold_import.py). A new feature module
declares ``FEATURE = Feature(...)`` (``depu.bot.registry``, ``depu.bot.flows``) and gets one line here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from depu.bot.registry import Feature


def load() -> tuple[Feature, ...]:
    """Every feature's declaration, in the order /help and the registry see them. An import error
    propagates: a bot silently missing its commands is worse than an error."""
    from depu.bot import analytics, api_keys, basics, dashboard_link, forks, money, rental

    return (basics.FEATURE, dashboard_link.FEATURE, rental.FEATURE, forks.FEATURE, analytics.FEATURE, money.FEATURE,
            api_keys.FEATURE)
