"""{{name}}: answers each event with a greeting.

Input data: ``{"name": "edge"}``. Config: ``greeting`` (default ``hello``).
"""

import brink
from brink import config, log


@brink.handler
def handle(event: brink.Event):
    who = event.json().get("name")
    if not isinstance(who, str) or not who:
        raise brink.InvalidEvent(f'event {event.id} needs data {{"name": "..."}}')
    greeting = config.get("greeting") or "hello"
    log.info(f"greeting {who}")
    return brink.Event(
        "com.example.greeting",
        event.source,
        subject=who,
        json={"message": f"{greeting}, {who}"},
    )
