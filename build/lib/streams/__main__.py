"""``python -m streams``: the same as the ``churnstream`` command."""

import sys

from streams.cli import main

sys.exit(main())
