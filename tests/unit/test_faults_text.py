"""A fault plan written back as `--faults` takes it: what a host announces and a trace's header says."""

from __future__ import annotations

import re

import pytest

from gates.faults import Faults


@pytest.mark.parametrize(
    ("given", "written"),
    [
        ("drop=0.08,dup=0.25,delay=0-15ms,reorder,seed=2", "drop=0.08,dup=0.25,delay=0-15ms,reorder,seed=2"),
        ("seed=3, reorder, delay=400ms", "delay=400ms,reorder,seed=3"),
        ("delay=2.5-7ms", "delay=2.5-7ms"),
        ("", ""),
    ],
)
def test_faults_are_written_as_they_are_given(given: str, written: str) -> None:
    faults = Faults.parse(given)
    assert faults.text == written
    assert Faults.parse(faults.text) == faults


def test_a_fault_given_twice_is_refused_not_overwritten() -> None:
    with pytest.raises(ValueError, match=r"^--faults 'drop=0.1,drop=0.2': drop is given twice; give it once$"):
        Faults.parse("drop=0.1,drop=0.2")
    with pytest.raises(ValueError, match=r"reorder is given twice"):
        Faults.parse("reorder,seed=1,reorder")


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("drop=0.1,seed=x", "--faults 'seed=x': a seed is a whole number, like seed=7"),
        (
            "dup=0.1;seed=2",
            "--faults 'dup=0.1;seed=2': a probability is a number from 0 to 1, like 0.1 "
            "(parts are separated by commas)",
        ),
        ("drop=2", "--faults 'drop=2': a probability is a number from 0 to 1, not 2"),
        ("dup=nan", "--faults 'dup=nan': a probability is a number from 0 to 1, not nan"),
    ],
)
def test_a_bad_fault_is_told_in_the_options_words(given: str, said: str) -> None:
    """Not Python's (`invalid literal for int() with base 10`) nor pydantic's (`Input should be ...`)."""
    with pytest.raises(ValueError, match=f"^{re.escape(said)}$"):
        Faults.parse(given)
