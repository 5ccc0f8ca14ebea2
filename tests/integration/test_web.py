"""The live view in a real browser: `gatemesh serve` as a process, Chromium driven by Playwright.

Every check reads the page as a user (and a screen reader) would: text of named elements and
the classes of the SVG elements viz/ draws, never pixels. Screenshots go to tests/web_server.SHOTS.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from playwright.sync_api import Locator, Page, expect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect
from websockets.sync.connection import Connection
from websockets.typing import Origin

from broker.launch import mosquitto
from broker.security import SecureDir
from orchestrator.compiler import compile_source
from orchestrator.examples import EXAMPLES
from orchestrator.reference import evaluate
from tests.processes import gatemesh
from tests.web_server import SHOTS, ServeProcess

pytestmark = [pytest.mark.integration, pytest.mark.browser]

QF = "(x+y)*z"
QF_LINK = "?expr=(x%2By)*z&x=-2&y=5&z=-4&run=1"
WAIT = 20_000  # ms: a deploy on gate hosts, an embedded broker, a slow shared machine


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    """`gatemesh serve --hosts 2` with no broker: the embedded one, as a user starts it."""
    serving = ServeProcess("--hosts", "2")
    yield serving
    print(serving.stop())


@pytest.fixture(scope="module")
def hosts_server(mosquitto_url: str) -> Iterator[ServeProcess]:
    """`gatemesh serve --hosts 2` on Mosquitto: two gate host processes of its own."""
    serving = ServeProcess("--broker", mosquitto_url, "--hosts", "2")
    yield serving
    print(serving.stop())  # the server's log, shown with a failure


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def svg_texts(page: Page, figure: str, css: str) -> list[str]:
    """The words of every SVG <text> of class `css` in #figure (its hover <title> left out)."""
    found: list[str] = page.locator(f"#{figure} svg text.{css.replace(' ', '.')}").evaluate_all(
        "els => els.map(e => Array.from(e.childNodes).filter(n => n.nodeType === 3)"
        ".map(n => n.textContent).join('').trim())"
    )
    return found


def eventually(check: Callable[[], object], timeout: float = WAIT / 1000) -> None:
    """Until `check` stops raising AssertionError (the page redraws a few times a second)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def pending(page: Page) -> dict[str, str]:
    """key -> id of every message the page lists as sent and not delivered."""
    listed: dict[str, str] = page.locator("#pending").evaluate(
        "list => Object.fromEntries(Array.from(list.querySelectorAll('li[data-id]'), "
        "li => [li.dataset.key, li.dataset.id]))"
    )
    return listed


def act(page: Page, key: str, action: str = "deliver") -> None:
    """Wait until message `key` is listed, then click its `action` button."""
    eventually(lambda: _listed(page, key))
    page.locator(f'#pending li[data-key="{key}"] button.{action}').click()
    eventually(lambda: _gone(page, key))


def _listed(page: Page, key: str) -> None:
    assert key in pending(page), f"{key} not in {sorted(pending(page))}"


def _gone(page: Page, key: str) -> None:
    assert key not in pending(page)


def values_shown(page: Page, expected: set[str]) -> None:
    eventually(lambda: _values_are(page, expected))


def _values_are(page: Page, expected: set[str]) -> None:
    shown = {t for t in svg_texts(page, "circuit", "value") if t}
    assert shown == expected, shown


def test_a_shareable_link_runs_at_once_and_shows_the_numbers(page: Page, server: ServeProcess) -> None:
    page.goto(server.url + QF_LINK)
    expect(page.locator("#value")).to_have_text("-12", timeout=WAIT)
    for name, grad in (("x", "-4"), ("y", "-4"), ("z", "3")):
        expect(page.locator(f'#grads tr[data-input="{name}"] td.grad')).to_have_text(grad)
    expect(page.locator("#status")).to_have_text("done")
    eventually(lambda: _sorted_equal(svg_texts(page, "circuit", "value"), ["-2.00", "5.00", "-4.00", "3.00", "-12.00"]))
    eventually(lambda: _sorted_equal(svg_texts(page, "circuit", "grad"), ["-4.00", "-4.00", "3.00", "-4.00", "1.00"]))
    assert page.locator("#lamport svg line.msg.forward").count() == 5
    expect(page.locator("#log li")).to_have_count(16)
    expect(page.locator("#log li").nth(0)).to_have_text("the orchestrator feeds input x = -2")
    expect(page.locator("#history >> xpath=..")).to_be_hidden()  # no choices to go back to: not a stepped run
    shot(page, "shareable-link")
    page.locator("#where").select_option("hosts")
    page.locator("#drop").fill("0.1")
    page.locator("#seed").fill("7")
    page.locator("#seed").dispatch_event("change")
    shared = re.compile(r"&where=hosts&faults=drop%3D0\.1%2Cseed%3D7&run=1$")  # how the exercise runs, too
    expect(page.locator("#share")).to_have_attribute("href", shared)
    page.locator("#drop").fill("0")
    page.locator("#drop").dispatch_event("change")  # a seed alone changes nothing: not in the link
    expect(page.locator("#share")).to_have_attribute("href", re.compile(r"&where=hosts&run=1$"))
    page.goto(server.url)
    expect(page.locator("#source")).to_have_value("(x+y)*z", timeout=WAIT)  # the room's last run, in the form
    page.locator("#source").fill("")
    expect(page.locator("#share")).to_be_hidden()  # nothing to share
    page.goto(server.url + "?expr=x+y%20*%202&x=1&y=3&run=1")  # typed by hand: a plus is a plus
    expect(page.locator("#value")).to_have_text("7", timeout=WAIT)
    expect(page.locator("#share")).to_have_attribute(
        "href",
        re.compile(r"^/\?room=own&expr=x%2By%20\*%202&x=1&y=3&run=1$"),  # each opener alone
    )
    page.goto(server.url + "?expr=%28x%2By%29+*+z&x=-2&y=5&z=-4&run=1")  # an older link: '+' a space, %2B a plus
    expect(page.locator("#value")).to_have_text("-12", timeout=WAIT)
    page.goto(server.url + "?example=5&run=1")  # the sigmoid neuron: a number as the sentences write it
    expect(page.locator("#value")).to_have_text("0.731059", timeout=WAIT)
    expect(page.locator("#value")).to_have_attribute("title", "0.7310585786300049")  # the exact one on hover
    expect(page.locator('#grads tr[data-input="w0"] td.grad')).to_have_text("-0.196612")
    page.goto(server.url + "?example=8&run=1")  # x * x
    expect(page.locator("#summary")).to_contain_text("2 gates (input 1, mul 1), 2 edges, 1 input, in", timeout=WAIT)
    page.goto(server.url + "?example=1")  # an example by its number: shown, ready to run
    expect(page.locator("#example")).to_have_value("0", timeout=WAIT)
    expect(page.locator("#source")).to_have_value("x * y")
    page.goto(server.url + "?example=1&faults=dup%3D1%2Cdelay%3D0-20ms%2Cseed%3D3&run=1")
    expect(page.locator("#where-label")).to_contain_text("dup=1,delay=0-20ms", timeout=WAIT)
    expect(page.locator("#dup")).to_have_value("1")
    expect(page.locator("#delay")).to_have_value("20")
    page.goto(server.url + "?example=1&faults=dup%3D0.25%2Cdelay%3D5-15ms%2Creorder%2Cseed%3D2&run=1")
    expect(page.locator("#where-label")).to_contain_text("faults dup=0.25,delay=5-15ms,reorder,seed=2", timeout=WAIT)
    expect(page.locator("#delay-from")).to_have_value("5")  # every part of the spec, none dropped
    expect(page.locator("#reorder")).to_be_checked()
    page.goto(server.url + "?expr=step*x&in%3Astep=2&x=3&run=1")  # an input named like one of the link's words
    expect(page.locator("#value")).to_have_text("6", timeout=WAIT)
    expect(page.locator("#share")).to_have_attribute("href", re.compile(r"[?&]in%3Astep=2&x=3&run=1$"))
    for link, where, said in (
        ("?example=102&run=1", "#error", "example 102: there are 8 worked examples (1 to 8)"),  # as the link counts
        ("?example=0&run=1", "#problem", "example=0: give the number of a worked example, from 1"),
        ("?example=1&faults=dup%3D1%2Closs%3D2&run=1", "#problem", "faults: loss=2: the page knows drop=P, dup=P"),
        ("?example=9", "#problem", "example 9: there are 8 worked examples (1 to 8)"),  # shown, not run: said too
    ):
        page.goto(server.url + link)
        expect(page.locator(where)).to_contain_text(said, timeout=WAIT)
        if where == "#error":
            expect(page.locator("#problem")).to_be_hidden()  # said once
    expect(page.locator("#source")).to_have_value("")
    page.goto(server.url + "?expr=x*y&x=2&y=3&faults=drop%3Dbanana&run=1")  # the rest of the link still opens
    expect(page.locator("#problem")).to_contain_text("faults: drop=banana", timeout=WAIT)
    expect(page.locator("#source")).to_have_value("x*y")
    expect(page.locator("#status")).not_to_have_text("done")  # not run: not with faults it cannot read
    page.goto(server.url + "?expr=x*y&x=2&y=3&where=mars&step=yes&run=1")  # words it cannot read: said, not run
    said = "step=yes: give step=0 or 1; where=mars: give where=here or hosts (not run)"
    expect(page.locator("#problem")).to_have_text(said, timeout=WAIT)
    expect(page.locator("#source")).to_have_value("x*y")
    expect(page.locator("#status")).not_to_have_text("done")


def test_an_edited_source_is_no_longer_the_example(page: Page, server: ServeProcess) -> None:
    """The example and its lesson stayed above a source edited into something else."""
    page.goto(server.url + "?room=examples")
    expect(page.locator("#example option")).to_have_count(9, timeout=WAIT)
    page.locator("#example").select_option("1")
    expect(page.locator("#lesson")).not_to_be_empty()
    page.locator("#source").fill("x * y + z")
    expect(page.locator("#example")).to_have_value("")
    expect(page.locator("#lesson")).to_be_empty()
    # a link whose source is an example's shows that example and its lesson (it showed "choose one…")
    example = EXAMPLES[4]
    page.goto(server.url + "?room=examples-link&expr=" + quote(example.source))
    expect(page.locator("#example")).to_have_value("4", timeout=WAIT)
    expect(page.locator("#lesson")).to_have_text(example.lesson)


def _sorted_equal(got: list[str], expected: list[str]) -> None:
    assert sorted(got) == sorted(expected), got


def test_a_picture_shrunk_to_a_small_screen_can_be_seen_at_its_own_size(page: Page, server: ServeProcess) -> None:
    """At 1024x768 (a classroom projector) the neuron's figure is shrunk to the page; "actual
    size" shows it as drawn, with scrollbars, and "fit to width" shrinks it again."""
    page.set_viewport_size({"width": 1024, "height": 768})
    page.goto(server.url + "?expr=sigmoid(w0*x0%20%2B%20w1*x1%20%2B%20w2)&w0=2&x0=-1&w1=-3&x1=-2&w2=-3&run=1")
    expect(page.locator("#status")).to_have_text("done", timeout=WAIT)
    svg, button, note = (
        page.locator("#circuit svg"),
        page.locator('.zoom[data-for="circuit"]'),
        page.locator("#circuit-note"),
    )
    drawn = float(svg.get_attribute("width") or 0)
    expect(button).to_have_text("actual size")
    expect(note).to_contain_text("shrunk to fit the page")
    eventually(lambda: _shown_narrower(svg, drawn - 50))
    button.click()
    expect(button).to_have_text("fit to width")
    expect(note).to_contain_text("scroll inside the box for the rest of the diagram")
    eventually(lambda: _shown_as_drawn(svg, drawn))
    shot(page, "circuit-actual-size")
    button.click()
    expect(note).to_contain_text("shrunk to fit the page")
    eventually(lambda: _shown_narrower(svg, drawn - 50))
    page.set_viewport_size({"width": 1600, "height": 1000})  # room enough: shown as drawn, nothing to switch
    expect(note).not_to_contain_text("shrunk")
    eventually(lambda: _shown_as_drawn(svg, drawn))


