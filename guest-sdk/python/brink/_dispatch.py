"""The bridge between the generated bindings and a plain handler function."""

import inspect
import sys
from typing import Any, Callable, List

from .errors import Error
from .event import Event

# Imported now, not per call: componentize-py snapshots the interpreter once
# the app is loaded, and a component has no filesystem to import from later.
try:
    from componentize_py_types import Err
    from wit_world import exports
    from wit_world.imports import types
except ImportError:  # plain CPython (a unit test): nothing to export to
    exports = None

_KINDS = {"invalid-event": "INVALID_EVENT", "transient": "TRANSIENT", "internal": "INTERNAL"}


def handler(fn: Callable[[Event], Any]) -> Callable[[Event], Any]:
    """Registers ``fn`` as the function's handler and returns it unchanged.

    componentize-py exports the ``Handler`` class of the app module (or
    ``AsyncHandler`` for an ``async def``, built with ``async = true``); this
    defines it there, so the app needs nothing else. The function stays a
    plain function, callable from tests.
    """
    if exports is None:
        return fn

    module = sys.modules[fn.__module__]
    if inspect.iscoroutinefunction(fn):
        if not hasattr(exports, "AsyncHandler"):
            raise TypeError(
                f"{fn.__name__} is `async def`, but this build exports the plain handler: "
                f"set `async = true` under [tool.brink] in pyproject.toml"
            )

        class AsyncHandler(exports.AsyncHandler):
            async def handle(self, event):
                try:
                    result = await fn(_event_in(event))
                except BaseException as e:  # noqa: BLE001 - every failure becomes a handler error
                    _fail(e)
                return _events_out(result)

        module.AsyncHandler = AsyncHandler
    else:
        if not hasattr(exports, "Handler"):
            raise TypeError(
                f"{fn.__name__} is a plain function, but this build exports the async handler: "
                f"make it `async def` or remove `async = true` under [tool.brink]"
            )

        class Handler(exports.Handler):
            def handle(self, event):
                try:
                    result = fn(_event_in(event))
                except BaseException as e:  # noqa: BLE001 - every failure becomes a handler error
                    _fail(e)
                return _events_out(result)

        module.Handler = Handler
    return fn


def _event_in(wit) -> Event:
    event = Event(
        wit.type,
        wit.source,
        id=wit.id,
        subject=wit.subject,
        time=wit.time,
        datacontenttype=wit.datacontenttype,
        dataschema=wit.dataschema,
        extensions=dict(wit.extensions),
        data=wit.data,
    )
    event.specversion = wit.specversion
    return event


def _event_out(event: Event):
    if not isinstance(event, Event):
        raise Error(f"a handler returns brink.Event, None or a list of them, not {type(event).__name__}")
    data = event.data
    if isinstance(data, str):
        data = data.encode()
    return types.CloudEvent(
        id=event.id or "",
        source=event.source,
        type=event.type,
        specversion=event.specversion or "1.0",
        subject=event.subject,
        time=event.time,
        datacontenttype=event.datacontenttype,
        dataschema=event.dataschema,
        extensions=[(str(k), str(v)) for k, v in event.extensions.items()],
        data=None if data is None else bytes(data),
    )


def _events_out(result: Any) -> List[Any]:
    if result is None:
        return []
    if isinstance(result, Event):
        return [_event_out(result)]
    try:
        return [_event_out(e) for e in result]
    except Error as e:
        _fail(e)
    except TypeError:
        _fail(Error(f"a handler returns brink.Event, None or a list of them, not {type(result).__name__}"))


def _fail(e: BaseException):
    if isinstance(e, Error):
        kind, message = e.kind, e.message
    else:
        kind, message = "internal", f"{type(e).__name__}: {e}"
    raise Err(types.HandlerError(kind=getattr(types.ErrorKind, _KINDS.get(kind, "INTERNAL")), message=message))
