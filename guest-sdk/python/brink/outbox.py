"""Store-and-forward to the cloud: an event sent here is kept on disk until
the named uplink acknowledges it. Needs ``"outbox"`` in ``[tool.brink]
capabilities`` and the uplink granted in the manifest (``outbox = ["cloud"]``).
"""

from typing import Optional

from ._dispatch import _event_out
from .errors import Error, Internal, NotImported, Transient
from .event import Event

# Imported now: see config.py. Absent when the build's world has no "outbox".
try:
    from wit_world.imports import outbox as _wit
except ImportError:
    _wit = None


def send(event: Event, uplink: str, priority: int = 0, ttl_ms: Optional[int] = None) -> int:
    """Stores ``event`` for ``uplink`` and returns its sequence number once it is on disk."""
    if _wit is None:
        raise NotImported("outbox")
    outbox = _wit
    options = outbox.SendOptions(uplink=uplink, priority=int(priority), ttl_ms=ttl_ms)
    try:
        return outbox.send(_event_out(event), options)
    except Error:
        raise
    except Exception as e:
        value = getattr(e, "value", e)
        reason = f"outbox `{uplink}`: {type(value).__name__.split('_')[-1]}: {getattr(value, 'value', value)}"
        if isinstance(value, outbox.SendError_Full):
            raise Transient(reason) from None
        raise Internal(reason) from None
