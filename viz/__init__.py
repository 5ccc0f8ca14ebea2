"""Pictures of a trace: functions from a trace (and its circuit) to SVG or ShiViz text.

`viz.circuit` draws the CS231n figure (its layout is Graphviz's `dot`, run as a program),
`viz.lamport` the space-time diagram, `viz.shiviz` writes ShiViz's log format. The CLI
(`gatemesh draw`, `gatemesh export`) and the web page (web/render.py) call these same
functions: there is one drawing of a circuit.
"""
