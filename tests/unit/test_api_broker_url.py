"""`broker_url` turns a bad broker URL into a BrokerError, and only that: a ValueError raised by the
code inside its block is that code's, not the broker's."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.api import broker_url
from orchestrator.errors import BrokerError


def test_a_bad_url_is_a_broker_error_and_the_blocks_own_errors_stay_its_own() -> None:
    async def inside(url: str) -> None:
        async with broker_url(url) as address:
            raise ValueError(f"the block's own, with {address}")

    with pytest.raises(BrokerError, match="scheme must be mqtt:// or mqtts://"):
        asyncio.run(inside("http://127.0.0.1:1"))
    with pytest.raises(ValueError, match=r"the block.s own, with mqtt://127\.0\.0\.1:1") as caught:
        asyncio.run(inside("mqtt://127.0.0.1:1"))
    assert not isinstance(caught.value, BrokerError)
