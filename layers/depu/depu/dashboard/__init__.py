"""The live dashboard (a Telegram Mini App that also opens in any browser).

``initdata`` checks Telegram's signed launch data, ``sessions`` turns it (or a one-time login code from the
bot) into a short-lived session, ``overview`` assembles the one user's data the page polls, and ``site``
serves the static single-page app itself. Nothing here sees an AWS event shape.
"""
