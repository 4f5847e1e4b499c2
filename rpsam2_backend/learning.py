"""Web-side hook of the learning loop: count accepted annotations, enqueue retraining.

Placeholder until the learning-loop work lands: records nothing, enqueues nothing.
"""

from __future__ import annotations


def on_event(event: str | None, data: dict, state: object) -> dict:
    return {"event": event, "enqueued": False}
