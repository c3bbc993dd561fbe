"""CloudEvents 1.0, as a function receives and emits them."""

import json as _json
from typing import Any, Dict, Optional

from .errors import InvalidEvent


class Event:
    """One CloudEvent.

    On output, ``id`` may be left empty: the host fills in a fresh unique id.
    ``source`` and ``type`` are required. ``extensions`` maps lowercase names
    to string values.
    """

    __slots__ = (
        "id",
        "source",
        "type",
        "specversion",
        "subject",
        "time",
        "datacontenttype",
        "dataschema",
        "extensions",
        "data",
    )

    def __init__(
        self,
        type: str,
        source: str,
        *,
        id: str = "",
        subject: Optional[str] = None,
        time: Optional[str] = None,
        datacontenttype: Optional[str] = None,
        dataschema: Optional[str] = None,
        extensions: Optional[Dict[str, str]] = None,
        data: Optional[bytes] = None,
        json: Any = None,
    ):
        self.id = id
        self.source = source
        self.type = type
        self.specversion = "1.0"
        self.subject = subject
        self.time = time
        self.datacontenttype = datacontenttype
        self.dataschema = dataschema
        self.extensions = dict(extensions or {})
        self.data = data
        if json is not None:
            self.set_json(json)

    def json(self) -> Any:
        """The data decoded as JSON.

        Raises :class:`InvalidEvent` when there is no data or it does not
        decode, since retrying the same event cannot help.
        """
        if self.data is None:
            raise InvalidEvent(f"event {self.id} has no data")
        try:
            return _json.loads(self.data)
        except ValueError as e:
            raise InvalidEvent(f"event {self.id} data is not JSON: {e}") from None

    def set_json(self, value: Any) -> "Event":
        """Sets the data to ``value`` as JSON; returns the event."""
        self.data = _json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        self.datacontenttype = "application/json"
        return self

    def text(self) -> str:
        """The data as UTF-8 text ("" when there is none)."""
        return (self.data or b"").decode("utf-8", errors="replace")

    def extension(self, name: str) -> Optional[str]:
        """The value of an extension attribute, or None."""
        return self.extensions.get(name)

    def __repr__(self) -> str:
        return f"Event(type={self.type!r}, source={self.source!r}, id={self.id!r})"
