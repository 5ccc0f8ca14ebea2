"""The embedded amqtt broker's subscriptions, made safe to change, quick to search and right.

amqtt 0.12 keeps its subscriptions in a dict of topic filter -> subscribers, and three of its
habits cost gatemesh dearly (`adapt` mends them on a Broker before it starts):

- it awaits inside its loops over the table (sending a connecting client the retained messages
  of every filter), so a client that subscribed meanwhile made it raise "dictionary changed
  size during iteration" and drop the connecting client: a gate host under `gatemesh serve
  --hosts`. The table is therefore looped over as a copy of what it held when the loop began;
- it routes every message by trying every filter in the table (`Broker._run_broadcast`), each
  try a Python call that formats a debug line. A gate subscribes to its own topics by name, so
  at 1,200 gates a pass of 3,600 messages made 13 million tries: 40 of its 50 s. A message can
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
from typing import Any


def adapt(broker: Any) -> None:
    """Mend `broker` (an amqtt 0.12 Broker, not started yet) as the module's docstring says."""
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
        self.routing: str | None = None
        """The topic of the message amqtt routes next: set by Broadcasts, used by the next items()."""

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

    def __iter__(self) -> Iterator[str]:
        return iter(list(super().__iter__()))

    def __repr__(self) -> str:  # amqtt logs the table at every subscribe: not every filter, every time
        return f"<{len(self)} topic filters>"

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        """Every (filter, subscribers), or, right after Broadcasts handed amqtt a message, only
        those that can match its topic: the topic itself and every filter with a wildcard."""
        topic, self.routing = self.routing, None
        if topic is None:
            return list(super().items())
        found = [(topic, self[topic])] if topic in self else []
        return found + [(f, self[f]) for f in self.wildcards]


class Broadcasts(asyncio.Queue[dict[str, Any]]):
    """amqtt's `Broker._broadcast_queue`: tells `table` the topic of each message taken to route.

    amqtt takes a message and loops over the table's items() with no await in between, so the
    topic set here is the one that items() reads."""

    def __init__(self, table: Subscriptions) -> None:
        super().__init__()
        self.table = table

    async def get(self) -> dict[str, Any]:
        broadcast = await super().get()
        self.table.routing = broadcast.get("topic")
        return broadcast


def _wild(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter
