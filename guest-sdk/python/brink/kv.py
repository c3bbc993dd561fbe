"""Key-value state, kept by the host across events and restarts.

Buckets are granted per function in the manifest (``kv = ["default"]``);
opening any other fails. Needs ``"kv"`` in ``[tool.brink] capabilities``::

    from brink import kv
    seen = kv.bucket("default").increment("readings/t-1", 1)

This is the standard ``wasi:keyvalue@0.2.0-draft2``, plus Brink's TTL and
prefix listing.
"""

import json as _json
from typing import Any, List, Optional

from .errors import Internal, NotImported

# Imported now: see config.py. Absent when the build's world has no "kv".
try:
    from wit_world.imports import atomics as _atomics
    from wit_world.imports import kv as _ext
    from wit_world.imports import store as _store
except ImportError:
    _store = None


def _wit():
    if _store is None:
        raise NotImported("kv")
    return _store, _atomics, _ext


def _error(bucket: str, e: Exception) -> Internal:
    store, _, _ = _wit()
    value = getattr(e, "value", e)
    if isinstance(value, store.Error_AccessDenied):
        return Internal(
            f"bucket `{bucket}` is not granted to this function (add it to `kv = [...]` in the manifest)"
        )
    if isinstance(value, store.Error_NoSuchStore):
        return Internal(f"no bucket `{bucket}`")
    return Internal(f"bucket `{bucket}`: {getattr(value, 'value', value)}")


class Bucket:
    """An open bucket."""

    def __init__(self, name: str):
        store, _, _ = _wit()
        self.name = name
        try:
            self._inner = store.open(name)
        except Exception as e:  # the bindings raise componentize_py_types.Err
            raise _error(name, e) from None

    def _call(self, f, *args):
        try:
            return f(*args)
        except Internal:
            raise
        except Exception as e:
            raise _error(self.name, e) from None

    def get(self, key: str) -> Optional[bytes]:
        """The value of ``key``, or None."""
        return self._call(self._inner.get, key)

    def get_json(self, key: str) -> Any:
        """The value of ``key`` decoded as JSON, or None."""
        raw = self.get(key)
        if raw is None:
            return None
        try:
            return _json.loads(raw)
        except ValueError as e:
            raise Internal(f"bucket `{self.name}` key `{key}` is not JSON: {e}") from None

    def set(self, key: str, value: bytes) -> None:
        """Sets ``key`` to ``value`` (bytes or str)."""
        if isinstance(value, str):
            value = value.encode()
        self._call(self._inner.set, key, bytes(value))

    def set_json(self, key: str, value: Any) -> None:
        """Sets ``key`` to ``value`` as JSON."""
        self.set(key, _json.dumps(value, separators=(",", ":")).encode())

    def set_with_ttl(self, key: str, value: bytes, ttl_ms: int) -> None:
        """Sets ``key``; it reads as absent after ``ttl_ms`` milliseconds."""
        _, _, ext = _wit()
        if isinstance(value, str):
            value = value.encode()
        self._call(ext.set_with_ttl, self._inner, key, bytes(value), int(ttl_ms))

    def delete(self, key: str) -> None:
        """Removes ``key``; absent keys are fine."""
        self._call(self._inner.delete, key)

    def exists(self, key: str) -> bool:
        """Whether ``key`` is set."""
        return self._call(self._inner.exists, key)

    def increment(self, key: str, delta: int) -> int:
        """Adds ``delta`` to the counter at ``key`` atomically; returns the new value."""
        _, atomics, _ = _wit()
        return self._call(atomics.increment, self._inner, key, int(delta))

    def keys_with_prefix(self, prefix: str) -> List[str]:
        """Every key that starts with ``prefix``, in byte order."""
        _, _, ext = _wit()
        keys: List[str] = []
        cursor = None
        while True:
            page = self._call(ext.list_prefix, self._inner, prefix, cursor)
            keys.extend(page.keys)
            cursor = page.cursor
            if cursor is None:
                return keys

    def keys(self) -> List[str]:
        """Every key of the bucket, in byte order."""
        return self.keys_with_prefix("")


def bucket(name: str) -> Bucket:
    """Opens bucket ``name``; fails when the function is not granted it."""
    return Bucket(name)
