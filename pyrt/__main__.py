"""`python -m pyrt ...` runs the command line (same as the `pyrt` script)."""
import sys

from .cli import main

sys.exit(main())
