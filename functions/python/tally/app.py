"""Counts readings per device in key-value state and stamps each event with
its device's running count; every ``every``-th reading of a device is also
emitted as a ``com.brink.tally`` summary with the device's last value.

Input data: ``{"device": "t-17", "value": 31.2}``.
Config: ``bucket`` (default ``default``), ``every`` (default 10).
State: ``count/<device>`` (a counter) and ``last/<device>`` (JSON, 1 h TTL).
"""

import json

import brink
from brink import config, kv

LAST_TTL_MS = 3_600_000


@brink.handler
def handle(event: brink.Event):
    every = config.get_or("every", 10, int)
    if every < 1:
        raise brink.Internal(f"config `every` = {every} must be at least 1")
    reading = event.json()
    device = reading.get("device") if isinstance(reading, dict) else None
    if not isinstance(device, str) or not device or "/" in device:
        raise brink.InvalidEvent(f"event {event.id} names no device (a string without /)")
    state = kv.bucket(config.get("bucket") or "default")
    count = state.increment(f"count/{device}", 1)
    state.set_with_ttl(f"last/{device}", _json(reading.get("value")), LAST_TTL_MS)
    event.extensions["tallycount"] = str(count)
    out = [event]
    if count % every == 0:
        out.append(
            brink.Event(
                "com.brink.tally",
                event.source,
                subject=device,
                json={"device": device, "count": count, "last": reading.get("value")},
            )
        )
    return out


def _json(value) -> bytes:
    return json.dumps(value).encode()
