"""Pictures of a trace: pure functions from a trace (and its circuit) to SVG or ShiViz text.

`viz.circuit` draws the CS231n figure, `viz.lamport` the space-time diagram, `viz.shiviz`
writes ShiViz's log format. The CLI (`gatemesh draw`, `gatemesh export`) and any later web view
call these same functions: there is one drawing of a circuit.
"""
