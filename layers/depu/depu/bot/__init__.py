"""The bot's conversation layer: each feature module declares one ``Feature`` (commands, flow tables, /profile
sections; ``registry``), ``features.load`` lists them, ``dispatch`` runs them, ``flows`` is the table shape.

Direction: ``bot`` uses the domain and ``depu.telegram``; neither imports ``bot`` back, except that the jobs
domain asks ``bot.job_text`` (a leaf that imports only domain models) for the words of its notices.
"""
