"""The embedded broker's guard against amqtt 0.12 changing its subscriptions while it loops over them."""

from __future__ import annotations

from broker.launch import _Snapshots


def test_the_subscriptions_table_may_change_while_it_is_looped_over() -> None:
    """amqtt awaits inside `for topic in self._subscriptions` (and `.items()`); a client that
    subscribed meanwhile raised "dictionary changed size during iteration" and cost the
    connecting client its connection. The table now loops over what it held when the loop began."""
    table = _Snapshots({"a/+": [], "b/#": []})
    seen: list[str] = []
    for topic in table:
        table[f"{topic}/more"] = []  # another client subscribes
        seen.append(topic)
    for topic, _ in table.items():
        del table[topic]  # the last client of each filter leaves
    assert seen == ["a/+", "b/#"]
    assert table == {}
