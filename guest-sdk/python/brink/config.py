"""Configuration values from the function's spec (``config = { key = "value" }``)."""

from typing import Callable, Optional, TypeVar

from .errors import Internal

# Imported now, not per call: componentize-py snapshots the interpreter once
# the app is loaded, and a component has no filesystem to import from later.
try:
    from wit_world.imports import config as _wit
except ImportError:  # plain CPython: brink.testing stands in for the host
    _wit = None

T = TypeVar("T")


def get(key: str) -> Optional[str]:
    """The raw value of ``key``, or None when the spec does not set it."""
    if _wit is None:
        from . import testing

        return testing.CONFIG.get(key)
    return _wit.get(key)


def require(key: str, parse: Callable[[str], T] = str) -> T:
    """The value of ``key`` parsed with ``parse``; an error when it is unset or does not parse."""
    raw = get(key)
    if raw is None:
        raise Internal(f"config `{key}` is not set in the function's spec")
    return _parse(key, raw, parse)


def get_or(key: str, default: T, parse: Callable[[str], T] = str) -> T:
    """The value of ``key`` parsed with ``parse``, or ``default`` when it is unset."""
    raw = get(key)
    return default if raw is None else _parse(key, raw, parse)


def _parse(key: str, raw: str, parse: Callable[[str], T]) -> T:
    try:
        return parse(raw)
    except (TypeError, ValueError) as e:
        name = getattr(parse, "__name__", "value")
        raise Internal(f"config `{key}` = {raw!r} is not a valid {name}: {e}") from None
