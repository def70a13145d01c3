"""The APIs' contracts: one Pydantic model per request and answer body, and nothing else.

The handlers (``functions/*/app.py``) take these as route parameters and return them, Powertools' Event
Handler validates against them (``enable_validation=True``), the domain receives the parsed values, and
``scripts/openapi.py`` writes the published documents (``docs/*.openapi.json``) from them. One copy: a rule
about a body's shape is written here or nowhere.
"""
