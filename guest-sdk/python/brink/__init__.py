"""Write Brink edge functions in Python.

A function is a plain Python function from one :class:`Event` to zero, one or
many events, registered with :func:`handler` and built with ``brink build``
(componentize-py, WASI 0.2)::

    import brink

    @brink.handler
    def handle(event: brink.Event):
        reading = event.json()
        reading["value"] *= 2
        return brink.Event("com.example.reading.doubled", event.source,
                           subject=reading["device"], json=reading)

A handler may return an :class:`Event`, ``None`` (the event is dropped) or a
list of events. Failures are :class:`Error` exceptions whose kind tells the
host whether retrying can help; any other exception is an internal error
that names its type.

The capabilities a function uses (``kv``, ``outbox``) are declared in its
``pyproject.toml`` under ``[tool.brink]``; ``brink build`` imports only those,
so the host's deny-by-default checks see exactly what the function needs.
"""

from .event import Event
from .errors import Error, InvalidEvent, Transient, Internal
from ._dispatch import handler
from . import config, log, testing

__all__ = [
    "Event",
    "Error",
    "InvalidEvent",
    "Transient",
    "Internal",
    "handler",
    "config",
    "log",
    "testing",
]
