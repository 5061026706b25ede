"""``python -m hybridcl`` (and ``accelerate launch -m hybridcl``) runs the command line."""

import sys

from hybridcl.cli import main

sys.exit(main())
