"""Running handlers in plain CPython, for unit tests.

Outside a component there is no host: :func:`brink.handler` registers
nothing, :mod:`brink.config` reads :data:`CONFIG`, and :mod:`brink.log`
appends to :data:`LOGS`. Set what a test needs, then call the handler::

    from brink import testing
    testing.CONFIG["threshold"] = "30"
    assert app.handle(brink.Event("com.example.reading", "/t", json={...})) is None
"""

from typing import Dict, List, Tuple

#: The config values :func:`brink.config.get` returns outside a component.
CONFIG: Dict[str, str] = {}

#: The ``(level, message)`` records :mod:`brink.log` wrote outside a component.
LOGS: List[Tuple[str, str]] = []


def in_component() -> bool:
    """Whether the generated bindings are there (a componentize-py build)."""
    try:
        import wit_world  # noqa: F401
    except ImportError:
        return False
    return True
