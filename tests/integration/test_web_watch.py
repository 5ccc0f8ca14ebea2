"""`gatemesh serve --secure DIR --watch-only` in a real browser: a server that holds only the read-only
watcher's account shows the runs others make on a live deployment and refuses everything that
would publish. Mosquitto with the secured configuration, gate hosts and the CLI are real processes."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from broker.launch import mosquitto
from broker.security import ORCHESTRATOR_USER, WATCHER_FILE, SecureDir, host_user
from tests.integration.test_web import QF, QF_LINK, WAIT, eventually, shot, svg_texts
from tests.processes import GateHostProcess, gatemesh
from tests.web_server import ServeProcess

pytestmark = [pytest.mark.integration, pytest.mark.browser]

INPUTS = ("x=-2", "y=5", "z=-4")


def on(url: str) -> tuple[str, str]:
    """--broker URL."""
    return ("--broker", url)


@dataclass(frozen=True)
class Secured:
    accounts: SecureDir
    url: str
    """The broker, with no account in it."""
    host: GateHostProcess


@pytest.fixture(scope="module")
def secured() -> Iterator[Secured]:
    """A secured Mosquitto, gate host h0 with its own account, and (x+y)*z deployed on it as `watched-qf`
    by the orchestrator's account (with the ACL rewritten for it), as `gatemesh deploy --secure` does."""
    with tempfile.TemporaryDirectory(prefix="gatemesh-secure-") as path:
        Path(path).chmod(0o755)  # Mosquitto reads it after dropping root
        accounts = SecureDir.create(Path(path) / "secure", ["h0"])
        with mosquitto(secure_dir=accounts.directory) as url:
            host = GateHostProcess(accounts.url(host_user("h0"), url), "h0")
            secure = str(accounts.directory)
            try:
                with ThreadPoolExecutor(1) as aside:  # asyncio.run, outside the loop Playwright's sync API keeps
                    aside.submit(host.wait_online).result()
                deployed = gatemesh("deploy", QF, "--name", "watched-qf", "--hosts", "h0", *on(url), "--secure", secure)
                assert deployed.returncode == 0, deployed.stderr
                yield Secured(accounts, url, host)
            finally:
                gatemesh("undeploy", "watched-qf", "--broker", url, "--secure", secure)
                host.stop()


def test_a_watch_only_server_shows_the_runs_others_make_and_refuses_to_publish(
    page: Page, secured: Secured, tmp_path: Path
) -> None:
    projector = tmp_path / "projector"  # what a teacher copies to the projecting machine: the watcher alone
    projector.mkdir()
    shutil.copy(secured.accounts.directory / WATCHER_FILE, projector / WATCHER_FILE)
    url, orchestrator = secured.url, secured.accounts.url(ORCHESTRATOR_USER, secured.url)
    refused = gatemesh("serve", "--secure", str(projector), "--watch-only", "--broker", url, "--hosts", "1")
    assert "--watch-only starts no hosts" in refused.stderr
    serving = ServeProcess("--broker", url, "--secure", str(projector), "--watch-only")
    try:
        page.goto(serving.url + QF_LINK)  # a link that runs at once: refused, nothing is deployed
        problem = page.locator("#problem")
        expect(problem).to_contain_text("this server only watches (gatemesh serve --watch-only)", timeout=WAIT)
        expect(page.locator("#readonly")).to_be_visible()
        for button in ("#run", "#restart", "#attach", "#deliver-all"):
            expect(page.locator(button)).to_be_disabled()
        expect(page.locator("#status")).to_have_text("idle")

        watch(page, "watched-qf")
        ran = gatemesh("run", "--deployed", "watched-qf", *INPUTS, *on(orchestrator))
        assert ran.returncode == 0, ran.stderr
        assert "value = -12" in ran.stdout
        shows_the_result(page)
        expect(page.locator("#title")).to_contain_text("at x=-2, y=5, z=-4: a run made elsewhere")
        expect(page.locator("#log li")).to_have_count(16)  # every message of the pass, told
        expect(page.locator("#log li").nth(0)).to_contain_text(re.compile(r"the orchestrator feeds input [xyz] = "))
        expect(page.locator("#lamport-note")).to_contain_text("this run carries no clocks")
        expect(page.locator("#progress")).to_contain_text("16 of 16 messages")

        trace = str(tmp_path / "run.jsonl")
        traced = gatemesh("run", "--deployed", "watched-qf", *INPUTS, *on(orchestrator), "--trace", trace)
        assert traced.returncode == 0, traced.stderr
        # its clocks drawn: the note says no more that it has none (it may say to scroll: how tall the
        # diagram is depends on the order of its concurrent events, which a busy machine changes)
        expect(page.locator("#lamport-note")).not_to_contain_text("carries no clocks", timeout=WAIT)
        shows_the_result(page)
        eventually(lambda: _same(svg_texts(page, "circuit", "value"), ["-2.00", "5.00", "-4.00", "3.00", "-12.00"]))
        eventually(lambda: _same(svg_texts(page, "circuit", "grad"), ["-4.00", "-4.00", "3.00", "-4.00", "1.00"]))
        eventually(lambda: _count(page, "#lamport svg line.msg.forward", 5))  # the output's to the orchestrator too
        eventually(lambda: _count(page, "#lamport svg line.msg.feed", 3))  # the orchestrator's sends, off the wire
        eventually(lambda: _count(page, "#lamport svg line.msg.backward", 5))
        eventually(lambda: _count(page, "#lamport svg line.msg.report", 3))
        assert "h0" in page.locator("#lamport svg text.host").all_text_contents()
        page.screenshot(path=str(tmp_path / "watch-only.png"), full_page=True)
        shot(page, "watch-only")

        page.evaluate(  # a request the page no longer offers, sent anyway: refused, with the reason
            "() => { const ws = new WebSocket('ws://' + location.host + '/ws'); "
            "ws.onopen = () => ws.send(JSON.stringify({type: 'kill_host', name: 'h0'})); "
            "ws.onmessage = (e) => { const m = JSON.parse(e.data); "
            "if (m.type === 'problem') document.title = m.message; }; }"
        )
        expect(page).to_have_title(re.compile(r"^this server only watches"), timeout=WAIT)
        assert secured.host.process.poll() is None
        page.goto("about:blank")  # the page's socket closed before the server stops (else uvicorn cancels it)
    finally:
        said = serving.stop()
    assert "Traceback" not in said, said


