"""The numpy reference trainer against micrograd itself, the moons data, the init, the circuit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from orchestrator import checkpoint, mlp, moons
from orchestrator.checkpoint import Checkpoint
from orchestrator.cli_train import advice, after_failure, percent, print_summary, train_command
from orchestrator.errors import GateFailed, HostLost, InputError
from orchestrator.tensor_circuit import TensorCircuit
from orchestrator.train import NotFinite, ReferenceEngine, Schedule, StepRecord, Training, fit, train
from tests import micrograd_oracle

REL = 1e-9


def reference_run(schedule: Schedule, start_step: int = 0, params: dict[str, np.ndarray] | None = None) -> Training:
    circuit = mlp.build(schedule.batch, replicas=schedule.replicas)
    start = Checkpoint(
        params or mlp.micrograd_init(schedule.seed), start_step, schedule.seed, schedule.steps, schedule.batch
    )
    return asyncio.run(train(ReferenceEngine(circuit), circuit, moons.load(), schedule, start))


@pytest.mark.parametrize("seed", [0, 1337, 2024])
def test_micrograd_init_is_micrographs_mlp(seed: int) -> None:
    ours = mlp.micrograd_init(seed)
    theirs = micrograd_oracle.params_by_name(micrograd_oracle.model(seed))
    assert list(ours) == list(theirs) == mlp.param_names()
    for name in ours:
        assert ours[name].tobytes() == theirs[name].tobytes(), name


def test_builtin_moons_are_the_demos_points() -> None:
    generated = moons.generate()  # scikit-learn's make_moons: a dev dependency, never skipped
    assert moons.to_csv(generated) == moons.BUILTIN.read_text()
    loaded = moons.load()
    assert loaded.X.tobytes() == generated.X.tobytes()
    assert sorted(set(loaded.y.tolist())) == [-1.0, 1.0]
    assert len(loaded) == 100


def test_reference_trainer_equals_micrograd_at_every_step() -> None:
    expected, final = micrograd_oracle.demo_run()
    done = reference_run(Schedule())
    assert len(done.records) == 100
    for theirs, ours in zip(expected, done.records, strict=True):
        assert ours.loss == pytest.approx(theirs.loss, rel=REL, abs=0), ours.step
        assert ours.accuracy == theirs.accuracy, ours.step
    assert done.records[-1].accuracy == 1.0
    for name, value in done.params.items():
        np.testing.assert_allclose(value, final[name], rtol=1e-8, atol=1e-12, err_msg=name)


def test_partial_batches_over_replicas_equal_micrograd_on_the_same_points() -> None:
    schedule = Schedule(steps=6, batch=30, replicas=3, seed=7)
    batches = [mlp.batch_indices(100, 30, 7, k) for k in range(6)]
    assert len({b.tobytes() for b in batches}) == 6
    expected, _ = micrograd_oracle.train(moons.load(), 7, 6, batches)
    done = reference_run(schedule)
    for theirs, ours in zip(expected, done.records, strict=True):
        assert ours.loss == pytest.approx(theirs.loss, rel=REL, abs=0)
        assert ours.accuracy == theirs.accuracy


def test_resume_from_a_checkpoint_ends_where_an_uninterrupted_run_ends(tmp_path: Path) -> None:
    schedule = Schedule(steps=12)
    whole = reference_run(schedule)
    circuit = mlp.build(100)
    path = tmp_path / "moons.npz"
    start = Checkpoint(mlp.micrograd_init(schedule.seed), 0, schedule.seed, schedule.steps, schedule.batch)
    first = Schedule(steps=12)
    asyncio.run(_train_until(circuit, first, start, path, stop_after=5))
    resumed_from = checkpoint.load(path, circuit.param_shapes)
    assert resumed_from.step == 5
    rest = asyncio.run(train(ReferenceEngine(circuit), circuit, moons.load(), schedule, resumed_from))
    assert [r.step for r in rest.records] == list(range(5, 12))
    for name, value in rest.params.items():
        assert value.tobytes() == whole.params[name].tobytes(), name


async def _train_until(
    circuit: TensorCircuit, schedule: Schedule, start: Checkpoint, path: Path, stop_after: int
) -> None:
    class Stop(Exception):
        pass

    def stop(record: StepRecord) -> None:
        if record.step == stop_after - 1:
            raise Stop

    with pytest.raises(Stop):
        await train(ReferenceEngine(circuit), circuit, moons.load(), schedule, start, checkpoint=path, on_step=stop)


def test_a_resume_under_another_schedule_is_refused() -> None:
    start = Checkpoint(mlp.micrograd_init(1), 3, seed=1, steps=100, batch=100)
    circuit = mlp.build(100)
    with pytest.raises(InputError, match="resume with the same schedule"):
        asyncio.run(train(ReferenceEngine(circuit), circuit, moons.load(), Schedule(steps=50, seed=1), start))


def test_a_checkpoint_past_the_end_of_its_own_schedule_is_not_told_to_resume_with_it() -> None:
    """Step 9 of --steps 6 (a file not written by gatemesh train): "resume with the same
    schedule" was the advice, and the schedule asked was that one."""
    start = Checkpoint(mlp.micrograd_init(1), 9, seed=1, steps=6, batch=100)
    circuit = mlp.build(100)
    with pytest.raises(InputError, match=r"step 9, past the last step of its own schedule \(--steps 6\)"):
        asyncio.run(train(ReferenceEngine(circuit), circuit, moons.load(), Schedule(steps=6, seed=1), start))


