"""The page's recorder: a Recorder that tells the session when its run begins and, for a
stepped run, holds the orchestrator's own data messages (the feeds and the seed) as the gates
hold theirs (gates/held.py). The trace records them at their real topics, as any other send."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from pydantic import BaseModel

from gates.held import hold
from orchestrator.recorder import Recorder


class WebRecorder(Recorder):
    def __init__(self, *, hold: bool, on_begin: Callable[[str], None], faults_text: str = "") -> None:
        super().__init__(faults_text=faults_text)
        self.hold = hold
        if hold:
            self.unseen_note = "held in step mode: not delivered (yet, or dropped)"
        self.on_begin = on_begin

    def begin(self, run: str, inputs: Mapping[str, float]) -> None:
        super().begin(run, inputs)
        self.on_begin(run)

    def stamp(self, run: str, batch: Sequence[tuple[str, BaseModel]]) -> list[tuple[str, BaseModel]]:
        stamped = super().stamp(run, batch)
        return hold(stamped) if self.hold else stamped
