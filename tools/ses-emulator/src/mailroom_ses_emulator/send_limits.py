"""Send quota controls (issue 23): what a sender's send-rate governor is tested against.

* ``GetAccount``'s ``SendQuota`` (``MaxSendRate``, ``Max24HourSend``) starts from the config and
  can be changed while running (``PUT /_emulator/send-quota``), as AWS raises a quota.
* Throttling on demand: ``POST /_emulator/throttle`` makes the next ``count`` ``SendEmail`` calls
  fail with ``TooManyRequestsException`` (429) or ``Throttling`` (400), as SES answers a sender
  going too fast, whatever the configured rate.
* Every accepted send's timestamp is kept; ``GET /_emulator/send-times`` returns them with the
  largest number of sends in any one-second window (what "never more than MaxSendRate per
  second" is checked on).

Kept apart from the SES API code: the emulator's send path only calls ``before_send``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import Any

from .config import EmulatorConfig
from .errors import SesError, bad_request

THROTTLE_CODES = {"TooManyRequestsException": 429, "Throttling": 400}


def max_in_window(timestamps: Iterable[float], window: float = 1.0) -> int:
    """The largest number of timestamps inside any half-open window [t, t + window)."""
    times = sorted(timestamps)
    best = 0
    start = 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        best = max(best, end - start + 1)
    return best


class SendLimits:
    def __init__(self, config: EmulatorConfig) -> None:
        self.max_send_rate = float(config.max_send_rate)
        self.max_24_hour_send = float(config.max_24_hour_send)
        self._throttles: deque[str] = deque()
        self._lock = threading.Lock()
        self.throttled = 0

    def quota(self) -> dict[str, float]:
        return {"MaxSendRate": self.max_send_rate, "Max24HourSend": self.max_24_hour_send}

    def set_quota(self, data: dict[str, Any]) -> dict[str, float]:
        values: dict[str, float] = {}
        for key in ("MaxSendRate", "Max24HourSend"):
            if key in data:
                value = data[key]
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise bad_request(f"{key} must be a number >= 0.")
                values[key] = float(value)
        if not values:
            raise bad_request("Give MaxSendRate and/or Max24HourSend.")
        self.max_send_rate = values.get("MaxSendRate", self.max_send_rate)
        self.max_24_hour_send = values.get("Max24HourSend", self.max_24_hour_send)
        return self.quota()

    def inject_throttling(self, data: dict[str, Any]) -> dict[str, Any]:
        count = data.get("count", 1)
        code = data.get("code", "TooManyRequestsException")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= 100_000:
            raise bad_request("count must be an integer between 0 and 100000.")
        if code not in THROTTLE_CODES:
            raise bad_request(f"code must be one of {sorted(THROTTLE_CODES)}.")
        with self._lock:
            self._throttles.extend([code] * count)
            return {"pending": len(self._throttles)}

    def before_send(self) -> None:
        """Called by SendEmail once the request is valid: an injected throttle refuses it."""
        with self._lock:
            if not self._throttles:
                return
            code = self._throttles.popleft()
            self.throttled += 1
        raise SesError(code, "Maximum sending rate exceeded.", THROTTLE_CODES[code])


def send_times_report(timestamps: Iterable[float], since: float | None) -> dict[str, Any]:
    times = [t for t in timestamps if since is None or t >= since]
    return {"timestamps": times, "count": len(times), "max_per_second": max_in_window(times)}
