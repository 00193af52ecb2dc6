"""`python -m pyrt.quantize IN OUT --type T`."""
import sys

from . import main

sys.exit(main())