def test_a_lamport_diagram_that_fits_is_not_said_shrunk_when_fit_to_width(page: Page, server: ServeProcess) -> None:
    """The diagram's band of gate names (a copy of its top, hidden unless it scrolls) was taken
    for the picture: 0 px wide, so "fit to width" always said "shrunk to fit the page"."""
    page.set_viewport_size({"width": 1600, "height": 1000})
    page.goto(server.url + QF_LINK + "&room=fits")
    expect(page.locator("#status")).to_have_text("done", timeout=WAIT)
    button, note = page.locator('.zoom[data-for="lamport"]'), page.locator("#lamport-note")
    svg = page.locator("#lamport > svg")
    drawn = float(svg.get_attribute("width") or 0)
    assert drawn < 1000  # (x+y)*z: six lines fit the page as drawn
    page.evaluate("() => zoom(document.querySelector('.zoom[data-for=\"lamport\"]'))")  # as its button does
    expect(button).to_have_text("actual size")
    eventually(lambda: _shown_as_drawn(svg, drawn))
    expect(note).not_to_contain_text("shrunk")


def _shown_narrower(svg: Locator, width: float) -> None:
    """The picture's width on the page (measured again if it was redrawn meanwhile) is below `width`."""
    box = svg.bounding_box()
    assert box is not None
    assert box["width"] < width, box


def _shown_as_drawn(svg: Locator, width: float) -> None:
    box = svg.bounding_box()
    assert box is not None
    assert box["width"] == pytest.approx(width, abs=1), box


