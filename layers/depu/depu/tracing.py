"""X-Ray tracing that records where time goes, never what a request carried.

Every function traces (``Tracing: Active`` in template.yaml), and the defaults would leak:

- Powertools' ``capture_lambda_handler``/``capture_method`` put the handler's return value into the trace
  as metadata unless told not to. DePU's handlers return agent tokens, dashboard session tokens, presigned
  links and fork answers, so every decorator here says ``capture_response=False`` and ``capture_error=False``
  (the template's Globals also set ``POWERTOOLS_TRACER_CAPTURE_RESPONSE``/``_ERROR`` to false, for any
  decorator that forgets).
- Powertools patches every library X-Ray knows by default. The HTTP-library patches (requests among them)
  record each outgoing URL, and DePU's outgoing URLs carry secrets: the Telegram Bot API takes the bot token
  in the path, a chain RPC URL usually carries the node provider's key. Only botocore is patched: its X-Ray
  hook records a fixed list of parameters (table names, queue URLs, S3 keys), never items or message bodies.

What X-Ray still records on its own: the type and message of an exception that escapes a traced function.
DePU's errors carry no secrets (the Telegram client drops request exceptions' text, which holds the URL).
"""
from __future__ import annotations

from aws_lambda_powertools import Tracer

PATCHED_MODULES = ("botocore",)


def tracer() -> Tracer:
    """The function's tracer, patching only ``PATCHED_MODULES``."""
    return Tracer(patch_modules=PATCHED_MODULES)