def test_a_fit_that_overflows_is_said_with_the_gate_not_raised_as_a_domain_error() -> None:
    """Data at 1e307: the reference's overflow (ReferenceDomainError) was a traceback."""
    data = moons.load()
    huge = moons.Points(data.X * 1e307, data.y)
    with pytest.raises(NotFinite, match=r"^the loss on all 100 points cannot be computed \(hinge: output of hinge "):
        fit(mlp.micrograd_init(1337), huge)
    assert fit(mlp.micrograd_init(1337), data)[0] == pytest.approx(0.895844, abs=1e-6)  # micrograd's step 0


def test_a_loss_that_rose_is_given_advice_that_fits_the_run() -> None:
    """--batch 1 was told to take "fewer points a step"; data a little wide said nothing."""
    data = moons.load()

    def said(before: float, after: float, batch: int, points: moons.Points = data) -> str:
        return advice(before, {"steps": [{}], "final": {"loss": after, "points": len(points)}}, points, batch)

    rose = "the loss on all 100 points rose, from 0.9 before training to 1.4"
    assert said(0.9, 1.4, 1) == f"{rose}: more points a step (--batch 1; all 100 by default) or more steps may help"
    overshoot = "more steps may help (at a learning rate near 1.0 the first steps can overshoot)"
    assert said(0.9, 1.4, 100) == f"{rose}: {overshoot}"
    assert said(0.9, 0.1, 100) == ""
    wide = moons.Points(data.X * 3, data.y)
    assert said(0.9, 0.1, 100, wide) == (
        "note: micrograd's learning rate (1.0, falling to 0.1) is made for inputs of about unit scale, and this "
        f"data's coordinates run from {wide.X.min():g} to {wide.X.max():g}; scale them to about -2..2"
    )


