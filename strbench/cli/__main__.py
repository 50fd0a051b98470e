"""`python -m strbench.cli ...`: the command line (as `python -m strbench`)."""
import sys

from strbench.cli import main

sys.exit(main())
