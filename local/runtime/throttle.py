"""API Gateway's stage throttling, from the template's ``MethodSettings``."""
from __future__ import annotations

import threading
import time

from local.template import LocalTemplate


class StageThrottle:
    """API Gateway's stage throttling (a token bucket: ``burst`` at once, refilled at ``rate`` per second).

    Over the limit API Gateway answers 429 without invoking the function; the template's ``MethodSettings``
    for ``/*`` say how much, so the local API refuses floods where the deployed one would."""

    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = time.monotonic()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


def stage_throttles(template: LocalTemplate) -> dict[str, StageThrottle]:
    """Each function's stage throttle, from its API's ``MethodSettings`` (ResourcePath ``/*``)."""
    apis: dict[str, StageThrottle] = {}
    for api_id, resource in template.of_type("AWS::Serverless::Api").items():
        for setting in template.resolve(resource.get("Properties", {})).get("MethodSettings", []):
            if setting.get("ResourcePath") == "/*" and "ThrottlingRateLimit" in setting:
                apis[api_id] = StageThrottle(float(setting["ThrottlingRateLimit"]),
                                             int(setting.get("ThrottlingBurstLimit", setting["ThrottlingRateLimit"])))
    throttles = {}
    for function_id, spec in template.functions().items():
        for route in spec.routes:
            if route.api in apis:
                throttles[function_id] = apis[route.api]
    return throttles