def test_the_summary_says_which_steps_a_resumed_training_took() -> None:
    def said(steps: int, final_step: int) -> str:
        console = Console(record=True, width=400)
        final = {"step": final_step, "loss": 0.5, "accuracy": 0.75, "points": 100, "engine": "numpy", "gates": 29}
        result = {"final": final, "steps": [{}] * steps, "seconds_per_step": 0.002}
        print_summary(console, result, None)
        return console.export_text().strip()

    assert (
        said(4, 4) == "trained 4 steps on numpy (29 gates): loss 0.5, accuracy 75% on all 100 points, 2.00 ms per step"
    )
    assert said(1, 1).startswith("trained 1 step on numpy")
    assert said(3, 10).startswith("trained 3 steps, steps 7 to 9, on numpy (29 gates)")  # from 0, as micrograd's
    console = Console(record=True, width=400)  # nothing left to train: the picture it drew is still said
    final = {"step": 10, "loss": 0.5, "accuracy": 0.75, "points": 100, "engine": "numpy", "gates": 29}
    print_summary(console, {"final": final, "steps": [], "seconds_per_step": 0.0}, Path("b.png"))
    assert console.export_text().splitlines() == [
        "nothing to do: the checkpoint is at step 10 already (loss 0.5, accuracy 75% on all 100 points)",
        "decision boundary: b.png",
    ]


def test_a_resume_with_other_replicas_is_refused_and_an_older_checkpoint_without_them_is_not() -> None:
    """Replicas add a batch's gradients in another order: --replicas 2 after 1 ended 1e-16 away
    from an unbroken run, which the resume promises to equal bit for bit."""
    circuit = mlp.build(100, replicas=2)
    data = moons.load()
    made_by_one = Checkpoint(mlp.micrograd_init(1), 3, seed=1, steps=5, batch=100, replicas=1)
    with pytest.raises(InputError, match=r"step 3 of --replicas 1; resume with --replicas 1 \(asked: 2\)"):
        asyncio.run(train(ReferenceEngine(circuit), circuit, data, Schedule(steps=5, replicas=2, seed=1), made_by_one))
    older = Checkpoint(mlp.micrograd_init(1), 3, seed=1, steps=5, batch=100)  # no replicas recorded: taken
    done = asyncio.run(train(ReferenceEngine(circuit), circuit, data, Schedule(steps=5, replicas=2, seed=1), older))
    assert [r.step for r in done.records] == [3, 4]


def test_a_checkpoint_keeps_its_replicas_and_a_bad_one_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    checkpoint.save(path, Checkpoint(mlp.micrograd_init(1), 2, seed=1, steps=5, batch=50, data="ab", replicas=3))
    assert checkpoint.load(path, mlp.param_shapes()).replicas == 3
    checkpoint.save(path, Checkpoint(mlp.micrograd_init(1), 2, seed=1, steps=5, batch=50))
    assert checkpoint.load(path, mlp.param_shapes()).replicas is None
    arrays = {f"param/{name}": value for name, value in mlp.micrograd_init(1).items()}
    meta = '{"step": 2, "seed": 1, "steps": 5, "batch": 50, "replicas": 0}'
    np.savez(path, meta=np.array(meta), **arrays)  # type: ignore[arg-type]
    with pytest.raises(InputError, match=r"c\.npz: the meta's replicas is not an integer >= 1"):
        checkpoint.load(path, mlp.param_shapes())


def test_a_resume_on_other_data_says_so_before_its_batch_does() -> None:
    """A --batch 150 checkpoint resumed without its --data was told "--batch: between 1 and the
    100 points of the data", not that the data was another."""
    data = moons.load()
    start = Checkpoint(mlp.micrograd_init(1), 3, seed=1, steps=5, batch=150, data="0123456789abcdef")
    circuit = mlp.build(150)
    with pytest.raises(InputError, match=r"trained on another data set .* resume with the same --data"):
        asyncio.run(train(ReferenceEngine(circuit), circuit, data, Schedule(steps=5, batch=150, seed=1), start))


def test_a_missing_checkpoint_is_said_to_be_missing(tmp_path: Path) -> None:
    with pytest.raises(InputError) as missing:
        checkpoint.load(tmp_path / "gone.npz", mlp.param_shapes())
    assert str(missing.value) == (
        f"{tmp_path / 'gone.npz'}: no such checkpoint (--resume goes on from a file --checkpoint wrote; "
        "drop --resume to start from the first step)"
    )