def test_with_secure_the_page_watches_as_the_watcher_and_runs_as_the_orchestrator(page: Page, secured: Secured) -> None:
    """Without --watch-only: watching goes through the read-only account, the page's own runs
    through the orchestrator's (the page never holds an account either way)."""
    url, orchestrator = secured.url, secured.accounts.url(ORCHESTRATOR_USER, secured.url)
    serving = ServeProcess("--broker", url, "--secure", str(secured.accounts.directory))
    try:
        page.goto(serving.url + "?x=-2&y=5&z=-4")
        expect(page.locator("#run")).to_be_enabled(timeout=WAIT)
        expect(page.locator("#readonly")).to_be_hidden()
        watch(page, "watched-qf")
        ran = gatemesh("run", "--deployed", "watched-qf", *INPUTS, *on(orchestrator))
        assert ran.returncode == 0, ran.stderr
        shows_the_result(page)
        page.locator("#attach").click()  # now run on it from the page: as the orchestrator
        expect(page.locator("#where-label")).to_have_text("on deployment watched-qf", timeout=WAIT)
        shows_the_result(page)
        expect(page.locator("#title")).to_have_text("f = (x + y) * z")  # "on deployment" once: the label's
        page.goto("about:blank")
    finally:
        said = serving.stop()
    assert "Traceback" not in said, said


def watch(page: Page, deployment: str) -> None:
    """Choose the deployment and press Watch; return once the server follows it (as the watcher)."""
    expect(page.locator(f"#deployment option[value={deployment}]")).to_have_count(1, timeout=WAIT)
    page.locator("#deployment").select_option(deployment)
    page.locator("#watch").click()
    expect(page.locator("#status")).to_have_text("watching", timeout=WAIT)
    expect(page.locator("#where-label")).to_have_text(f"on deployment {deployment}, watched as watcher")


def shows_the_result(page: Page) -> None:
    expect(page.locator("#status")).to_have_text("done", timeout=WAIT)
    expect(page.locator("#value")).to_have_text("-12")
    for name, grad in (("x", "-4"), ("y", "-4"), ("z", "3")):
        expect(page.locator(f'#grads tr[data-input="{name}"] td.grad')).to_have_text(grad)


def _same(got: list[str], expected: list[str]) -> None:
    assert sorted(got) == sorted(expected), got


def _count(page: Page, css: str, wanted: int) -> None:
    got = page.locator(css).count()
    assert got == wanted, got
