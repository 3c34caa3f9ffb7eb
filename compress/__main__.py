"""`python -m compress ...` runs the command line (search workers are started this way)."""

from compress.cli import main

main()
