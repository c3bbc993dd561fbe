"""Passes sensor readings whose value crosses a threshold and drops the rest
(EdgeX's "filter" function); the Python twin of functions/filter.

Input data: ``{"device": "t-17", "value": 31.2, ...}``.
Config:
- ``threshold`` (required): the value to compare against;
- ``direction`` (``above``, the default, or ``below``): which side passes.
"""

import math

import brink
from brink import config, log


@brink.handler
def handle(event: brink.Event):
    threshold = config.require("threshold", float)
    direction = config.get("direction") or "above"
    if direction not in ("above", "below"):
        raise brink.Internal(f'config `direction` = {direction!r} must be "above" or "below"')
    reading = event.json()
    device, value = reading.get("device"), reading.get("value")
    if not isinstance(device, str) or isinstance(value, bool) or not isinstance(value, (int, float)):
        raise brink.InvalidEvent(f"event {event.id} data is not a reading: {{\"device\": str, \"value\": number}}")
    if not math.isfinite(value):
        raise brink.InvalidEvent(f"reading from {device} has a non-finite value")
    passes = value > threshold if direction == "above" else value < threshold
    log.debug(f"{device} = {value} ({direction} threshold {threshold}): {'pass' if passes else 'drop'}")
    return event if passes else None
