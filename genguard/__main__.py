"""`python -m genguard ...` is the `genguard` command."""

from genguard.pipeline.cli import main

main()
