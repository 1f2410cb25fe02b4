"""The handoff event feed: every event is stored, then published to the live watchers.

A watcher that falls more than ``watch_queue`` events behind is ended with RESOURCE_EXHAUSTED
naming the event id to resume after (``after_id``, which replays history from the store).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from groundplane.handoff.store import HandoffEvent, HandoffStore
from groundplane.kernel.errors import InvalidArgument, ResourceExhausted

REPLAY_PAGE = 1000
"""Events read from the store at a time when a watch replays history."""


@dataclass(eq=False)
class _Watcher:
    """One :meth:`EventFeed.watch` stream. ``None`` in the queue ends it: the feed closed, or
    (``fell_behind``) more than ``watch_queue`` events were waiting for it."""

    queue: asyncio.Queue[HandoffEvent | None] = field(default_factory=asyncio.Queue)
    fell_behind: bool = False


class EventFeed:
    """Stores handoff events and streams them to watchers."""

    def __init__(self, store: HandoffStore, *, watch_queue: int) -> None:
        self._store = store
        self._watch_queue = watch_queue
        self._watchers: set[_Watcher] = set()

    def emit(self, event: HandoffEvent) -> None:
        """Store ``event`` and publish it."""
        event_id = self._store.add_event(event)
        self.publish(with_id(event, event_id))

    def publish(self, event: HandoffEvent) -> None:
        """Publish an event already stored (``event.event_id`` set)."""
        for watcher in list(self._watchers):
            if watcher.queue.qsize() >= self._watch_queue:
                # Too far behind: end its stream after what it has queued (it may resume).
                watcher.fell_behind = True
                self._watchers.discard(watcher)
                watcher.queue.put_nowait(None)
            else:
                watcher.queue.put_nowait(event)

    def close(self) -> None:
        """End every watcher's stream after what it has queued."""
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)  # unbounded: the end always gets in

    def list(
        self, *, subject_id: str | None = None, after_id: int = 0, limit: int = 1000
    ) -> list[HandoffEvent]:
        _check_after(after_id)
        return self._store.events(subject_id=subject_id, after_id=after_id, limit=limit)

    async def watch(
        self, *, subject_id: str | None = None, after_id: int | None = None
    ) -> AsyncGenerator[HandoffEvent, None]:
        """Events as they happen (after replaying history past ``after_id`` if given).

        A watcher that lets more than ``watch_queue`` events wait gets, after the events queued
        for it, :class:`ResourceExhausted` naming the event id to resume from (``after_id``).
        """
        if after_id is not None:
            _check_after(after_id)
        watcher = _Watcher()
        self._watchers.add(watcher)
        # Everything up to ``last`` was delivered or is not wanted (no await since registering,
        # so every later event is in the queue).
        last = self._store.last_event_id() if after_id is None else after_id
        try:
            if after_id is not None:
                while True:
                    page = self._store.events(
                        subject_id=subject_id, after_id=last, limit=REPLAY_PAGE
                    )
                    for event in page:
                        last = event.event_id
                        yield event
                    if len(page) < REPLAY_PAGE:
                        break
            while True:
                item = await watcher.queue.get()
                if item is None:
                    if watcher.fell_behind:
                        raise ResourceExhausted(
                            f"watcher fell behind: more than {self._watch_queue} events "
                            f"were waiting for it; resume with replay and after_event_id={last}"
                        )
                    return
                if item.event_id <= last:
                    continue
                last = item.event_id
                if subject_id and item.subject_id != subject_id:
                    continue
                yield item
        finally:
            self._watchers.discard(watcher)


def with_id(event: HandoffEvent, event_id: int) -> HandoffEvent:
    """``event`` as stored under ``event_id``."""
    return dataclasses.replace(event, event_id=event_id)


MAX_EVENT_ID = 2**63 - 1
"""Event ids are SQLite integers (signed 64 bits): no id is larger."""


def _check_after(after_id: int) -> None:
    if not 0 <= after_id <= MAX_EVENT_ID:
        raise InvalidArgument(
            f"after_event_id must be between 0 and {MAX_EVENT_ID} (event ids are signed 64-bit), "
            f"got {after_id}"
        )
