"""The `gatemesh` command as a user runs it: a real process, a real broker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from tempfile import gettempdir

import pytest

from tests.processes import clean_env, gatemesh

IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
pytestmark = pytest.mark.integration


def test_run_json_on_mosquitto(mosquitto_url: str) -> None:
    done = gatemesh("run", "(x+y)*z", "x=-2", "y=5", "z=-4", "--json", "--broker", mosquitto_url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"value": -12.0, "grads": {"x": -4.0, "y": -4.0, "z": 3.0}}
    assert done.stdout.count("\n") == 1


def test_run_on_the_embedded_broker_by_default() -> None:
    done = gatemesh("run", "(x+y)*z", "x=-2", "y=5", "z=-4")
    assert done.returncode == 0, done.stderr
    assert "value = -12" in done.stdout
    rows = {line.split()[0]: line.split()[-1] for line in done.stdout.splitlines() if line.strip()[:1] in "xyz"}
    assert rows == {"x": "-4", "y": "-4", "z": "3"}


def test_compile_then_run_the_file(tmp_path: Path, mosquitto_url: str) -> None:
    path = tmp_path / "neuron.yaml"
    done = gatemesh("compile", "q = w0*x0 + w1*x1 + w2; f = sigmoid(q)", "-o", str(path))
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stderr
    done = gatemesh("run", str(path), "w0=2", "x0=-1", "w1=-3", "x1=-2", "w2=-3", "--json", "--broker", mosquitto_url)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["value"] == 0.7310585786300049
    assert result["grads"]["x1"] == -0.5898357997244456


def test_demo_walks_the_worked_examples(mosquitto_url: str) -> None:
    done = gatemesh("demo", "--broker", mosquitto_url)
    assert done.returncode == 0, done.stderr
    assert "value = 0.7310585786" in done.stdout
    assert "Staged computation" in done.stdout
    assert done.stdout.count("value = ") == 8


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["run", "exp(x, y)", "x=1"], "line 1, column 1: exp() takes 1 argument(s), got 2"),
        (["run", "x*y", "x=1"], "no value for input(s): y"),
        (["run", "x*y", "x=1", "y=two"], "'two' is not a number"),
        (["run", "x*y", "x=1", "y=2", "x=3"], "'x=3': x is given twice"),
        (["run", "log(x)", "x=-1"], "output of log(-1) is undefined"),
        (["run", "missing.json", "x=1"], "missing.json: cannot read circuit file"),
        (["run", "x=-2", "y=5"], "x=-2 reads as an input's value, and there is no expression before it"),  # ran x = -2
        (["run", "x = 2", "x=5"], 'the values: "(x+y)*z" x=2'),  # the example as a value is given: no spaces
        (["run", "x", "x=1", "--broker", "mqtt://127.0.0.1:1"], "cannot connect to the broker"),
        (
            ["run", "x", "x=1", "--broker", "mqtts://127.0.0.1:1?ca=/nonexistent/ca.pem"],
            "ca=/nonexistent/ca.pem: No such file or directory",
        ),
        (["run", "x", "x=1", "--trace", "/nonexistent/t.jsonl"], "--trace /nonexistent/t.jsonl: cannot write in"),
        (["run", "x", "x=1", "--trace", "qf-circuit.svg"], "--trace qf-circuit.svg: write it as .jsonl"),
        (["compile", "x+y", "-o", "/nonexistent/c.json"], "/nonexistent/c.json: cannot write the circuit file"),
        (["compile", "x+y", "-o", "c.txt"], "c.txt: a circuit file ends in .json, .yaml or .yml"),
        (["export", "shiviz", f"{IMG}/qf.jsonl", "-o", "runs.svg"], "-o runs.svg: write it as .log, .txt"),
        (
            ["draw", "circuit", f"{IMG}/qf.jsonl", "--trace", f"{IMG}/qf.jsonl", "-o", f"{gettempdir()}/q.svg"],
            f"{IMG}/qf.jsonl is given twice, as SOURCE and as --trace: give it once",  # it told to do just that
        ),
        (
            ["draw", "circuit", f"{IMG}/qf.jsonl", "--trace", f"{IMG}/faulty.jsonl", "-o", f"{gettempdir()}/q.svg"],
            f"{IMG}/qf.jsonl: a second trace beside --trace {IMG}/faulty.jsonl; draw one trace at a time",
        ),
        (
            ["draw", "lamport", "--trace", f"{IMG}/qf.jsonl", f"{IMG}/faulty.jsonl", "-o", f"{gettempdir()}/two.svg"],
            f"{IMG}/qf.jsonl, {IMG}/faulty.jsonl: one trace a picture",  # was "SOURCE and input values make a new one"
        ),
        (
            ["draw", "lamport", f"{IMG}/qf.jsonl", f"{IMG}/faulty.jsonl", "-o", f"{gettempdir()}/two.svg"],
            f"{IMG}/qf.jsonl, {IMG}/faulty.jsonl: one trace a picture (--run",  # was "a trace, not a circuit"
        ),
        (
            ["draw", "circuit", f"{IMG}/qf.jsonl", f"{IMG}/faulty.jsonl", "-o", f"{gettempdir()}/two.svg"],
            f"{IMG}/qf.jsonl, {IMG}/faulty.jsonl: one trace a picture",  # not "beside --trace", which nobody typed
        ),
        (
            ["draw", "circuit", f"{IMG}/qf.jsonl", "x=1", f"{IMG}/faulty.jsonl", "-o", f"{gettempdir()}/two.svg"],
            f"{IMG}/qf.jsonl, {IMG}/faulty.jsonl: one trace a picture",  # not "drop the name=value arguments"
        ),
        (["draw", "circuit", "nowhere/run.jsonl"], "nowhere/run.jsonl: no such trace file"),  # not "an attribute (a.b)"
        (["draw", "circuit", "nowhere/run.jsonl", "--step", "3"], "nowhere/run.jsonl: no such trace file"),
        (["run", "nowhere/run.jsonl", "x=1"], "nowhere/run.jsonl: no such file (and a .jsonl file is a trace;"),
        (
            ["draw", "circuit", "x*3", "--faults", "drop=0.5", "-o", f"{gettempdir()}/x3.svg"],
            "--faults and --timeout apply to a run: give the input values (x=...)",
        ),
        (["train", "moons", "--engine", "reference", "--plot", "b.txt"], "--plot b.txt: write it as .png, .svg, .pdf"),
        (
            ["train", "moons", "--engine", "reference", "--checkpoint", "/nonexistent/c.npz"],
            "--checkpoint /nonexistent/c.npz: cannot write in /nonexistent",  # before training, not after a step
        ),
        (
            ["train", "moons", "--engine", "reference", "--checkpoint", gettempdir()],  # not "the file exists"
            f"--checkpoint {gettempdir()}: a directory; give the name of a file to write",
        ),
        (["compile", "x+y", "-o", "c.json", "--name", "a/b"], "circuit name 'a/b': a name is a letter or '_' followed"),
        (["train", "moons", "--hosts", "0"], "--hosts: give at least 1"),
        (["train", "moons", "--placement", "by-layer"], "--placement places gates on gate hosts: give --hosts too"),
        (
            ["train", "moons", "--hosts", "1", "--placement", "by-replcia"],  # said before waiting for a host
            "--placement 'by-replcia': use by-replica, by-layer, round-robin or a .json/.yaml file",
        ),
        (
            ["draw", "circuit", " + ".join(f"x{i}" for i in range(40)), "x0=1", "-o", f"{gettempdir()}/c79.svg"],
            "the circuit has 79 gates; its figure stays readable up to 60",  # said before running it
        ),
    ],
)
def test_errors_are_one_clear_line(args: list[str], says: str, mosquitto_url: str) -> None:
    if "--broker" not in args and args[0] not in ("compile", "export"):  # the commands that take one
        args = [*args, "--broker", mosquitto_url]
    done = gatemesh(*args)
    assert done.returncode == 1
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    if args[0] == "train":
        assert done.stdout == ""  # said before the progress bar is drawn


def test_a_file_whose_name_starts_with_a_minus_is_a_file(tmp_path: Path) -> None:
    """`-o -x.json` was told to write `-o '(-x.json)'` (the value of a short option taken for an
    expression), and `run -x.json` to put the file's name in parentheses, which makes it an
    expression; a file is named by its path."""
    done = gatemesh("compile", "(x+y)*z", "-o", "-x.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "-x.json").is_file()
    done = gatemesh("run", "-x.json", "x=1", "y=2", "z=3", "--broker", "mqtt://127.0.0.1:1", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (
        "error: -x.json reads as an option; give a file whose name starts with '-' by its path: "
        "gatemesh run ./-x.json x=1 y=2 z=3 --broker mqtt://127.0.0.1:1\n"
    )
    followed = gatemesh("run", "./-x.json", "x=1", "y=2", "z=3", "--broker", "mqtt://127.0.0.1:1", cwd=tmp_path)
    assert "cannot connect to the broker at mqtt://127.0.0.1:1" in followed.stderr  # the file was read
    trace = gatemesh("draw", "lamport", "-t.jsonl", cwd=tmp_path)  # a trace's name too
    assert "give a file whose name starts with '-' by its path: gatemesh draw lamport ./-t.jsonl" in trace.stderr


def test_an_expression_named_like_a_file_beside_it_is_not_taken_for_a_trace(tmp_path: Path) -> None:
    """`draw circuit f --trace run.jsonl` where the user has a file called `f`: `f` is an
    expression (the trace's output gate), compared with the recorded circuit, not a second trace."""
    (tmp_path / "f").write_text("notes\n")
    done = gatemesh("draw", "circuit", "f", "--trace", f"{IMG}/qf.jsonl", "-o", "c.svg", cwd=tmp_path)
    assert done.returncode == 1
    assert f"'f' is not the circuit recorded in {IMG}/qf.jsonl" in done.stderr, done.stderr


def test_an_expression_that_starts_with_a_minus_is_shown_how_to_pass() -> None:
    """The parser took `-x*y` for an option. The suggestion keeps every other argument where it
    was, so an option after the expression stays an option (with `--` in front of the
    expression, `--broker` became an argument)."""
    down = ["--broker", "mqtt://127.0.0.1:1"]
    done = gatemesh("run", "-x*y", "x=1", "y=2", *down)
    assert done.returncode == 2  # a usage error, as the option parser's own
    assert done.stderr == (
        "error: -x*y reads as an option; put an expression that starts with '-' in parentheses: "
        "gatemesh run '(-x*y)' x=1 y=2 --broker mqtt://127.0.0.1:1\n"
    )
    followed = gatemesh("run", "(-x*y)", "x=1", "y=2", *down)
    assert "cannot connect to the broker at mqtt://127.0.0.1:1" in followed.stderr  # compiled, and --broker read as one
    for expression in ("-x", "-x-y", "--x*y", "---x", "--2*x"):  # "--x*y" is no option's name either
        assert f"gatemesh run '({expression})' x=1" in gatemesh("run", expression, "x=1", "y=2", *down).stderr
    unknown = gatemesh("run", "x*y", "x=1", "y=2", "--timeoutt", "1")  # a mistyped option stays the parser's
    assert "No such option: --timeoutt" in unknown.stderr
    negative = gatemesh("run", "x*y", "x=-1", "y=2", "--timeout", "-1", *down)
    assert "reads as an option" not in negative.stderr  # a negative number is an option's value
    glued = gatemesh("compile", "x*y", "-o/nonexistent/c.json")  # a short option with its value glued on
    assert "/nonexistent/c.json: cannot write the circuit file" in glued.stderr
    named = gatemesh("deploy", "f = x * y", "--name", "-x", *down)  # an option's value: no expression in brackets
    assert named.returncode == 1
    assert named.stderr == (
        "error: deployment name '-x': up to 100 letters, digits, '_' or '-', starting with a letter or '_'\n"
    )


def test_inputs_typed_with_spaces_or_without_names_are_shown_how_to_give() -> None:
    """`x = -2` is three words to the shell, and `-2` alone reads as an option: the option
    parser said "No such option: -2", nothing about inputs."""
    spaced = gatemesh("run", "(x+y)*z", "x", "=", "-2", "y=", "5", "z", "=-4")
    assert spaced.returncode == 2
    assert spaced.stderr == (
        "error: give each input as name=value, with no spaces around '=' (the shell splits x = -2 into three"
        " words): gatemesh run '(x+y)*z' x=-2 y=5 z=-4\n"
    )
    for given in (["-2", "5", "-4"], ["--explain", "-2", "y=5", "z=-4"]):
        bare = gatemesh("run", "(x+y)*z", *given)
        assert bare.returncode == 2
        assert bare.stderr == "error: -2 reads as an option; give each input with its name, as name=value, like x=-2\n"
    after_dashes = gatemesh("run", "--", "(x+y)*z", "x", "=", "2")
    assert "error: give each input as name=value, with no spaces around '='" in after_dashes.stderr
    source = gatemesh("run", "-2")  # a constant, not an input
    assert source.stderr == (
        "error: -2 reads as an option; put an expression that starts with '-' in parentheses: gatemesh run '(-2)'\n"
    )
    unnamed = gatemesh("run", "x*2+y", "=5", "y=1")  # the source is no input's name: never 'x*2+y=5'
    assert unnamed.returncode == 1
    assert "x*2+y=5" not in unnamed.stderr
    missing = gatemesh("run", "x*y", "x=", "y=2")  # no value, not a space: said as such, never mended to x=y=2
    assert missing.stderr == "error: 'x=': '' is not a number\n"
    for valid in (["compile", "x*y", "-o", "out="], ["run", "x*y", "--timeout", "-1", "x=1", "y=2"]):
        said = gatemesh(*valid).stderr  # the command's own answer, not the inputs' advice
        assert "reads as an option" not in said, said
        assert "no spaces" not in said, said


@pytest.mark.parametrize(
    ("faults", "told"),
    [
        (
            "delay=2000ms",
            "the fault injector delays a message by up to 2000 ms, and a pass's 8 messages in a row can add up to"
            " 16 s, more than the 0.5 s timeout (a longer --timeout lets them arrive)",
        ),
        ("drop=1", "the fault injector drops 100% of messages (--explain says which; --retries N runs again)"),
    ],
    ids=["delay", "drop"],
)
def test_a_timeout_under_faults_says_what_the_faults_may_have_done(faults: str, told: str) -> None:
    """A timeout names the gates that wait, not the message lost or late on its way: under
    --faults it says what the injector may have done (a delay longer than the timeout is not a drop)."""
    done = gatemesh("run", "(x+y)*z", "x=-2", "y=5", "z=-4", "--faults", faults, "--timeout", "0.5")
    assert done.returncode == 1
    assert done.stderr.rstrip().endswith(f"; under --faults {faults}: {told}"), done.stderr


def test_a_delay_the_timeout_covers_is_not_told() -> None:
    arrives = gatemesh("run", "(x+y)*z", "x=-2", "y=5", "z=-4", "--faults", "delay=10ms", "--timeout", "5")
    assert arrives.returncode == 0, arrives.stderr


def test_a_source_given_with_deployed_is_said_to_be_the_deployments() -> None:
    done = gatemesh("run", "(x+y)*z", "--deployed", "nosuch", "x=1")
    assert done.returncode == 1
    assert done.stderr == "error: --deployed runs the circuit deployed as nosuch: give no source, only its inputs\n"


def test_the_gradients_are_listed_in_the_order_the_inputs_were_given(mosquitto_url: str) -> None:
    """The circuit numbers its inputs as the source reads them (y first in 1/(1+exp(-y)) + x):
    the table follows what the user typed, and a circuit with no inputs says it has no gradients."""
    done = gatemesh("run", "exp(y) + x*y", "x=3", "y=-4", "--broker", mosquitto_url)
    assert done.returncode == 0, done.stderr
    rows = [line.split()[0] for line in done.stdout.splitlines() if "│" in line]
    assert rows == ["x", "y"]
    constant = gatemesh("run", "3", "--broker", mosquitto_url)
    assert constant.returncode == 0, constant.stderr
    assert constant.stdout == "value = 3\n(no inputs: no gradients)\n"


def test_a_batch_too_wide_for_a_frame_is_refused_before_training(tmp_path: Path) -> None:
    """16 x 8,193 numbers leave the first layer of one copy: more than a frame carries."""
    data = tmp_path / "wide.csv"
    data.write_text("x1,x2,label\n" + "".join(f"{i / 8193},{i % 7 / 7},{1 - 2 * (i % 2)}\n" for i in range(8193)))
    done = gatemesh("train", "moons", "--data", str(data), "--steps", "1")
    assert done.returncode == 1
    assert (
        "gate mm1: its output (16, 8193) is 131,088 numbers; a frame carries at most 131,072: "
        "split the batch of 8193 over --replicas 2 or more"
    ) in done.stderr
    assert "Traceback" not in done.stderr


def test_a_run_that_needed_retries_says_so(mosquitto_url: str) -> None:
    """The seeded injector drops a message in each of the first two attempts (the same for every
    run of this command): the result comes from the third, and the first two are told."""
    faults = ["--faults", "drop=0.1,seed=4", "--timeout", "0.5", "--retries", "3"]
    done = gatemesh("run", "(x+y)*z", "x=-2", "y=5", "z=-4", *faults, "--json", "--broker", mosquitto_url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"value": -12.0, "grads": {"x": -4.0, "y": -4.0, "z": 3.0}}
    said = [line.split(": run ")[0] for line in done.stderr.splitlines()]
    assert said == ["retry: attempt 1 of 4 failed", "retry: attempt 2 of 4 failed"]
    # one retry: both attempts fail, and the error says it was the last of them (it said only its own words)
    fewer = ["--faults", "drop=0.1,seed=4", "--timeout", "0.5", "--retries", "1"]
    failed = gatemesh("run", "(x+y)*z", "x=-2", "y=5", "z=-4", *fewer, "--broker", mosquitto_url)
    assert failed.returncode == 1
    lines = failed.stderr.splitlines()
    assert [line.split(": run ")[0] for line in lines] == [
        "retry: attempt 1 of 2 failed",
        "error: all 2 attempts failed; the last",
    ]


def test_explain_says_where_each_retry_begins(mosquitto_url: str) -> None:
    """The same three attempts, told: each retry's sentences followed the last attempt's with
    nothing on stdout to say a new run began (only stderr's "retry:")."""
    faults = ["--faults", "drop=0.1,seed=4", "--timeout", "0.5", "--retries", "3"]
    done = gatemesh("run", "(x+y)*z", "x=-2", "y=5", "z=-4", *faults, "--explain", "--broker", mosquitto_url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    begins = [i for i, line in enumerate(lines) if "the same inputs again, under a fresh run id" in line]
    assert [lines[i].split()[:2] for i in begins] == [["run", "2"], ["run", "3"]]
    feeds = [i for i, line in enumerate(lines) if line.endswith("the orchestrator feeds input x = -2")]
    assert len(feeds) == 3
    assert feeds[0] < begins[0] < feeds[1] < begins[1] < feeds[2]


@pytest.mark.parametrize("timeout", ["nan", "-1", "0", "inf"])
def test_a_timeout_is_a_number_of_seconds_above_0(timeout: str) -> None:
    done = gatemesh("run", "x*y", "x=1", "y=2", "--timeout", timeout)
    assert done.returncode == 2  # a usage error, as every option's
    assert "give a number of seconds above 0" in done.stderr


def test_tls_asked_of_a_plain_port_says_the_scheme_may_be_wrong(mosquitto_url: str) -> None:
    """mqtts:// to Mosquitto's plain listener: it said only "[Errno 104] Connection reset by peer"."""
    tls = mosquitto_url.replace("mqtt://", "mqtts://")
    hint = "an mqtts:// address on a port without TLS does this: is the scheme the port's?"
    for command in (["run", "x*2", "x=1"], ["status"]):  # our session's connect, and aiomqtt's
        done = gatemesh(*command, "--broker", tls)
        assert done.returncode == 1
        assert hint in " ".join(done.stderr.split()), done.stderr


def test_run_and_demo_fail_by_the_same_path() -> None:
    """One error path: the same cause gives the same line and the same exit status."""
    nowhere = "mqtt://127.0.0.1:1"
    run = gatemesh("run", "x", "x=1", "--broker", nowhere)
    demo = gatemesh("demo", "--broker", nowhere)
    assert run.returncode == demo.returncode == 1
    said = f"error: cannot connect to the broker at {nowhere}: nothing is listening there (connection refused); "
    assert [line for line in run.stderr.splitlines() if line.startswith("error:")] == [
        line for line in demo.stderr.splitlines() if line.startswith("error:")
    ]
    assert run.stderr.startswith(said), run.stderr
    assert run.stderr.count(nowhere) == 1  # the broker named once
    assert "Traceback" not in run.stderr + demo.stderr


def test_status_names_a_broker_it_cannot_read() -> None:
    done = gatemesh("status", "--broker", "mqtt://127.0.0.1:1")
    assert done.returncode == 1
    said = "error: cannot read the cluster's state: cannot connect to the broker at mqtt://127.0.0.1:1: nothing is"
    assert done.stderr.startswith(said), done.stderr


def test_gatemesh_host_and_python_m_gates_have_one_set_of_options() -> None:
    ours = gatemesh("host", "--help")
    command = [sys.executable, "-m", "gates", "--help"]
    theirs = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False, env=clean_env())
    assert ours.returncode == theirs.returncode == 0
    assert ours.stdout.startswith("usage: gatemesh host ")
    options = ours.stdout[ours.stdout.index("options:") :]
    assert options == theirs.stdout[theirs.stdout.index("options:") :]
    for flag in ("--name", "--broker", "--faults", "--connections", "--qos", "--log-level"):
        assert f"  {flag} " in options
    refused = gatemesh("host", "--no-such-option")
    assert refused.returncode == 2
    assert "gatemesh host: error: unrecognized arguments: --no-such-option" in refused.stderr
