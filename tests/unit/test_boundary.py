"""The decision boundary's picture: its grid and its scores, for data of any extent."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator import boundary, mlp
from orchestrator.cli_train import train_command
from orchestrator.errors import InputError
from orchestrator.moons import Points


def wide_points() -> Points:
    """Points 0 to 60 apart: a grid at the moons' spacing would have 1.4 million points."""
    xs = np.linspace(0.0, 60.0, 50)
    return Points(np.c_[xs, xs[::-1]], np.where(xs > 30, 1.0, -1.0))


def test_wide_data_gets_a_coarser_grid_not_a_bigger_one() -> None:
    """--plot on data spanning 60 units scored 1.4 million grid points in one pass, which no
    frame may hold: a traceback after training, and no picture."""
    xx, yy = boundary.grid(wide_points())
    assert xx.shape == yy.shape
    assert max(xx.shape) <= boundary.GRID_SIDE + 1
    assert (xx.min(), yy.min()) == (-6.0, -6.0)  # the data and a tenth of its extent each way: edge points whole
    assert xx.max() > 65.5  # within a step
    assert yy.max() > 65.5


def test_scores_in_chunks_are_each_points_own_score() -> None:
    """Scored CHUNK points per pass: each point's score is the one it gets scored alone (to the
    last bits: BLAS sums a product's terms in another order for another batch size)."""
    params = mlp.micrograd_init(1337)
    rng = np.random.default_rng(3)
    points = rng.uniform(-2, 3, size=(boundary.CHUNK + 5, 2))
    scored = boundary.scores(params, points)
    assert scored.shape == (len(points),)
    for i in (0, boundary.CHUNK - 1, boundary.CHUNK, len(points) - 1):
        alone = boundary.scores(params, points[i : i + 1])
        assert scored[i] == pytest.approx(alone[0], rel=1e-12)


def test_a_boundary_of_wide_data_is_drawn(tmp_path: Path) -> None:
    picture = tmp_path / "wide.png"
    boundary.draw(picture, mlp.micrograd_init(1337), wide_points(), "wide")
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_plot_without_matplotlib_is_refused_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without matplotlib, --plot failed after the whole training, and its summary was lost."""
    boundary.check_available()  # here it is installed
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not: find_spec says None
    with pytest.raises(InputError, match=r"^--plot needs matplotlib: pip install 'gatemesh\[plot\]'$"):
        boundary.check_available()
    with pytest.raises(InputError, match="--plot needs matplotlib"):
        train_command(engine="reference", steps=1, plot=tmp_path / "b.png", checkpoint_file=tmp_path / "c.npz")
    assert not (tmp_path / "c.npz").exists()  # no step was taken
    said = capsys.readouterr()
    assert "train" not in said.out + said.err  # no progress bar was drawn
