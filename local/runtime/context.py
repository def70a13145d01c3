"""Lambda's context object: the attributes handlers and Powertools read, sized and timed from the template.

One class for every place that invokes a handler (the local runtime's workers and the tests that call a
``lambda_handler`` directly), so a handler sees the same context wherever it runs.
"""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

from local.template import ACCOUNT_ID, REGION


class LambdaContext:
    """What ``context`` is inside a handler: names, memory, request id and the time left."""

    def __init__(self, physical_name: str, memory_mb: int, timeout_s: float, request_id: str | None = None):
        self.function_name = physical_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{physical_name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{physical_name}"
        self.log_stream_name = f"{datetime.now(timezone.utc):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))
