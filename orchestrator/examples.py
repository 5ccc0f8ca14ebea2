"""The worked examples of the CS231n notes "Backpropagation, intuitions", as gatemesh sources.

`gatemesh demo` runs them through the mesh; the tests check the mesh against the numbers
the notes print (and, for the staged example, against plain Python arithmetic).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    title: str
    source: str
    inputs: dict[str, float]
    lesson: str


STAGED = """
sigy = 1 / (1 + exp(-y))
num = x + sigy
sigx = 1 / (1 + exp(-x))
xpy = x + y
xpysqr = xpy ** 2
den = sigx + xpysqr
invden = 1 / den
f = num * invden
"""

EXAMPLES: list[Example] = [
    Example("Multiply gate", "x * y", {"x": 4, "y": -3}, "a mul gate swaps its inputs: df/dx = y, df/dy = x"),
    Example(
        "A tiny circuit",
        "q = x + y; f = q * z",
        {"x": -2, "y": 5, "z": -4},
        "the add gate hands its gradient to both inputs unchanged",
    ),
    Example("Max gate", "max(x, y)", {"x": 4, "y": 2}, "the max gate routes the whole gradient to the larger input"),
    Example(
        "Sigmoid neuron, gate by gate",
        "1 / (1 + exp(-(w0*x0 + w1*x1 + w2)))",
        {"w0": 2, "x0": -1, "w1": -3, "x1": -2, "w2": -3},
        "every gate multiplies the gradient it receives by its own local gradient",
    ),
    Example(
        "Sigmoid neuron, one sigmoid gate",
        "sigmoid(w0*x0 + w1*x1 + w2)",
        {"w0": 2, "x0": -1, "w1": -3, "x1": -2, "w2": -3},
        "a sigmoid gate's local gradient is (1 - s) * s: same answer, fewer messages",
    ),
    Example(
        "Staged computation",
        STAGED,
        {"x": 3, "y": -4},
        "each assignment is a gate; x and y fan out, and their gradients add up at the forks",
    ),
    Example("Gradients add at forks", "(x + x) + (x + x)", {"x": 1}, "x feeds four edges: df/dx = 4"),
    Example("Fan-out into one gate", "x * x", {"x": 3}, "both ports of one mul read x: df/dx = 2x = 6"),
]
