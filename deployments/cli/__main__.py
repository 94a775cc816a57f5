"""`python -m deployments.cli` runs the `handoff` command line."""

from deployments.cli import main

main()