def test_accuracy_is_rounded_down() -> None:
    """999 of 1,000 points right showed "100%"."""
    assert [percent(f) for f in (0.999, 199 / 200, 1.0, 0.29, 0.75, 0.0)] == ["99%", "99%", "100%", "29%", "75%", "0%"]


def test_a_loss_that_rose_after_a_resume_is_measured_from_the_checkpoint() -> None:
    data = moons.load()
    result = {"steps": [{}], "final": {"loss": 1.4, "points": 100}}
    assert advice(0.9, result, data, 100, 40).startswith(
        "the loss on all 100 points rose, from 0.9 at step 40, the checkpoint's, to 1.4: "
    )


def test_a_failed_step_says_what_was_kept_and_what_to_do(tmp_path: Path) -> None:
    """A lost host said "restart with --resume from the last checkpoint" when none was kept, and
    an overflow mid-training said nothing of the data's scale."""
    data, wide = moons.load(), moons.Points(moons.load().X * 10, moons.load().y)

    def lost() -> HostLost:
        return HostLost("step 4 failed: host h1 went offline", "r1", ["h1"], ["W1"])

    saved = tmp_path / "moons.npz"
    assert str(after_failure(lost(), None, data)) == (
        "step 4 failed: host h1 went offline; with --checkpoint FILE, every step is saved and --resume goes on "
        "from the last one"
    )
    assert str(after_failure(lost(), saved, data)) == "step 4 failed: host h1 went offline"  # no step done: no file
    saved.write_bytes(b"")
    kept = lost()
    said = after_failure(kept, saved, data)
    assert said is kept  # the same error, its words added to: its hosts and gates are still there
    assert str(said) == (
        f"step 4 failed: host h1 went offline; {saved} has the parameters of the last step it saved: the same "
        "command with --resume goes on"
    )
    overflow = GateFailed("step 7: gate l2.W1 failed: output of l2 is not finite", "r1", "l2.W1", "domain")
    assert str(after_failure(overflow, saved, wide)) == (
        "step 7: gate l2.W1 failed: output of l2 is not finite; micrograd's learning rate (1.0, falling to 0.1) is "
        f"made for inputs of about unit scale, and this data's coordinates run from {wide.X.min():g} to "
        f"{wide.X.max():g}; scale them to about -2..2; {saved} has the parameters before it"
    )
    said = after_failure(NotFinite("step 7: mm2: output of matmul is not finite"), None, wide)  # the reference's
    assert isinstance(said, NotFinite)
    assert str(said).startswith("step 7: mm2: output of matmul is not finite; micrograd's learning rate")
    unwritable = after_failure(InputError(f"--checkpoint {saved}: cannot write it: disk full"), saved, wide)
    assert str(unwritable) == (  # not an overflow: nothing of the data's scale
        f"--checkpoint {saved}: cannot write it: disk full; {saved} has the parameters of the last step it saved: "
        "the same command with --resume goes on"
    )


def test_a_resume_too_wide_for_its_replicas_is_not_told_to_take_more(tmp_path: Path) -> None:
    """A batch too wide for one frame was told "split the batch over --replicas 2 or more", which a
    resume then refuses: the checkpoint's replicas are its own."""
    data = tmp_path / "wide.csv"
    rows = [f"{(i % 97) / 97:.4f},{(i % 89) / 89:.4f},{1 if i % 2 else -1}" for i in range(9000)]
    data.write_text("x1,x2,label\n" + "\n".join(rows) + "\n")
    points = moons.load(data)
    saved = tmp_path / "wide.npz"
    start = Checkpoint(mlp.micrograd_init(1337), 1, 1337, 3, 9000, points.fingerprint(), replicas=1)
    checkpoint.save(saved, start)
    with pytest.raises(InputError) as refused:
        train_command(data=data, steps=3, checkpoint_file=saved, resume=True)
    assert str(refused.value).endswith(
        "a frame carries at most 131,072: the checkpoint's --replicas 1 cannot carry it; go on with --engine reference"
    )
