"""A validator for ShiViz logs, written from ShiViz's documented rules (its wiki and the checks in
js/model/parser.js, js/model/vectorTimestamp.js and js/model/modelGraph.js), independent of
viz/shiviz.py, so that the export is checked by something it did not write.

1. The file's first line is the parsing regex, with named groups host, clock and event; the
   second the multiple-executions delimiter (ShiViz wraps both in ^...$).
2. Executions are split by the delimiter; names (its `trace` group) are unique; each has events.
3. Each clock is JSON mapping host -> positive int, and names its own host.
4. Each host's own entry is 1, 2, 3, ... over its events (start at 1, step by exactly 1).
5. Every other entry names a host of the execution and an event that host has.
"""

from __future__ import annotations

import json
import re


def python_regex(shiviz: str) -> str:
    """ShiViz's JavaScript named groups `(?<name>` in Python's spelling."""
    return re.sub(r"\(\?<(\w+)>", r"(?P<\1>", shiviz)


def validate(text: str) -> dict[str, list[tuple[str, dict[str, int], str]]]:
    """Every execution as (host, clock, event text) triples; AssertionError names the broken rule."""
    first, second, rest = text.split("\n", 2)
    parser = re.compile("^" + python_regex(first) + "$", re.MULTILINE)
    assert {"host", "clock", "event"} <= set(parser.groupindex), "rule 1: the regex needs host, clock and event"
    delimiter = re.compile("^" + python_regex(second.strip()) + "$", re.MULTILINE)
    names = [m.group("trace") for m in delimiter.finditer(rest)]
    chunks = delimiter.split(rest.strip())
    bodies = [chunk for chunk in chunks if chunk is not None and chunk.strip() and chunk not in names]
    assert len(names) == len(set(names)), f"rule 2: execution names repeat: {names}"
    assert len(bodies) == len(names), "rule 2: every execution has a body"
    executions = {}
    for name, body in zip(names, bodies, strict=True):
        events = []
        for m in parser.finditer(body):
            clock = json.loads(m.group("clock"))
            assert all(isinstance(v, int) and v >= 1 for v in clock.values()), f"rule 3: {clock}"
            assert m.group("host") in clock, f"rule 3: {m.group('host')} is missing from its clock {clock}"
            events.append((m.group("host"), clock, m.group("event")))
        assert events, f"rule 2: execution {name} has no events"
        counts: dict[str, list[int]] = {}
        for host, clock, _ in events:
            counts.setdefault(host, []).append(clock[host])
        for host, own in counts.items():
            assert sorted(own) == list(range(1, len(own) + 1)), f"rule 4: {host}'s own entries are {sorted(own)}"
        for host, clock, event in events:
            for other, time in clock.items():
                assert other in counts, f"rule 5: {event!r} at {host} names unknown host {other}"
                assert time <= len(counts[other]), f"rule 5: {event!r} names event {time} of {other}"
        executions[name] = events
    return executions
