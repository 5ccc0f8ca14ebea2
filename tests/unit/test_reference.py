"""The in-process reference against the notes' numbers, plain arithmetic and finite differences."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.compiler import compile_source
from orchestrator.errors import InputError
from orchestrator.examples import STAGED
from orchestrator.reference import ReferenceDomainError, evaluate
from tests.strategies import expressions, input_values

NEURON = {"w0": 2.0, "x0": -1.0, "w1": -3.0, "x1": -2.0, "w2": -3.0}
NEURON_GRADS = {
    "w0": -0.19661193324148185,
    "x0": 0.3932238664829637,
    "w1": -0.3932238664829637,
    "x1": -0.5898357997244456,
    "w2": 0.19661193324148185,
}


def test_cs231n_examples() -> None:
    assert evaluate(compile_source("x*y"), {"x": 4, "y": -3}).model_dump() == {
        "value": -12.0,
        "grads": {"x": -3.0, "y": 4.0},
    }
    r = evaluate(compile_source("(x+y)*z"), {"x": -2, "y": 5, "z": -4})
    assert (r.value, r.grads) == (-12.0, {"x": -4.0, "y": -4.0, "z": 3.0})
    r = evaluate(compile_source("max(x, y)"), {"x": 4, "y": 2})
    assert (r.value, r.grads) == (4.0, {"x": 1.0, "y": 0.0})
    r = evaluate(compile_source("sigmoid(w0*x0 + w1*x1 + w2)"), NEURON)
    assert r.value == 0.7310585786300049
    assert r.grads == NEURON_GRADS
    r = evaluate(compile_source("1/(1+exp(-(w0*x0+w1*x1+w2)))"), NEURON)
    assert r.value == 0.7310585786300049
    assert r.grads == pytest.approx(NEURON_GRADS, rel=1e-15)
    assert evaluate(compile_source("(x+x)+(x+x)"), {"x": 1.5}).grads == {"x": 4.0}
    assert evaluate(compile_source("x*x"), {"x": 3}).grads == {"x": 6.0}


def test_staged_example_against_plain_arithmetic() -> None:
    x, y = 3.0, -4.0
    # the notes' hand-written backward pass for f = (x + sig(y)) / (sig(x) + (x + y)**2)
    sigy = 1.0 / (1 + math.exp(-y))
    num = x + sigy
    sigx = 1.0 / (1 + math.exp(-x))
    xpy = x + y
    xpysqr = xpy**2
    den = sigx + xpysqr
    invden = 1.0 / den
    f = num * invden
    dnum = invden
    dinvden = num
    dden = (-1.0 / (den**2)) * dinvden
    dsigx = dden
    dxpysqr = dden
    dxpy = (2 * xpy) * dxpysqr
    dx = dxpy + ((1 - sigx) * sigx) * dsigx + dnum
    dy = dxpy + ((1 - sigy) * sigy) * dnum
    r = evaluate(compile_source(STAGED), {"x": x, "y": y})
    assert r.value == pytest.approx(f, rel=1e-15)
    assert r.grads == pytest.approx({"x": dx, "y": dy}, rel=1e-12)


def finite_difference(source: str, inputs: dict[str, float], name: str, h: float = 1e-3) -> float:
    """Five-point central difference: truncation error O(h^4)."""
    circuit = compile_source(source)

    def f(delta: float) -> float:
        return evaluate(circuit, {**inputs, name: inputs[name] + delta}).value

    return (-f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h)


@settings(max_examples=150, deadline=None)
@given(expressions(smooth_only=True), input_values())
def test_random_expressions_against_finite_differences(source: str, inputs: dict[str, float]) -> None:
    circuit = compile_source(source)
    used = {k: v for k, v in inputs.items() if k in circuit.inputs}
    result = evaluate(circuit, used)
    for name in used:
        numeric = finite_difference(source, used, name)
        assert result.grads[name] == pytest.approx(numeric, rel=1e-6, abs=1e-6), (source, used, name)


def test_unused_input_gets_zero_gradient() -> None:
    circuit = compile_source("q = x * y; f = q + 1", output="q")
    assert evaluate(circuit, {"x": 2, "y": 3}).grads == {"x": 3.0, "y": 2.0}
    circuit = compile_source("a = x + 1; b = y * 2; f = a", output="f")
    assert evaluate(circuit, {"x": 2, "y": 3}).grads == {"x": 1.0, "y": 0.0}


@given(st.sampled_from(["log(x)", "1/x", "x/(y-y)", "exp(exp(exp(x)))"]))
def test_domain_errors_name_the_gate(source: str) -> None:
    with pytest.raises(ReferenceDomainError, match=r"undefined|finite|overflows"):
        evaluate(
            compile_source(source),
            {"x": 0.0, "y": 1.0} if "y" in source else {"x": 0.0 if "exp" not in source else 10.0},
        )


def test_inputs_are_checked() -> None:
    circuit = compile_source("x * y")
    with pytest.raises(InputError, match=r"no value for input.*y"):
        evaluate(circuit, {"x": 1})
    with pytest.raises(InputError, match="not inputs of this circuit: w"):
        evaluate(circuit, {"x": 1, "y": 2, "w": 3})
    with pytest.raises(InputError, match=r"no value for input\(s\): y \(.*\); not inputs of this circuit: Y$"):
        evaluate(circuit, {"x": 1, "Y": 2})  # the real mistake is the name given
    with pytest.raises(InputError, match="finite"):
        evaluate(circuit, {"x": math.inf, "y": 2})
    unread = compile_source("q = x + y; f = q * z; exp(w)", output="f")  # w stays an input nothing reads
    with pytest.raises(InputError) as caught:
        evaluate(unread, {"x": 1, "y": 2, "z": 3})
    assert str(caught.value) == (
        "no value for input(s): w (give them as name=value); nothing reads w: any value will do, and its gradient is 0"
    )
    assert evaluate(unread, {"x": 1, "y": 2, "z": 3, "w": 0}).grads["w"] == 0
