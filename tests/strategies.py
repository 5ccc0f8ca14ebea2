"""Random expressions for property tests: sources over x, y, z with known-safe ops."""

from __future__ import annotations

import random

from hypothesis import strategies as st

NAMES = ("x", "y", "z")
SMOOTH_UNARY = ("tanh({})", "sigmoid({})", "exp(tanh({}))", "-({})", "({}) ** 2", "log(1 + exp({}))")
SMOOTH_BINARY = ("({}) + ({})", "({}) - ({})", "({}) * ({})", "({}) / (2 + tanh({}))")
KINKED = ("max({}, {})", "min({}, {})", "relu({}) + ({})")


def expressions(*, smooth_only: bool, max_leaves: int = 12) -> st.SearchStrategy[str]:
    """Expressions that never leave their ops' domains for inputs in [-2, 2]."""
    leaves = st.sampled_from(NAMES) | st.sampled_from(["0.5", "3", "-1.5"])
    binary = SMOOTH_BINARY if smooth_only else SMOOTH_BINARY + KINKED

    def extend(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        unary = st.tuples(st.sampled_from(SMOOTH_UNARY), children).map(lambda t: t[0].format(t[1]))
        pair = st.tuples(st.sampled_from(binary), children, children).map(lambda t: t[0].format(t[1], t[2]))
        return unary | pair

    return st.recursive(leaves, extend, max_leaves=max_leaves)


def input_values() -> st.SearchStrategy[dict[str, float]]:
    value = st.floats(min_value=-2, max_value=2, allow_nan=False).map(lambda v: round(v, 3))
    return st.fixed_dictionaries({name: value for name in NAMES})


def random_source(rng: random.Random, leaves: int) -> str:
    """A random expression from the same templates, drawn without hypothesis (for bulk tests)."""
    if leaves <= 1:
        return rng.choice([*NAMES, "0.5", "3", "-1.5"])
    if rng.random() < 0.3:
        return rng.choice(SMOOTH_UNARY).format(random_source(rng, leaves - 1))
    left = rng.randint(1, leaves - 1)
    template = rng.choice(SMOOTH_BINARY + KINKED)
    return template.format(random_source(rng, left), random_source(rng, leaves - left))