def test_a_shared_exercise_gives_each_who_opens_it_a_room_of_their_own(page: Page, server: ServeProcess) -> None:
    """The shared room is what every page at the plain address sees; a page in a room of its
    own runs what no other page sees or replaces, and its share link gives each opener one."""
    page.goto(server.url + "?expr=x*y&x=2&y=3&run=1")  # the shared room
    expect(page.locator("#value")).to_have_text("6", timeout=WAIT)
    expect(page.locator("#room")).to_be_hidden()
    student = page.context.new_page()
    student.goto(server.url + "?room=own&" + QF_LINK[1:])
    expect(student.locator("#value")).to_have_text("-12", timeout=WAIT)
    room = re.fullmatch(r".*[?&]room=(r[0-9a-z]+)&.*", student.url)
    assert room is not None, student.url  # kept in the address: a reload finds the same room
    expect(student.locator("#room")).to_have_text(f"room {room.group(1)}")
    expect(student.locator("#share")).to_have_attribute("href", re.compile(r"^/\?room=own&expr="))
    expect(student.locator("#where option[value=hosts]")).to_be_disabled()  # the shared room's hosts
    page.wait_for_timeout(500)
    expect(page.locator("#value")).to_have_text("6")  # the shared room's run stands
    pair = page.context.new_page()
    pair.goto(server.url + f"?room={room.group(1)}")  # a second page naming the room joins it
    expect(pair.locator("#value")).to_have_text("-12", timeout=WAIT)
    expect(pair.locator("#source")).to_have_value("(x+y)*z")  # its form shows what ran, ready to run again
    expect(pair.locator('#inputs input[data-name="y"]')).to_have_value("5")
    expect(student.locator("#our-hosts")).to_contain_text("they are the shared room's")
    pair.locator("#source").fill("x - y")
    expect(pair.locator('#inputs input[data-name="z"]')).to_have_count(0, timeout=WAIT)  # compiled: x and y
    pair.locator('#inputs input[data-name="x"]').fill("10")
    pair.locator('#inputs input[data-name="y"]').fill("4")
    pair.locator("#run").click()
    expect(student.locator("#value")).to_have_text("6", timeout=WAIT)  # the other page's run, and its form:
    expect(student.locator("#source")).to_have_value("x - y")  # Run, Restart and the link do what is shown
    expect(student.locator('#inputs input[data-name="x"]')).to_have_value("10")
    expect(student.locator("#share")).to_have_attribute("href", re.compile(r"expr=x%20-%20y&x=10&y=4&run=1$"))
    expect(pair.locator("#source")).to_have_value("x - y")  # the page that ran it keeps its own form
    student.locator("#share-own").uncheck()
    expect(student.locator("#share")).to_have_attribute("href", re.compile(rf"^/\?room={room.group(1)}&expr="))
    shot(student, "room-of-my-own")
    refused = page.context.new_page()
    refused.goto(server.url + "?room=no%20room")
    expect(refused.locator("#problem")).to_have_text(
        "room 'no room': a room's name is letters, digits, '_' and '-', 40 at most", timeout=WAIT
    )
    expect(refused.locator("#connection")).to_have_text("not connected")
    typed = page.context.new_page()
    typed.goto(server.url + "?room=Own&expr=x*y+z&x=1&y=2&z=3&run=1")  # a '+' typed by hand stays a plus
    expect(typed.locator("#value")).to_have_text("5", timeout=WAIT)
    expect(typed.locator("#source")).to_have_value("x*y+z")
    assert re.fullmatch(r".*\?room=r[0-9a-z]+&expr=x\*y\+z&x=1&y=2&z=3&run=1", typed.url), typed.url
    for opened in (student, pair, refused, typed):
        opened.close()
    page.locator("#where").select_option("hosts")  # gate hosts are the shared room's: its link opens there
    expect(page.locator("#share")).to_have_attribute("href", re.compile(r"^/\?expr=x\*y&x=2&y=3&where=hosts&run=1$"))
    expect(page.locator("#share-own")).to_be_disabled()
    expect(page.locator("#share-own")).not_to_be_checked()  # as the link is made: no room of one's own
    page.locator("#where").select_option("here")
    expect(page.locator("#share-own")).to_be_checked()


def test_a_pass_may_be_given_its_timeout_on_the_page_and_in_a_link(page: Page, server: ServeProcess) -> None:
    """Every message dropped: the pass fails after the timeout the link gives, naming who waits,
    and the page's own link keeps that timeout."""
    page.goto(server.url + "?expr=x*y&x=2&y=3&faults=drop%3D1&timeout=0.5&run=1")
    expect(page.locator("#timeout")).to_have_value("0.5")
    expect(page.locator("#error")).to_contain_text("did not finish within 0.5 s", timeout=WAIT)
    expect(page.locator("#share")).to_have_attribute("href", re.compile(r"&faults=drop%3D1&timeout=0\.5&run=1$"))
    page.locator('#inputs input[data-name="x"]').fill("abc")  # the link carries what was typed, not NaN
    expect(page.locator("#share")).to_have_attribute(
        "href", re.compile(r"x=abc&y=3&faults=drop%3D1&timeout=0\.5&run=1$")
    )
    page.locator('#inputs input[data-name="x"]').fill("2")
    page.locator("#timeout").fill("0")
    page.locator("#run").click()
    expect(page.locator("#problem")).to_have_text("timeout: give seconds above 0, up to 600 (or leave it blank)")
    page.goto(server.url + "?expr=x*y&x=2&y=3&timeout=forever&run=1")
    expect(page.locator("#problem")).to_have_text("timeout=forever: give seconds above 0, up to 600 (not run)")
    page.goto(server.url + "?expr=x%20%3D%202&run=1")  # a constant: a value and no gradients, said
    expect(page.locator("#no-grads")).to_contain_text("(no inputs: no gradients", timeout=WAIT)
    page.goto(server.url + "?expr=x*y&x=abc&y=3&run=1")  # said as the Run button says it, not as a bad request
    expect(page.locator("#problem")).to_have_text("x=abc: abc is not a number (not run)")
    page.locator('#inputs input[data-name="x"]').fill("0x10")  # a number to JavaScript, not to the command line
    page.locator("#run").click()
    expect(page.locator("#problem")).to_have_text("x: 0x10 is not a number")


def test_a_bad_expression_shows_where_it_is_wrong(page: Page, server: ServeProcess) -> None:
    room = "?room=compiling"
    page.goto(server.url + room)  # a room of its own: no run another test starts fills its form
    page.locator("#source").fill("r = w * 2\ny = x * 3")
    warning = page.locator("#compile-warning")
    expect(warning).to_have_text(
        "line 1, column 1: the value given to r here is never read by the output (y); its gates are left out\n"
        "w stays an input, with gradient 0",
        timeout=WAIT,
    )
    shot(page, "compile-warning")
    page.locator("#source").fill("q = x + y\nf = q @ z")
    problem = page.locator("#compile-error")
    expect(problem).to_contain_text("line 2, column", timeout=WAIT)
    expect(problem).to_contain_text("@")
    expect(warning).to_be_hidden()
    page.goto(server.url + room + "&" + QF_LINK[1:])
    expect(page.locator("#value")).to_have_text("-12", timeout=WAIT)
    page.locator("#source").fill("(x+y)*z)")
    expect(problem).to_contain_text("line 1, column", timeout=WAIT)
    page.locator("#run").click()  # said at once; the last run's numbers and pictures stay
    mend = "the source does not compile: mend it first (the box under it says where)"
    expect(page.locator("#problem")).to_have_text(mend)
    expect(page.locator("#status")).to_have_text("done")
    expect(page.locator("#circuit svg")).to_have_count(1)
    projector = page.context.new_page()  # a second page, connected all along, typing nothing
    projector.goto(server.url + room)
    expect(projector.locator("#circuit svg")).to_have_count(1, timeout=WAIT)
    page.goto(server.url + room + "&expr=(x%2B&x=1&run=1")  # the same through a link that runs
    expect(page.locator("#compile-error")).to_contain_text("line 1, column", timeout=WAIT)
    expect(page.locator("#status")).to_have_text("failed")
    expect(page.locator("#error")).to_have_text("the source does not compile: the box under it says where")
    shot(page, "bad-expression")
    page.locator("#source").fill("x * y")  # mended: the run's error was of the source before
    expect(page.locator("#compile-error")).to_be_hidden(timeout=WAIT)
    expect(page.locator("#error")).to_be_hidden()
    page.locator("#run").click()  # y is blank: the form says so, alone
    expect(page.locator("#problem")).to_contain_text("give y a value", timeout=WAIT)
    expect(page.locator("#error")).to_be_hidden()
    page.locator("#source").fill("x * y)")  # another edit: what the form said is of the last source
    expect(page.locator("#problem")).to_be_hidden(timeout=WAIT)
    expect(projector.locator("#compile-error")).to_contain_text("line 1, column", timeout=WAIT)
    expect(projector.locator("#circuit svg")).to_have_count(0)  # not the last run's circuit and values
    page.goto(server.url + room + "&" + QF_LINK[1:])  # a good run, from the other page, clears the run's error here
    expect(projector.locator("#value")).to_have_text("-12", timeout=WAIT)
    expect(projector.locator("#compile-error")).to_be_hidden()
    projector.close()


