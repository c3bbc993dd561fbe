"""Structured logging into the host's log, tagged with the function and event."""

from . import testing

# Imported now: see config.py.
try:
    from wit_world.imports import log as _wit
except ImportError:  # plain CPython: records go to brink.testing.LOGS
    _wit = None


def _log(level: str, message: str) -> None:
    if _wit is None:
        testing.LOGS.append((level.lower(), str(message)))
        return
    _wit.log(getattr(_wit.Level, level), str(message))


def trace(message: str) -> None:
    _log("TRACE", message)


def debug(message: str) -> None:
    _log("DEBUG", message)


def info(message: str) -> None:
    _log("INFO", message)


def warn(message: str) -> None:
    _log("WARN", message)


def error(message: str) -> None:
    _log("ERROR", message)
