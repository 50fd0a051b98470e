"""`python -m strbench ...` (and `torchrun --nproc_per_node=N -m strbench run X.yaml`): the command line."""
import sys

from strbench.cli import main

sys.exit(main())
