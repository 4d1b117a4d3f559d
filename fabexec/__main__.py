"""``python -m fabexec``: the same as the ``fabexec`` command."""

import sys

from .cli import main

sys.exit(main())
