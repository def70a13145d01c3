"""DePU provider agent: pulls GPU jobs from the DePU API, runs them pinned to one GPU each, reports back."""
from __future__ import annotations

__version__ = "0.1.0"
