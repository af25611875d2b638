"""`python -m resnets ...` (what torchrun launches: `torchrun --nproc_per_node 2 -m resnets train ...`)."""

import sys

from .cli import main

sys.exit(main())
