"""HTTP plumbing the API handlers share: bearer tokens, JSON answers, request bodies, validation errors.

No routes and no domain logic live here; routes and status codes belong to ``functions/*/app.py``.
"""
