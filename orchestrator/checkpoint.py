"""Training checkpoints: the parameters after a step, in a .npz file, read back with every check.

The file holds one array per parameter (`param/W1`, ...) and `meta`, a JSON string with the
step the parameters are at, the schedule that made them (steps, batch, replicas, seed) and the
data set's fingerprint (moons.Points.fingerprint): a resumed run must take the same batches and
learning rates of the same points, and add its replicas' gradients in the same order, so a
different schedule or data set is refused. Files
are written to a temporary name and renamed, so a crash mid-write leaves the previous one.
Read without pickle: a checkpoint is data, never code.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.npyio import NpzFile

from gates.tensor_ops import Array, Shape
from orchestrator.errors import InputError

PREFIX = "param/"
MAX_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Checkpoint:
    """Parameters as of `step` (after `step` updates), and the schedule they belong to."""

    params: dict[str, Array]
    step: int
    seed: int
    steps: int = 100
    batch: int = 100
    data: str = ""
    """The fingerprint of the data set trained on; "" for none yet (the init) or an older file."""
    replicas: int | None = None
    """The copies of the network that shared each batch; None for none yet (the init) or an older file."""


def save(path: Path, checkpoint: Checkpoint) -> None:
    meta = {
        "step": checkpoint.step,
        "seed": checkpoint.seed,
        "steps": checkpoint.steps,
        "batch": checkpoint.batch,
        "data": checkpoint.data,
    }
    if checkpoint.replicas is not None:
        meta["replicas"] = checkpoint.replicas
    arrays: dict[str, Any] = {f"{PREFIX}{name}": value for name, value in checkpoint.params.items()}
    arrays["meta"] = np.array(json.dumps(meta))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(buffer.getvalue())
        os.replace(partial, path)
    except OSError as exc:
        raise InputError(f"--checkpoint {path}: cannot write it: {exc}") from exc


def load(path: Path, shapes: Mapping[str, Shape]) -> Checkpoint:
    """Read a checkpoint for parameters of `shapes`; InputError says what does not fit."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise InputError(f"{path}: larger than {MAX_BYTES} bytes; not a checkpoint of this network")
        with path.open("rb") as file:
            magic = file.read(6)
        if not magic.startswith((b"PK\x03\x04", b"\x93NUMPY")):  # numpy would read anything else as a pickle
            raise InputError(f"{path}: not a .npz checkpoint (a zip of .npy arrays, as --checkpoint writes)")
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, NpzFile):  # a lone .npy array
            raise InputError(f"{path}: one array, not a .npz checkpoint (its parameters and meta)")
        with loaded as archive:
            stored = {name: archive[name] for name in archive.files}
    except FileNotFoundError as exc:
        raise InputError(
            f"{path}: no such checkpoint (--resume goes on from a file --checkpoint wrote; drop --resume to start "
            "from the first step)"
        ) from exc
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npz checkpoint: {exc}") from exc
    odd = sorted(name for name, value in stored.items() if not isinstance(value, np.ndarray))
    if odd:  # a zip member without the .npy suffix reads as raw bytes
        raise InputError(f"{path}: not a .npz checkpoint: {', '.join(odd)} is not an array")
    meta = _meta(path, stored.pop("meta", None))
    params = {name.removeprefix(PREFIX): value for name, value in stored.items() if name.startswith(PREFIX)}
    strays = sorted(name for name in stored if not name.startswith(PREFIX))
    missing, unknown = sorted(set(shapes) - set(params)), sorted(set(params) - set(shapes))
    if strays or missing or unknown:
        raise InputError(
            f"{path}: parameters do not match the network: missing {', '.join(missing) or 'none'}, "
            f"unknown {', '.join(unknown + strays) or 'none'}"
        )
    for name, value in params.items():
        if value.dtype != np.float64 or value.shape != shapes[name]:
            raise InputError(f"{path}: {name} is {value.dtype} {value.shape}; the network's is float64 {shapes[name]}")
        if not np.isfinite(value).all():
            raise InputError(f"{path}: {name} has a non-finite number")
    return Checkpoint(params, meta["step"], meta["seed"], meta["steps"], meta["batch"], meta["data"], meta["replicas"])


def _meta(path: Path, raw: Array | None) -> dict[str, Any]:
    try:
        meta = json.loads(str(raw)) if raw is not None and raw.dtype.kind == "U" else None
    except (ValueError, RecursionError):  # not JSON, a number too long to read, nested too deeply
        meta = None
    keys = ("step", "seed", "steps", "batch")
    if not isinstance(meta, dict) or not all(type(meta.get(k)) is int and meta[k] >= 0 for k in keys):
        raise InputError(f"{path}: no valid meta (step, seed, steps, batch as integers >= 0)")
    data = meta.get("data", "")  # absent from the checkpoints of older versions
    if not isinstance(data, str):
        raise InputError(f"{path}: the meta's data fingerprint is not a string")
    replicas = meta.get("replicas")  # absent from the checkpoints of older versions
    if replicas is not None and not (type(replicas) is int and replicas >= 1):
        raise InputError(f"{path}: the meta's replicas is not an integer >= 1")
    return {**{k: meta[k] for k in keys}, "data": data, "replicas": replicas}
