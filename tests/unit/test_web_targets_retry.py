"""The page opens a target again once when the broker refused the first connection, never when
the gates had their time and did not say ready: that retry doubled a readiness timeout's wait."""

from __future__ import annotations

import asyncio

import pytest

from gates.transport import BrokerAddress
from orchestrator.errors import BrokerError, GatesNotReady
from web.targets import Place, Target, Targets


def _never(*work: object) -> asyncio.Task[None]:
    raise AssertionError("an opening that fails at once starts no task")


class Opening(Targets):
    """Targets whose every opening fails with `error`, counted (the retry decision alone: no broker)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(BrokerAddress.parse("mqtt://127.0.0.1:1"), spawn=_never)
        self.error = error
        self.opened = 0

    async def _open(self, place: Place) -> Target:
        self.opened += 1
        raise self.error


@pytest.mark.parametrize(
    ("error", "opened"),
    [(GatesNotReady("gates add_1, f never said ready within 30 s"), 1), (BrokerError("the broker closed it"), 2)],
)
def test_a_readiness_timeout_is_not_tried_again_a_refusal_is_once(error: Exception, opened: int) -> None:
    targets = Opening(error)
    with pytest.raises(type(error)):
        asyncio.run(targets.get(Place("deployment", deployment="d")))
    assert targets.opened == opened
