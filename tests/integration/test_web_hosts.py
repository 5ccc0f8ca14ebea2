"""The gate host processes `gatemesh serve --hosts N` starts, stops and restarts."""

from __future__ import annotations

import asyncio
import contextlib

from gates.transport import BrokerAddress
from web.hosts import HostProcesses


async def test_a_restart_cut_short_by_a_newer_run_is_done_again(mosquitto_url: str) -> None:
    """A run with new faults restarts the hosts; a newer run that cancels it while they stop
    must not find them "started with" the new faults (it ran on stopped hosts, or old faults)."""
    hosts = HostProcesses(BrokerAddress.parse(mosquitto_url), ["wh1", "wh2"], on_change=lambda: None)
    try:
        async with asyncio.TaskGroup() as group:
            await hosts.start_all()
            assert hosts.started_with == ""
            restarting = group.create_task(hosts.restart_all("drop=0.5,seed=1"))
            await asyncio.sleep(0)  # stopping the first host
            restarting.cancel()
        assert hosts.started_with is None
        assert [h.state for h in hosts.hosts.values()] == ["stopping", "running"]
        async with asyncio.timeout(30):
            await hosts.restart_all("drop=0.5,seed=1")
        assert hosts.started_with == "drop=0.5,seed=1"
        assert [h.state for h in hosts.hosts.values()] == ["running", "running"]
    finally:
        with contextlib.suppress(Exception):
            await hosts.stop_all()
