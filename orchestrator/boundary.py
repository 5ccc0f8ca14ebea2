"""The decision boundary of a trained network, drawn as micrograd's demo draws it.

The scores over a grid come from the same circuit and ops as training (one forward pass of
the network built for the grid's size, in this process); matplotlib (the `plot` extra) only
paints them: the regions where score > 0, and the points coloured by label.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from gates.tensor_ops import Array
from orchestrator import mlp
from orchestrator.errors import InputError
from orchestrator.moons import Points
from orchestrator.tensor_reference import evaluate

STEP = 0.05
"""Grid spacing (the demo uses 0.25; finer draws a smoother edge), for data of the moons' size."""
GRID_SIDE = 250
"""At most this many grid steps along either axis: wider data gets a coarser grid, not a bigger one."""
CHUNK = 16_384
"""Points scored per forward pass: a pass's arrays must stay within what a frame may hold
(gates/frame.py), however many points the grid has."""


def scores(params: Mapping[str, Array], points: Array) -> Array:
    """The network's score for each row of `points` (shape (N, 2)), CHUNK rows per forward pass."""
    found = []
    for start in range(0, len(points), CHUNK):
        chunk = points[start : start + CHUNK]
        feeds = {"X": np.ascontiguousarray(chunk.T), "y": np.ones((1, len(chunk)))}
        found.append(evaluate(mlp.build(len(chunk)), params, feeds)["score"].reshape(-1))
    return np.concatenate(found) if found else np.empty(0)


def grid(data: Points) -> tuple[Array, Array]:
    """The grid the regions are painted on: the data's extent and 1 more each way (a tenth of
    it, for wide data: its edge points whole), in steps of STEP, or coarser for wide data (at
    most GRID_SIDE steps along an axis)."""
    low, high = data.X.min(axis=0), data.X.max(axis=0)
    margin = np.maximum(1.0, (high - low) / 10)
    (x_min, y_min), (x_max, y_max) = low - margin, high + margin
    step = max(STEP, (x_max - x_min) / GRID_SIDE, (y_max - y_min) / GRID_SIDE)
    return np.meshgrid(np.arange(x_min, x_max, step), np.arange(y_min, y_max, step))


NEEDS_MATPLOTLIB = "--plot needs matplotlib: pip install 'gatemesh[plot]'"


def check_available() -> None:
    """InputError now if `draw` could not draw: said before a training, not after it."""
    if importlib.util.find_spec("matplotlib") is None:
        raise InputError(NEEDS_MATPLOTLIB)


def draw(path: Path, params: Mapping[str, Array], data: Points, title: str) -> None:
    """Write the boundary to `path` (PNG, SVG or PDF, by its suffix)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise InputError(NEEDS_MATPLOTLIB) from exc
    xx, yy = grid(data)
    positive = (scores(params, np.c_[xx.ravel(), yy.ravel()]) > 0).reshape(xx.shape)
    from matplotlib.patches import Patch

    figure, axes = plt.subplots(figsize=(6, 5))
    colour = plt.cm.Spectral
    below, above = colour(0.3), colour(0.7)  # the regions lighter than the points of their label
    axes.contourf(xx, yy, positive, levels=[-0.5, 0.5, 1.5], colors=[below, above], alpha=0.8)
    for label, shade in ((1, 1.0), (-1, 0.0)):
        chosen = data.X[data.y == label]
        if not len(chosen):  # no point of this label: no legend entry for it either
            continue
        axes.scatter(
            chosen[:, 0],
            chosen[:, 1],
            color=colour(shade),
            s=40,
            edgecolors="k",
            linewidths=0.5,
            label=f"label {label}",
        )
    regions = [
        Patch(color=above, alpha=0.8, label="score > 0"),
        Patch(color=below, alpha=0.8, label="score <= 0"),
    ]
    axes.legend(handles=[*axes.get_legend_handles_labels()[0], *regions], loc="upper right", fontsize="small")
    axes.set_xlim(xx.min(), xx.max())
    axes.set_ylim(yy.min(), yy.max())
    axes.set_xlabel("x1")
    axes.set_ylabel("x2")
    axes.set_title(title)
    try:
        figure.savefig(path, dpi=100, bbox_inches="tight")
    except (OSError, ValueError) as exc:
        raise InputError(f"--plot {path}: cannot write the picture: {exc}") from exc
    finally:
        plt.close(figure)
