"""``python -m archangel``: the same as the ``archangel`` command."""

import sys

from .cli import main

sys.exit(main())
