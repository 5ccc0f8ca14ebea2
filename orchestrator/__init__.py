"""The orchestrator: compiles expressions into circuits, deploys gates, runs passes."""
