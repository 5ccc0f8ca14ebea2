"""The gate host processes `gatemesh serve --hosts N` starts, stops and restarts."""

from __future__ import annotations

import asyncio
import contextlib

from gates.transport import BrokerAddress
from web.commands import Run
from web.hosts import HostProcesses
from web.session import Session


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


async def test_a_host_killed_as_it_starts_is_not_waited_for(mosquitto_url: str) -> None:
    """Killed from the page while the hosts restarted for new faults, a host never announces
    itself: the run waited the 20 s of `wait_online`, then went on without a word."""
    hosts = HostProcesses(BrokerAddress.parse(mosquitto_url), ["wk1", "wk2"], on_change=lambda: None)

    async def killed_before_it_announces(name: str, pid: int) -> None:
        hosts.kill(name)
        await asyncio.sleep(3600)  # what waiting for a dead host's announcement comes to

    try:
        async with asyncio.timeout(20):
            await hosts.start_all(online=killed_before_it_announces)
        assert [h.state for h in hosts.hosts.values()] == ["killed", "killed"]
    finally:
        with contextlib.suppress(Exception):
            await hosts.stop_all()


async def test_a_run_on_hosts_says_which_host_is_down(mosquitto_url: str) -> None:
    """A host killed from the page: the next run went on the others without a word of it."""
    session = Session(BrokerAddress.parse(mosquitto_url), hosts=["wd1", "wd2"])
    async with asyncio.TaskGroup() as group:
        serving = group.create_task(session.serve())
        try:
            async with asyncio.timeout(60):
                await session.ready.wait()
                assert session.hosts is not None
                session.hosts.kill("wd2")
                request = Run(type="run", source="x * y", inputs={"x": 3.0, "y": -2.0}, where="hosts")
                page = session.connect()  # woken whenever the session has something new to show
                await session.handle(request, page)
                while session.view.status not in ("done", "failed"):
                    page.wake.clear()
                    await page.wake.wait()
            assert (session.view.status, session.view.error) == ("done", "")
            assert session.view.result is not None
            assert (session.view.result.value, session.view.result.grads) == (-6.0, {"x": -2.0, "y": 3.0})
            said = "gate host wd2 (killed) is not running: the run's gates go on wd1"
            assert said in session.view.sentences, list(session.view.sentences)
        finally:
            serving.cancel()
