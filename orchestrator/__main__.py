"""`python -m orchestrator`: the `gatemesh` command, for when the console script is not on PATH."""

from orchestrator.cli import main

main()
