"""The embedded amqtt broker's subscriptions, made safe to change, quick to search and right.

amqtt 0.12 keeps its subscriptions in a dict of topic filter -> subscribers, and three of its
habits cost gatemesh dearly (`adapt` mends them on a Broker before it starts):

- it awaits inside its loops over the table (sending a connecting client the retained messages
  of every filter), so a client that subscribed meanwhile made it raise "dictionary changed
  size during iteration" and drop the connecting client: a gate host under `gatemesh serve
  --hosts`. The table is therefore looped over as a copy of what it held when the loop began;
- it routes every message by trying every filter in the table (`Broker._run_broadcast`), each
  try a Python call that formats a debug line. A gate subscribes to its own topics by name, so
  at 1,200 gates a pass of 3,600 messages made 13 million tries (40 of its 50 s under a
  profiler; bench/embedded.py measures it without one). A message can
  only go to the filter that is its topic and to the filters with wildcards, so only those are
  tried: the broker's queue of messages to route (`Broadcasts`) tells the table which topic it
  routes next, and the table hands amqtt those filters alone (amqtt still matches them itself);
- it sends a connecting client the retained messages of every filter in the table, whoever
  subscribed to it: a gate got other gates' retained messages on topics it does not serve, and
  each connection cost a match of every filter against every retained message. They now go
  only to a filter's own subscribers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

AMQTT = "0.12.1"
"""The amqtt these mends were written against: they lean on its internals."""


def adapt(broker: Any) -> None:
    """Mend `broker` (an amqtt 0.12.1 Broker, not started yet) as the module's docstring says.
    They lean on how that version routes (pyproject.toml pins it; another is refused)."""
    if version("amqtt") != AMQTT:
        raise RuntimeError(f"the embedded broker's mends are for amqtt {AMQTT}, not {version('amqtt')}")
    broker._subscriptions = table = Subscriptions(broker._subscriptions)
    broker._broadcast_queue = Broadcasts(table)
    send_retained = broker._publish_retained_messages_for_subscription

    async def to_subscribers_only(subscription: tuple[str, int], session: Any) -> None:
        subscribers = table.get(subscription[0], ())
        if any(subscriber.client_id == session.client_id for subscriber, _ in subscribers):
            await send_retained(subscription, session)

    broker._publish_retained_messages_for_subscription = to_subscribers_only


class Subscriptions(dict[str, Any]):
    """amqtt's `Broker._subscriptions`: copied when looped over, searched by topic when routing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wildcards: dict[str, None] = dict.fromkeys(f for f in self if _wild(f))
        """The filters with `+` or `#`, in the order they came (a dict: ordered, found at once)."""
        self.routing: tuple[str, asyncio.Task[Any] | None] | None = None
        """The topic of the message amqtt routes next, and the task routing it: set by Broadcasts,
        used by that task's next items() (any other task's loop sees the whole table)."""

    # every way a dict changes keeps `wildcards` in step (amqtt 0.12 uses the first three)

    def __setitem__(self, topic_filter: str, subscribers: Any) -> None:
        super().__setitem__(topic_filter, subscribers)
        if _wild(topic_filter):
            self.wildcards[topic_filter] = None

    def __delitem__(self, topic_filter: str) -> None:
        super().__delitem__(topic_filter)
        self.wildcards.pop(topic_filter, None)

    def clear(self) -> None:
        super().clear()
        self.wildcards.clear()

    def pop(self, topic_filter: str, *default: Any) -> Any:
        self.wildcards.pop(topic_filter, None)
        return super().pop(topic_filter, *default)

    def popitem(self) -> tuple[str, Any]:
        topic_filter, subscribers = super().popitem()
        self.wildcards.pop(topic_filter, None)
        return topic_filter, subscribers

    def setdefault(self, topic_filter: str, default: Any = None) -> Any:
        if topic_filter not in self:
            self[topic_filter] = default
        return self[topic_filter]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for topic_filter, subscribers in dict(*args, **kwargs).items():
            self[topic_filter] = subscribers

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().__iter__()))

    def __repr__(self) -> str:  # amqtt logs the table at every subscribe: not every filter, every time
        return f"<{len(self)} topic filters>"

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        """Every (filter, subscribers), or, right after Broadcasts handed amqtt a message, only
        those that can match its topic: the topic itself and every filter with a wildcard."""
        routing = self.routing
        if routing is None or routing[1] is not _current_task():
            return list(super().items())
        self.routing = None
        topic = routing[0]
        found = [(topic, self[topic])] if topic in self else []
        # a wildcard's last subscriber gone, amqtt keeps the filter with no one: not tried
        return found + [(f, subscribers) for f in self.wildcards if (subscribers := self.get(f))]


class Broadcasts(asyncio.Queue[dict[str, Any]]):
    """amqtt's `Broker._broadcast_queue`: tells `table` the topic of each message taken to route.

    amqtt takes a message and loops over the table's items() with no await in between, so the
    topic set here is the one that items() reads."""

    def __init__(self, table: Subscriptions) -> None:
        super().__init__()
        self.table = table

    async def get(self) -> dict[str, Any]:
        broadcast = await super().get()
        topic = broadcast.get("topic")
        self.table.routing = (topic, _current_task()) if isinstance(topic, str) else None
        return broadcast


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: not amqtt's broadcast loop
        return None


def _wild(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter
