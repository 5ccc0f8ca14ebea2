"""What a ShiViz log says of each fault: the words a student reads beside each event."""

from __future__ import annotations

from gates.protocol import topic
from gates.trace_records import STEP_MODE_COPY_DROP, STEP_MODE_DROP, STEP_MODE_DUPLICATE, TraceEvent, TraceMsg
from viz.shiviz import event_text

SENT = TraceMsg(id="x:4", src="x", dest=("add_1",), phase="forward", topic=topic("c", "fwd", "x"), value=-2.0)
AT_X = {"t_ns": 1, "run": "r", "node": "x", "host": "local", "lamport": 5, "vc": {"x": 5}, "msg": SENT}


def test_a_delay_says_which_copy_only_of_a_duplicated_message() -> None:
    """A single message's delay has no note since gates note copies of duplicates only: the text
    read "by 10.5 ms,  (fault injector)"."""
    single = TraceEvent.model_validate({**AT_X, "type": "delay", "delay_ms": 10.5})
    assert event_text(single) == "DELAYED forward x:4 value=-2 by 10.5 ms (fault injector)"
    copy = TraceEvent.model_validate({**AT_X, "type": "delay", "delay_ms": 3.4, "note": "copy 2 of 2"})
    assert event_text(copy) == "DELAYED forward x:4 value=-2 by 3.4 ms, copy 2 of 2 (fault injector)"
    dropped = TraceEvent.model_validate({**AT_X, "type": "drop"})
    assert event_text(dropped) == "DROPPED forward x:4 value=-2 (fault injector)"


def test_what_a_student_did_in_step_mode_is_said_as_theirs() -> None:
    """A student's drop was told as the fault injector's."""
    at_orchestrator = {**AT_X, "node": "orchestrator", "vc": {"orchestrator": 5}}
    texts = [
        event_text(TraceEvent.model_validate({**at_orchestrator, "type": kind, "note": note}))
        for kind, note in (
            ("drop", STEP_MODE_DROP),
            ("duplicate", STEP_MODE_DUPLICATE),
            ("drop", STEP_MODE_COPY_DROP),
        )
    ]
    assert texts == [
        "DROPPED forward x:4 value=-2 (in step mode)",
        "DUPLICATED forward x:4 value=-2 (in step mode: one copy delivered, the second waits)",
        "DROPPED the second copy of forward x:4 value=-2 (in step mode: the first was delivered)",
    ]
