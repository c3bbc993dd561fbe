"""Handler failures: what a function reports instead of trapping."""


class Error(Exception):
    """A handler failure with a kind the host acts on.

    ``kind`` is ``"invalid-event"`` (retrying cannot help), ``"transient"``
    (a dependency was unavailable; the host may retry) or ``"internal"``.
    """

    kind = "internal"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidEvent(Error):
    """The event itself is unusable for this function."""

    kind = "invalid-event"


class Transient(Error):
    """A transient failure: the host may retry the event."""

    kind = "transient"


class Internal(Error):
    """Anything else."""

    kind = "internal"


class NotImported(Internal):
    """The function uses a capability its build did not import."""

    def __init__(self, capability: str):
        super().__init__(
            f"this function's build does not import `{capability}`: add \"{capability}\" "
            f"to `capabilities` under [tool.brink] in pyproject.toml and build again"
        )
