"""The two-moons data of micrograd's demo, shipped with the package, and CSV files like it.

The built-in set (orchestrator/data/moons.csv) is exactly the demo's: scikit-learn's
`make_moons(n_samples=100, noise=0.1)` after `np.random.seed(1337)`, labels mapped from 0/1
to -1/+1. It was written once by `python -m orchestrator.moons` (the only use of scikit-learn,
which is therefore not a dependency); every number is printed with Python's shortest
round-trip repr, so reading the file gives back the generator's float64 values bit for bit.

A data file is a CSV with the header `x1,x2,label` and labels -1 or +1.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gates.tensor_ops import Array
from orchestrator.errors import InputError

BUILTIN = Path(__file__).parent / "data" / "moons.csv"
HEADER = ["x1", "x2", "label"]
SEED = 1337
MAX_POINTS = 100_000


@dataclass(frozen=True)
class Points:
    """Points X of shape (N, 2) and their labels y of shape (N,), each -1.0 or +1.0."""

    X: Array
    y: Array

    def __len__(self) -> int:
        return len(self.y)

    def fingerprint(self) -> str:
        """Which data set this is, in 16 hex digits: a checkpoint records it, a resumed run checks it."""
        digest = hashlib.sha256(np.ascontiguousarray(self.X, dtype=np.float64).tobytes())
        digest.update(np.ascontiguousarray(self.y, dtype=np.float64).tobytes())
        return digest.hexdigest()[:16]


def load(path: Path | None = None) -> Points:
    """Read a data CSV (the built-in moons without a path); InputError names the bad line."""
    source = path or BUILTIN
    try:
        text = source.read_text(encoding="utf-8-sig")  # with or without the byte-order mark spreadsheets write
    except UnicodeDecodeError as exc:
        raise InputError(f"{source}: not a CSV text file (byte {exc.start} is not UTF-8)") from None
    except OSError as exc:
        raise InputError(f"{source}: cannot read the data file: {exc}") from exc
    # blank lines (an editor's last newline, a gap) are no points; the others keep their numbers
    reader = csv.reader(io.StringIO(text))
    try:
        rows = [(n, row) for n, row in enumerate(reader, start=1) if any(c.strip() for c in row)]
    except csv.Error as exc:  # a field longer than the csv module takes, or a NUL byte
        raise InputError(f"{source}: line {reader.line_num}: not a line of a CSV file ({exc})") from None
    if not rows or [cell.strip() for cell in rows[0][1]] != HEADER:
        found = ",".join(rows[0][1])[:80] if rows else "nothing"
        raise InputError(f"{source}: line 1 must be the header {','.join(HEADER)}, not {found!r}")
    if not 1 < len(rows) <= MAX_POINTS + 1:
        raise InputError(f"{source}: give between 1 and {MAX_POINTS} points, one per line")
    xs, ys = [], []
    for number, row in rows[1:]:
        if len(row) != 3:
            raise InputError(f"{source}: line {number}: expected x1,x2,label, got {len(row)} field(s)")
        try:
            x1, x2, label = (float(cell) for cell in row)
        except ValueError:
            raise InputError(f"{source}: line {number}: {','.join(row)!r} has a field that is not a number") from None
        if not (math.isfinite(x1) and math.isfinite(x2)):
            raise InputError(f"{source}: line {number}: coordinates must be finite")
        if label not in (-1.0, 1.0):
            raise InputError(f"{source}: line {number}: the label must be -1 or 1, not {row[2]!r}")
        xs.append((x1, x2))
        ys.append(label)
    return Points(np.array(xs, dtype=np.float64), np.array(ys, dtype=np.float64))


def generate() -> Points:
    """The demo's points, from scikit-learn (installed only where the file is made or checked)."""
    from sklearn.datasets import make_moons  # type: ignore[import-untyped]

    X, y = make_moons(n_samples=100, noise=0.1, random_state=np.random.RandomState(SEED))
    return Points(np.asarray(X, dtype=np.float64), np.asarray(y * 2 - 1, dtype=np.float64))


def to_csv(points: Points) -> str:
    lines = [",".join(HEADER)]
    lines += [
        f"{x1!r},{x2!r},{int(label)}" for (x1, x2), label in zip(points.X.tolist(), points.y.tolist(), strict=True)
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    BUILTIN.parent.mkdir(exist_ok=True)
    BUILTIN.write_text(to_csv(generate()))
    print(f"wrote {BUILTIN}", file=sys.stderr)