def test_a_link_without_a_value_asks_for_it_as_the_page_does(page: Page, server: ServeProcess) -> None:
    """A link that runs at once, its y left out: the page answered with the command line's advice
    ("give them as name=value"), beside the empty field it means."""
    page.goto(server.url + "?room=own&expr=x*y&x=1&run=1")
    expect(page.locator("#error")).to_have_text("no value for y: fill in its field above, then run again", timeout=WAIT)
    expect(page.locator('#inputs input[data-name="y"]')).to_have_value("")


def test_a_result_under_a_source_edited_since_says_it_is_the_last_runs(page: Page, server: ServeProcess) -> None:
    """A run of 1/x, then q = x + y; f = q * z typed and refused for its blank inputs: "value =
    0.333333" stood under the new source as if it were its value."""
    page.goto(server.url + "?room=stale&expr=1%2Fx&x=3&run=1")
    expect(page.locator("#value")).to_have_text("0.333333", timeout=WAIT)
    expect(page.locator("#stale")).to_have_count(0)
    page.locator("#source").fill("q = x + y; f = q * z")
    expect(page.locator("#stale")).to_have_text(
        "the last run's, of f = 1 / x: the source has changed since (Run runs it)", timeout=WAIT
    )
    expect(page.locator("#result")).to_have_class(re.compile(r"\bstale\b"))
    shot(page, "stale-result")
    page.locator("#source").fill("1/x")  # the source that ran, again
    expect(page.locator("#stale")).to_have_count(0)
    expect(page.locator("#result")).not_to_have_class(re.compile(r"\bstale\b"))
    # another value typed (Restart runs the last run's again): the result is still x = 3's
    field = page.locator('#inputs input[data-name="x"]')
    field.fill("10")
    expect(page.locator("#stale")).to_have_text(
        "the last run's, of f = 1 / x: the fields hold other values (Run runs them)", timeout=WAIT
    )
    field.fill("3.0")  # the value that ran, written otherwise
    expect(page.locator("#stale")).to_have_count(0)


def test_bad_requests_get_a_message_not_a_traceback(page: Page, server: ServeProcess) -> None:
    page.goto(server.url + "?room=checks")  # a room of its own: no run another test starts fills its form
    expect(page.locator("#connection")).to_have_text("connected", timeout=WAIT)
    page.evaluate(
        "() => { const ws = new WebSocket('ws://' + location.host + '/ws'); "
        "ws.onopen = () => ws.send(JSON.stringify({type: 'deliver', id: 'rm -rf'})); "
        "ws.onmessage = (e) => { const m = JSON.parse(e.data); "
        "if (m.type === 'problem') document.title = m.message; }; }"
    )
    expect(page).to_have_title(re.compile(r"bad request: deliver.id: String should match pattern"), timeout=WAIT)
    page.evaluate(  # a binary frame closed the connection with a traceback in the server's log
        "() => { const ws = new WebSocket('ws://' + location.host + '/ws'); "
        "ws.onopen = () => ws.send(new Uint8Array([1, 2, 3])); "
        "ws.onmessage = (e) => { const m = JSON.parse(e.data); "
        "if (m.type === 'problem') document.title = m.message; }; }"
    )
    expect(page).to_have_title(re.compile(r"^bad request: request: Invalid JSON"), timeout=WAIT)
    page.locator("#source").fill("x * y")
    page.locator("#inputs input[data-name=x]").fill("2", timeout=WAIT)
    page.locator("#run").click()  # y has no value
    expect(page.locator("#problem")).to_have_text(
        "give y a value (every input needs one, even one the output never reads)", timeout=WAIT
    )
    page.locator("#inputs input[data-name=y]").fill("abc")
    page.locator("#run").click()
    expect(page.locator("#problem")).to_have_text("y: abc is not a number", timeout=WAIT)
    page.locator("#inputs input[data-name=y]").fill("1e400")
    page.locator("#run").click()
    expect(page.locator("#problem")).to_have_text("y: 1e400 is too large (a value must be finite)", timeout=WAIT)
    page.locator("#inputs input[data-name=y]").fill("3")
    page.locator("#drop").fill("2")
    page.locator("#run").click()
    expect(page.locator("#problem")).to_have_text("drop: give a probability from 0 to 1", timeout=WAIT)
    page.locator("#drop").fill("0")
    page.locator("#seed").fill("2.5")
    page.locator("#run").click()
    expect(page.locator("#problem")).to_have_text("seed: give a whole number from 0", timeout=WAIT)
    page.locator("#seed").fill("0")
    page.locator("#delay-from").fill("20")
    page.locator("#delay").fill("5")
    page.locator("#run").click()
    expect(page.locator("#problem")).to_have_text("delay: from 20 ms to 5 ms; give the shorter first", timeout=WAIT)


def test_a_page_of_another_origin_may_not_connect(server: ServeProcess) -> None:
    url = server.url.replace("http://", "ws://") + "ws"
    with pytest.raises(InvalidStatus, match="403"):
        connect(url, origin=Origin("http://evil.example"), open_timeout=10)
    with connect(url, origin=Origin(server.url.rstrip("/")), open_timeout=10) as same:
        assert json.loads(same.recv(timeout=10))["type"] == "choices"
    port = int(server.url.rstrip("/").rsplit(":", 1)[1])
    rebound = socket.create_connection(("127.0.0.1", port), timeout=10)  # a site whose name now points here
    with pytest.raises(InvalidStatus, match="403"):
        connect(f"ws://evil.example:{port}/ws", sock=rebound, origin=Origin(f"http://evil.example:{port}"))
    malformed = socket.create_connection(("127.0.0.1", port), timeout=10)  # refused, not a traceback
    malformed.sendall(
        b"GET /ws HTTP/1.1\r\nHost: [::1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert malformed.recv(100).startswith(b"HTTP/1.1 403")
    malformed.close()
    named = socket.create_connection(("127.0.0.1", port), timeout=10)
    with connect(f"ws://localhost:{port}/ws", sock=named, origin=Origin(f"http://localhost:{port}")) as same:
        assert json.loads(same.recv(timeout=10))["type"] == "choices"


def test_serve_binds_loopback_unless_told_and_says_so(mosquitto_url: str) -> None:
    bad = gatemesh("serve", "--bind", "localhost:80", "--broker", mosquitto_url)
    assert bad.returncode == 1
    assert "--bind 'localhost:80': give an IP address" in bad.stderr
    serving = ServeProcess("--bind", "0.0.0.0", "--broker", mosquitto_url)
    assert serving.url.startswith("http://0.0.0.0:")
    said = serving.stop()
    assert "warning: --bind 0.0.0.0: anyone who can reach this address can run circuits" in said
    loopback = ServeProcess("--broker", mosquitto_url)
    assert loopback.url.startswith("http://127.0.0.1:")
    port = loopback.url.rstrip("/").rsplit(":", 1)[1]
    taken = gatemesh("serve", "--port", port, "--broker", mosquitto_url)
    assert taken.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in taken.stderr
    assert "warning" not in loopback.stop()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_stops_quietly_closing_the_pages_connections(mosquitto_url: str, signum: signal.Signals) -> None:
    """Ctrl-C (or a service manager's SIGTERM) with a page connected: the page is told the
    server is going (1012), and the server says nothing but its exit."""
    serving = ServeProcess("--broker", mosquitto_url)
    port = serving.url.rstrip("/").rsplit(":", 1)[1]
    with connect(f"ws://127.0.0.1:{port}/ws") as page:
        assert json.loads(page.recv(timeout=10))["type"] == "choices"
        serving.process.send_signal(signum)
        closed = _closing(page)
    assert serving.process.wait(timeout=20) == 0
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1012
    said = serving.stop()
    assert "Traceback" not in said, said
    assert "Exception in ASGI application" not in said, said


def _closing(page: Connection) -> ConnectionClosed:
    """How the server closed the page's connection (whatever it pushed before, read and left)."""
    while True:
        try:
            page.recv(timeout=20)
        except ConnectionClosed as closed:
            return closed


def test_step_mode_on_gate_hosts_delivers_in_any_order(page: Page, hosts_server: ServeProcess) -> None:
    """The messages wait at the broker until the page delivers them; the gates run on two host
    processes; the circuit shows exactly what has been delivered, in the order chosen."""
    page.goto(hosts_server.url + QF_LINK + "&step=1&where=hosts")
    expect(page.locator("#status")).to_have_text("stepping", timeout=WAIT)
    expect(page.locator("#where-label")).to_contain_text("gate hosts")
    eventually(lambda: _same(set(pending(page)), {"feed orchestrator x", "feed orchestrator y", "feed orchestrator z"}))
    values_shown(page, set())
    act(page, "feed orchestrator z")  # z first: the default order is x, y, z
    eventually(lambda: _listed(page, "forward z z"))
    expect(page.locator('#pending li[data-key="forward z z"]')).to_contain_text("forward -4.00: z \u2192 f")
    act(page, "forward z z")
    values_shown(page, {"-4.00"})
    act(page, "feed orchestrator y")
    act(page, "forward y y")
    values_shown(page, {"-4.00", "5.00"})
    shot(page, "step-mode-partial")
    act(page, "feed orchestrator x")
    act(page, "forward x x")
    act(page, "forward add_1 add_1", "duplicate")  # one copy now, the second waits for the student
    values_shown(page, {"-4.00", "5.00", "-2.00", "3.00"})
    copy = page.locator('#pending li[data-key="forward add_1 add_1 #2"]')
    expect(copy).to_contain_text(re.compile(r"forward 3\.00: add_1 \u2192 f \(add_1:\d+\) \(second copy\)"))
    # the Lamport diagram draws the second copy waiting, as the list shows it
    eventually(lambda: _count_is(page.locator("#lamport svg line.msg.undelivered.duplicate").count(), 1))
    expect(page.locator("#log")).to_contain_text("you duplicate forward 3.00: add_1 \u2192 f")
    eventually(lambda: _listed(page, "forward f f"))
    expect(page.locator('#pending li[data-key="forward f f"]')).to_contain_text("f \u2192 orchestrator")
    act(page, "forward f f")
    values_shown(page, {"-4.00", "5.00", "-2.00", "3.00", "-12.00"})
    act(page, "forward add_1 add_1 #2")  # late: f has fired, and the copy changes nothing
    eventually(lambda: _count_is(page.locator("#lamport svg line.msg.duplicate:not(.undelivered)").count(), 1))
    eventually(lambda: _count_is(page.locator("#lamport svg line.msg.undelivered.duplicate").count(), 0))
    expect(page.locator("#log")).to_contain_text("(you, in step mode, duplicated it)")  # no injector: only you
    assert {t for t in svg_texts(page, "circuit", "grad") if t} == set()  # no gradient delivered yet
    act(page, "backward orchestrator f 0")
    act(page, "backward f z 1")  # z's gradient before add_1's
    eventually(lambda: _same({t for t in svg_texts(page, "circuit", "grad") if t}, {"1.00", "3.00"}))
    expect(page.locator("#status")).to_have_text("stepping")
    page.locator("#deliver-all").click()
    expect(page.locator("#value")).to_have_text("-12", timeout=WAIT)
    expect(page.locator('#grads tr[data-input="x"] td.grad')).to_have_text("-4")
    expect(page.locator('#grads tr[data-input="z"] td.grad')).to_have_text("3")
    # every held send, listed before it was delivered, is drawn with the number it carried
    values = {"-2.00", "5.00", "-4.00", "3.00", "-12.00"}
    eventually(lambda: _same(set(svg_texts(page, "lamport", "value")), values))
    eventually(lambda: _same(set(svg_texts(page, "lamport", "grad")), {"1.00", "-4.00", "3.00"}))
    assert svg_texts(page, "lamport", "note") == []
    lamport_hosts = page.locator("#lamport svg text.host").all_text_contents()
    assert any(name.endswith("-h1") for name in lamport_hosts)
    assert any(name.endswith("-h2") for name in lamport_hosts)
    history = page.locator("#history li").all_inner_texts()
    assert history[1].startswith("deliver feed -4.00: orchestrator")
    shot(page, "step-mode-done")


def _within(part: set[str], whole: set[str]) -> None:
    assert part <= whole, whole


def _same(got: set[str], expected: set[str]) -> None:
    assert got == expected, got


def test_a_room_of_its_own_does_not_list_the_shared_rooms_run_on_its_hosts(
    page: Page, hosts_server: ServeProcess
) -> None:
    """The shared room's deployment for a run on its gate hosts is no live deployment: a room of
    its own listed it by its internal name, and "Run on it" ran there on hosts the page says
    are the shared room's alone."""
    apart = page.context.new_page()
    apart.goto(hosts_server.url + "?room=apart")  # open before the run: it hears the deployment being made
    port = hosts_server.url.rstrip("/").rsplit(":", 1)[1]
    expect(apart.locator("#cluster-hosts")).to_contain_text(f"web{port}-h1", timeout=WAIT)  # the cluster is shown
    page.goto(hosts_server.url + QF_LINK + "&where=hosts")
    expect(page.locator("#value")).to_have_text("-12", timeout=WAIT)
    expect(page.locator("#where-label")).to_contain_text("gate hosts")
    time.sleep(1)  # the page redraws a few times a second: what it shows now, it keeps showing
    listed = apart.locator("#deployment option").all_text_contents()
    assert not any(text.startswith("run-") for text in listed), listed
    apart.close()


def test_a_dropped_message_fails_the_run_naming_the_waiting_gate(page: Page, hosts_server: ServeProcess) -> None:
    page.goto(hosts_server.url + QF_LINK + "&step=1")
    expect(page.locator("#status")).to_have_text("stepping", timeout=WAIT)
    for leaf in ("x", "y", "z"):
        act(page, f"feed orchestrator {leaf}")
        act(page, f"forward {leaf} {leaf}")
    eventually(lambda: _listed(page, "forward add_1 add_1"))
    pin = page.locator('#pending li[data-key="forward add_1 add_1"] button.hold')
    expect(pin).to_have_text("pin")  # what it does: "deliver all" leaves the message waiting
    expect(pin).to_have_attribute("title", re.compile("deliver all.* leaves it waiting"))
    act(page, "forward add_1 add_1", "drop")
    expect(page.locator("#status")).to_have_text("failed", timeout=WAIT)
    error = page.locator("#error")
    expect(error).to_contain_text("nothing is left to deliver")
    expect(error).to_contain_text("mul(f) waits for input(s) add_1")
    expect(page.locator("#value")).to_have_text("never arrived")  # the result box says so, as for one number lost
    expect(page.locator("#value")).to_have_attribute("title", "the output's value never reached the orchestrator")
    log = page.locator("#log li")
    dropped = re.compile(
        r"computes -2 \+ 5 = 3; you drop add\(add_1\)'s forward message \(add_1:\d+\) to mul\(f\) in step mode: "
        r"it is never delivered$"
    )
    expect(log.filter(has_text=dropped)).to_have_count(1)  # with the step that computed it, as a fault's drop
    expect(log.filter(has_text="nothing is left to deliver; probing the gates")).to_have_count(1)
    # drawn as dropped (a cross), and the end of the wait is not called a timeout
    expect(page.locator("#lamport svg g.arrow.dropped")).to_have_count(1)
    expect(page.locator("#lamport svg g.timeout text")).to_have_text("stops waiting")
    shot(page, "dropped-message")


def test_a_run_that_lost_one_gradient_shows_the_numbers_that_did_arrive(page: Page, server: ServeProcess) -> None:
    """add_1's gradient to x dropped: the orchestrator had the value and df/dy, df/dz, but the
    failed run hid them all behind its error. They are shown, and df/dx as never arrived."""
    page.goto(server.url + QF_LINK + "&step=1&room=lost-gradient")
    expect(page.locator("#status")).to_have_text("stepping", timeout=WAIT)
    for leaf in ("x", "y", "z"):
        act(page, f"feed orchestrator {leaf}")
        act(page, f"forward {leaf} {leaf}")
    for key in ("forward add_1 add_1", "forward f f", "backward orchestrator f 0", "backward f add_1 0"):
        act(page, key)
    act(page, "backward add_1 x 0", "drop")
    page.locator("#deliver-all").click()
    expect(page.locator("#status")).to_have_text("failed", timeout=WAIT)
    expect(page.locator("#error")).to_contain_text("arrived: value = -12, d/dy = -4, d/dz = 3 (not d/dx)")
    expect(page.locator("#arrived")).to_have_text("the run failed; what reached the orchestrator before it did:")
    expect(page.locator("#value")).to_have_text("-12")
    grads = page.locator("#grads tr td:nth-child(2)")
    expect(grads).to_have_text(["never arrived", "-4", "3"])
    missing = page.locator('#grads tr[data-input="x"] td.missing')
    expect(missing).to_have_count(1)
    expect(missing).to_have_attribute("title", "its message never reached the orchestrator")
    # each picture's style sheet is its own: the Lamport diagram's `.lost` (a stroked cross) and
    # `.value` (11px) smudged the circuit's "lost" and shrank the result's numbers
    lost = page.locator("#circuit svg text.grad-lost")
    expect(lost).to_have_text(re.compile(r"lost$"))  # its hover's <title>, then its words
    assert lost.evaluate("e => getComputedStyle(e).stroke") == "none"
    assert page.locator("#value").evaluate("e => getComputedStyle(e).fontSize") == "15px"
    # the Lamport diagram, taller than its box, followed the steps down to the newest events
    end = "box => box.scrollHeight > box.clientHeight && box.scrollTop + box.clientHeight >= box.scrollHeight - 4"
    eventually(lambda: _is_true(page.locator("#lamport").evaluate(end)))
    # scrolled down, the box still says which line is which gate: its top band, over the rest
    expect(page.locator("#lamport .heads text.node")).to_contain_text(["orchestrator", "x", "add_1 +", "f *"])
    on_top = """box => { box.scrollIntoView({ block: 'nearest' });
      const band = box.querySelector('.heads').getBoundingClientRect();
      const top = box.getBoundingClientRect().top;
      const over = document.elementFromPoint(band.left + 40, band.top + band.height / 2);
      return box.scrollTop > 0 && Math.abs(band.top - top) < 2 && box.querySelector('.heads').contains(over); }"""
    _is_true(page.locator("#lamport").evaluate(on_top))
    shot(page, "lost-gradient")


def test_time_travel_replays_the_choices_up_to_a_step_then_lets_you_choose_again(
    page: Page, server: ServeProcess
) -> None:
    page.goto(server.url + QF_LINK + "&step=1&where=hosts")  # on gate host processes, on the embedded broker
    expect(page.locator("#status")).to_have_text("stepping", timeout=WAIT)
    expect(page.locator("#where-label")).to_contain_text("gate hosts")
    for key in ("feed orchestrator x", "feed orchestrator y", "feed orchestrator z", "forward x x"):
        act(page, key)
    values_shown(page, {"-2.00"})
    expect(page.locator("#history li")).to_have_count(5)  # the start and four choices
    page.locator('#history button.travel[data-index="2"]').click()  # back to: x and y fed
    eventually(lambda: _same(set(pending(page)), {"forward x x", "forward y y", "feed orchestrator z"}))
    expect(page.locator("#history li")).to_have_count(3)
    values_shown(page, set())
    act(page, "forward y y")  # another choice than last time
    values_shown(page, {"5.00"})
    shot(page, "time-travel")
    page.locator("#deliver-all").click()
    expect(page.locator("#value")).to_have_text("-12", timeout=WAIT)
    expect(page.locator("#cluster-hosts")).to_contain_text("2 hosts online")
    expect(page.locator('#deployment option[value^="run-"]')).to_have_count(0)  # the page's own is no live one


def test_a_second_copy_pinned_to_the_end_is_said_never_delivered(page: Page, server: ServeProcess) -> None:
    page.goto(server.url + QF_LINK + "&step=1")
    expect(page.locator("#status")).to_have_text("stepping", timeout=WAIT)
    act(page, "feed orchestrator x", "duplicate")
    eventually(lambda: _listed(page, "feed orchestrator x #2"))
    pin = page.locator('#pending li[data-key="feed orchestrator x #2"] button.hold')
    pin.click()  # pinned: it stays, and goes nowhere
    expect(pin).to_have_text("unpin")
    page.locator("#deliver-all").click()
    expect(page.locator("#value")).to_have_text("-12", timeout=WAIT)
    expect(page.locator("#deliver-all")).to_be_disabled()  # the run is over: nothing is left to deliver
    expect(page.locator("#pending li.empty")).to_have_text("the run is over: Run or Restart to step through it again")
    never = re.compile(
        r"the run is over; never delivered: feed -2\.00: orchestrator \u2192 x \(orchestrator:\d\) \(second copy\)"
    )
    expect(page.locator("#log li").filter(has_text=never)).to_have_count(1)


def test_deliver_all_says_the_run_waits_on_what_is_pinned(page: Page, server: ServeProcess) -> None:
    page.goto(server.url + QF_LINK + "&step=1&room=pinned")
    expect(page.locator("#status")).to_have_text("stepping", timeout=WAIT)
    eventually(lambda: _listed(page, "feed orchestrator z"))
    pin = page.locator('#pending li[data-key="feed orchestrator z"] button.hold')
    pin.click()
    expect(pin).to_have_text("unpin")
    page.locator("#deliver-all").click()
    waits = "pinned: they wait until you unpin or deliver them, and the run with them"
    expect(page.locator("#pending li.empty")).to_have_text(waits, timeout=WAIT)
    expect(page.locator("#status")).to_have_text("stepping")
    pin.click()  # unpinned: delivered with everything else
    expect(page.locator("#value")).to_have_text("-12", timeout=WAIT)


def test_faults_from_the_page_apply_to_the_next_runs(page: Page, server: ServeProcess) -> None:
    page.goto(server.url + QF_LINK.replace("&run=1", ""))
    expect(page.locator("#inputs input[data-name=z]")).to_have_value("-4", timeout=WAIT)
    page.locator("#dup").fill("1")
    page.locator("#delay").fill("5")
    page.locator("#run").click()
    expect(page.locator("#where-label")).to_contain_text("dup=1", timeout=WAIT)
    expect(page.locator("#value")).to_have_text("-12", timeout=WAIT)  # duplicates change nothing
    expect(page.locator('#grads tr[data-input="x"] td.grad')).to_have_text("-4")
    # every gate's message twice (12 of the 16: the orchestrator's feeds and seed pass no injector)
    eventually(lambda: _count_is(page.locator("#lamport svg line.msg.duplicate").count(), 12))
    expect(page.locator("#progress")).to_contain_text(
        "16 of 16 messages of the pass crossed the broker (feed 3/3, forward 5/5, backward 5/5, report 3/3; "
        "and 12 second copies (duplicates))"
    )
    shot(page, "faults")


FAULT_SAID = re.compile(
    r"holds (\S+)'s (\w+) message \(.*?\) to (.+?) back ([\d.]+) ms|a second copy of (\S+)'s (\w+) message"
)


def fault_choices(page: Page) -> list[tuple[str, ...]]:
    """What the injectors did, as the sentences tell it: which gate's message to whom, held how
    long, and which were copied (message ids and line numbers depend on the order of arrival)."""
    said = page.locator("#log li").all_inner_texts()
    return sorted(tuple(g or "" for g in found.groups()) for line in said for found in FAULT_SAID.finditer(line))


def settled_fault_choices(page: Page) -> list[tuple[str, ...]]:
    """fault_choices once the sentences stop coming: a gate's faults are told when its events
    come, after the result."""
    seen = [fault_choices(page)]

    def unchanged() -> None:
        time.sleep(0.3)
        seen.append(fault_choices(page))
        assert seen[-1] == seen[-2], seen[-2:]

    eventually(unchanged)
    return seen[-1]


def test_a_seeded_run_with_faults_shows_the_same_faults_when_run_again(page: Page, server: ServeProcess) -> None:
    """The page reused a run's gates for the next, and their seeded injectors went on where they
    were: Run again, with the same seed, told another story."""
    page.goto(server.url + QF_LINK.replace("&run=1", "&faults=dup%3D0.5%2Cdelay%3D0-10ms%2Creorder%2Cseed%3D3&run=1"))
    told: list[list[tuple[str, ...]]] = []
    runs: list[str] = []

    def a_new_run_done() -> None:
        run = page.evaluate("() => state.shownRun")
        assert run, "no run shown yet"
        assert run not in runs, run
        assert page.locator("#status").inner_text() == "done", run
        runs.append(run)

    for again in (True, False):
        eventually(a_new_run_done)
        expect(page.locator("#value")).to_have_text("-12")
        told.append(settled_fault_choices(page))
        if again:
            page.locator("#run").click()
    assert len(told[0]) >= 4, told[0]
    assert told[1] == told[0]


def _count_is(got: int, wanted: int) -> None:
    assert got == wanted, got


def _is_true(got: object) -> None:
    assert got is True, got


BIG = " + ".join(f"x*{i}" for i in range(1, 334))  # 999 gates, 2,998 messages a pass


def test_a_thousand_gate_pass_shows_progress_and_the_page_stays_responsive(
    page: Page, hosts_server: ServeProcess
) -> None:
    page.goto(hosts_server.url + "?" + urlencode({"expr": BIG, "x": "2", "run": "1"}))
    expect(page.locator("#status")).to_have_text(re.compile("running|done"), timeout=WAIT)
    started, answered = time.monotonic(), []
    while page.locator("#status").text_content() == "running":
        asked = time.monotonic()
        page.evaluate("() => document.querySelectorAll('#log li').length")
        answered.append(time.monotonic() - asked)
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    expect(page.locator("#value")).to_have_text("111222", timeout=WAIT)
    expect(page.locator('#grads tr[data-input="x"] td.grad')).to_have_text("55611")  # 1 + 2 + ... + 333
    expect(page.locator("#progress")).to_contain_text("2998 of 2998 messages")
    expect(page.locator("#circuit-note")).to_contain_text("999 gates")
    assert page.locator("#circuit svg").count() == 0
    assert max(answered, default=0) < 2.0, answered  # the page kept answering while the pass ran
    pushes = int(page.locator("body").get_attribute("data-pushes") or 0)
    assert pushes < 6 * (elapsed / 0.15 + 10), (pushes, elapsed)  # a few pushes a second, not one per message
    shot(page, "thousand-gates")


def test_a_live_deployment_runs_with_its_hosts_shown(
    page: Page, hosts_server: ServeProcess, mosquitto_url: str
) -> None:
    port = hosts_server.url.rstrip("/").rsplit(":", 1)[1]
    hosts = [f"web{port}-h1", f"web{port}-h2"]
    deployed = gatemesh("deploy", QF, "--name", "live-qf", "--hosts", ",".join(hosts), "--broker", mosquitto_url)
    assert deployed.returncode == 0, deployed.stderr
    try:
        page.goto(hosts_server.url + "?room=fresh")  # a room with no run yet: no values to take
        expect(page.locator("#deployment option[value=live-qf]")).to_have_count(1, timeout=WAIT)
        page.locator("#attach").click()  # no values yet: its fields are shown, to fill first (it ran with none)
        expect(page.locator("#problem")).to_contain_text("give live-qf's inputs their values above", timeout=WAIT)
        page.goto(hosts_server.url + "?x=-2&y=5&z=-4")
        expect(page.locator("#deployment option[value=live-qf]")).to_have_count(1, timeout=WAIT)
        page.locator("#deployment").select_option("live-qf")
        page.locator("#source").fill("(x + ")  # a source that does not compile refuses Run, not Run on it
        expect(page.locator("#compile-error")).to_be_visible(timeout=WAIT)
        page.locator("#run").click()
        expect(page.locator("#problem")).to_contain_text("the source does not compile: mend it first")
        page.locator("#attach").click()
        expect(page.locator("#value")).to_have_text("-12", timeout=WAIT)
        expect(page.locator("#title")).to_have_text("f = (x + y) * z")  # "on deployment live-qf" once: the label's
        expect(page.locator("#where-label")).to_contain_text("deployment live-qf")
        expect(page.locator("#share")).to_be_hidden()  # the fields are live-qf's: the source box is no exercise of it
        expect(page.locator("#problem")).to_be_hidden()  # Run's refusal above was of that click, not of this run
        for host in hosts:
            expect(page.locator("#cluster-hosts")).to_contain_text(host)
        eventually(lambda: _within(set(hosts), set(page.locator("#lamport svg text.host").all_text_contents())))
        shot(page, "live-deployment")
        page.locator("#source").fill("x * y")  # the source's own fields again: its link is offered
        expect(page.locator("#share")).to_have_attribute("href", re.compile(r"expr=x%20\*%20y&"), timeout=WAIT)
        expect(page.locator("#share")).to_be_visible()
    finally:
        gatemesh("undeploy", "live-qf", "--broker", mosquitto_url)


def test_a_big_live_deployment_shows_a_summary_and_progress_not_every_gate(
    page: Page, hosts_server: ServeProcess, mosquitto_url: str, tmp_path: Path
) -> None:
    """5,000 gates and 2,000 inputs (the 65,000-gate case: docs/benchmarks.md): no field per input,
    no drawing, no sentence per message; the circuit counted, the messages counted, the value."""
    port = hosts_server.url.rstrip("/").rsplit(":", 1)[1]
    terms = [f"t{i} = tanh(w{i} * x{i})" for i in range(1000)]
    sums = [f"s{i} = {'t0' if i == 1 else f's{i - 1}'} + t{i}" for i in range(1, 1000)]
    circuit = compile_source("\n".join([*terms, *sums, "f = sigmoid(s999)"]), name="wide")
    circuit.dump(tmp_path / "wide.json")
    hosts = f"web{port}-h1,web{port}-h2"
    deployed = gatemesh(
        "deploy",
        str(tmp_path / "wide.json"),
        "--name",
        "live-wide",
        "--hosts",
        hosts,
        *("--broker", mosquitto_url, "--timeout", "60"),
    )
    assert deployed.returncode == 0, deployed.stderr
    try:
        page.goto(hosts_server.url)
        expect(page.locator("#deployment option[value=live-wide]")).to_have_count(1, timeout=WAIT)
        page.locator("#deployment").select_option("live-wide")
        expect(page.locator("#fill-note")).to_contain_text("2,000 inputs: too many for a field each")
        assert page.locator("#inputs input").count() == 0
        page.locator("#fill").fill("0.1")
        page.locator("#attach").click()
        expected = evaluate(circuit, dict.fromkeys(circuit.inputs, 0.1))
        expect(page.locator("#value")).to_have_attribute("title", repr(expected.value), timeout=WAIT)
        exact = page.locator('#grads tr[data-input="w0"] td.grad').get_attribute("title")
        assert float(exact or "nan") == expected.grads["w0"], exact  # JS writes 4.5e-06 as 0.0000045
        expect(page.locator("#grads tr")).to_have_count(24)
        expect(page.locator("#result")).to_contain_text("and 1976 more gradients")
        expect(page.locator("#summary")).to_contain_text(
            "5,000 gates (input 2,000, mul 1,000, tanh 1,000, add 999, sigmoid 1), 4,999 edges, 2,000 inputs"
        )
        expect(page.locator("#summary")).to_contain_text(f"on 2 hosts: web{port}-h1 2,500, web{port}-h2 2,500")
        expect(page.locator("#progress")).to_contain_text("14000 of 14000 messages", timeout=WAIT)
        expect(page.locator("#circuit-note")).to_contain_text("5000 gates")
        assert page.locator("#circuit svg, #lamport svg").count() == 0
        expect(page.locator("#log li")).to_have_count(1)
        expect(page.locator("#log li")).to_contain_text("5,000 gates send 14,000 messages a pass: they are counted")
        shot(page, "big-deployment")
    finally:
        gatemesh("undeploy", "live-wide", "--broker", mosquitto_url)


def test_a_killed_host_is_named(page: Page, hosts_server: ServeProcess) -> None:
    page.goto(hosts_server.url + QF_LINK + "&step=1&where=hosts")
    expect(page.locator("#status")).to_have_text("stepping", timeout=WAIT)
    act(page, "feed orchestrator x")
    victim = page.locator("#our-hosts li[data-host]").nth(1)
    name = victim.get_attribute("data-host")
    survivor = page.locator("#our-hosts li[data-host]").nth(0).get_attribute("data-host")
    assert name is not None
    victim.locator("button.kill").click()
    expect(page.locator("#status")).to_have_text("failed", timeout=WAIT)
    expect(page.locator("#error")).to_contain_text(f"host {name} went offline")
    expect(page.locator("#error")).to_contain_text("are unreachable; start it again under Gate hosts, then Restart")
    expect(page.locator(f'#our-hosts li[data-host="{name}"] .host-state')).to_have_text("killed")
    expect(page.locator("#cluster-hosts li.hint")).to_contain_text(re.compile(rf"\d+ offline \(.*{name}"))  # named
    shot(page, "killed-host")
    page.locator('#history button.travel[data-index="1"]').click()  # x fed again: on the host left, said so
    expect(page.locator("#log")).to_contain_text(
        f"time travel replays your choices on gate hosts {survivor}; the run you made them in ran on ", timeout=WAIT
    )
    eventually(lambda: _same(set(pending(page)), {"forward x x", "feed orchestrator y", "feed orchestrator z"}))
    page.locator("#deliver-all").click()
    expect(page.locator("#value")).to_have_text("-12", timeout=WAIT)
    expect(page.locator("#where-label")).not_to_contain_text(name)
    page.locator(f'#our-hosts li[data-host="{name}"] button.start').click()  # a new process, a new incarnation
    expect(page.locator(f'#our-hosts li[data-host="{name}"] .host-state')).to_have_text("running", timeout=WAIT)
    page.locator("#restart").click()  # the same run again: redeployed onto the live hosts
    eventually(lambda: _same(set(pending(page)), {"feed orchestrator x", "feed orchestrator y", "feed orchestrator z"}))
    page.locator("#deliver-all").click()
    expect(page.locator("#value")).to_have_text("-12", timeout=WAIT)
    expect(page.locator("#where-label")).to_contain_text(name)


def test_on_a_secured_broker_the_server_and_each_host_use_their_own_accounts(page: Page) -> None:
    """`--secure DIR`: the server connects as the orchestrator, each host it starts with its own
    account, and the ACL (rewritten per deployment) lets the hosts hold a stepped run's messages."""
    with tempfile.TemporaryDirectory(prefix="gatemesh-secure-") as path:
        Path(path).chmod(0o755)  # Mosquitto reads it after dropping root
        accounts = SecureDir.create(Path(path) / "secure", ["h0", "h1"])
        with mosquitto(secure_dir=accounts.directory) as url:
            refused = gatemesh("serve", "--secure", str(accounts.directory))
            assert refused.returncode == 1
            assert "--secure needs --broker" in refused.stderr
            serving = ServeProcess("--broker", url, "--secure", str(accounts.directory), "--hosts", "2")
            try:
                page.goto(serving.url + QF_LINK + "&step=1&where=hosts")
                expect(page.locator("#where-label")).to_contain_text("gate hosts h0, h1", timeout=WAIT)
                act(page, "feed orchestrator z")
                act(page, "forward z z")
                values_shown(page, {"-4.00"})
                page.locator("#deliver-all").click()
                expect(page.locator("#value")).to_have_text("-12", timeout=WAIT)
                hosts = [line for line in _children_command_lines(serving.process.pid) if " -m gates " in line]
                assert len(hosts) == 2
                for password in accounts.credentials().values():  # every local user can read a command line
                    assert not any(password in line for line in hosts)
            finally:
                said = serving.stop()
            assert "not authorised" not in said.lower()


def _children_command_lines(pid: int) -> list[str]:
    """The command lines of process `pid`'s children, as `ps` shows them to anyone."""
    lines = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid:
                lines.append((stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ValueError, IndexError):
            continue  # a process that ended meanwhile
    return lines
